"""`rl eval math`: a model's avg@k and pass@k on a math problem set, as the RLVR papers report them.

Why: "Beyond the 80/20 Rule" (arXiv 2506.01939) and DAPO report avg@16 at temperature 1 on
AIME/AMC; a run trained with recipes/forking/*-dapo.yaml holds no eval split, so this is where it is
measured. For each problem the model writes k completions (rl/signal/sampling.py, the sampler every
door shares: batched, one prefill per prompt, a forked RNG seeded with `seed`), each scored by the
project's math reward (rewards/math.py: the last \\boxed{} or `Answer:` line, math-verify against
the gold answer). Per problem, with c of the k correct:

* avg@k = c / k (the mean accuracy of a sample; also the unbiased pass@1);
* pass@j = 1 - C(k - c, j) / C(k, j) for each requested j <= k, the unbiased estimator of Chen et
  al. 2021 (`rl.eval.next_token.pass_at_k`), not the plug-in 1 - (1 - c/k)^j;
* the completion lengths and the share cut at `max_new_tokens` (truncated answers score what they
  hold, usually 0, as in training).

Each metric is averaged over problems with a 95% percentile-bootstrap interval over problems (the
problem is the unit: its k samples are not independent). `--compare` runs a second model on the same
problems with the same settings and reports model - other per metric with the paired bootstrap of
rl/eval/stats.py over problems.

Data: `builtin:champ` (270 CHAMP competition problems, offline; a held-out set for models trained on
other data), or a .jsonl / .parquet file or `save_to_disk` dir with a `solution` column (the gold
answer, bare or with a final \\boxed{}) and either a `prompt` column (text or chat messages, used as
given) or a `problem` column (put into DAPO's instruction as one user message, as the math recipes
train). Problems whose gold answer math-verify cannot parse are left out before any sampling and
counted (`skipped`). All 270 CHAMP answers parse, but some are prose (`C(10, 5), or equivalently 252`
parses as a set of two expressions) that a right answer may not verify against: on CHAMP avg@k is a
lower bound, meant for comparing models (--compare), not for comparing with published numbers.
Measured: builtin:smollm2-135m-instruct, first 20 CHAMP problems, k = 4 at T = 1, 192 new tokens:
avg@4 0.00% [0.00, 0.00], pass@4 0.00%, 48.75% of completions truncated (610 s on a loaded 2-core CPU).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rl.errors import UserError
from rl.eval.next_token import load_model, pass_at_k
from rl.eval.stats import paired_bootstrap
from rl.signal.sampling import SamplingSettings, prompt_ids, sample
from rl.data.loading import read_dataset
from rl.runtime.atomic_io import atomic_write_text
from rl.runtime.models import check_model_arg
from rl.runtime.outputs import check_output_file
from rl.runtime.values import FRACTION, NON_NEGATIVE, POSITIVE_INT

__all__ = ["MathEvalSettings", "Problem", "compare_math", "evaluate_math", "format_math", "load_problems", "register",
           "run_math"]

COMMAND = "rl eval math"
PROMPT_FIELDS = ("prompt", "problem")


@dataclass(frozen=True)
class MathEvalSettings:
    """How a model is sampled and scored (k = `samples`); checked on construction (UserError naming the flag)."""

    samples: int = 16  # k: completions per problem (the 80/20 paper: 16)
    temperature: float = 1.0  # the 80/20 paper: 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    pass_k: tuple[int, ...] = ()  # j of each pass@j reported (default: k)
    batch_size: int = 8  # problems per generate call
    limit: int | None = None  # only the first N problems
    seed: int = 0
    device: str | None = None
    prompt_field: str | None = None  # None: `prompt`, else `problem`
    solution_field: str = "solution"

    def __post_init__(self):
        for flag, value in (("--samples", self.samples), ("--max-new-tokens", self.max_new_tokens),
                            ("--batch-size", self.batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{flag}: must be a whole number >= 1, got {value!r}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit: must be at least 1, got {self.limit}")
        if not self.temperature >= 0 or (self.temperature == 0 and self.samples > 1):
            raise UserError(f"--temperature: must be > 0 to draw --samples {self.samples} completions "
                            f"(0 = one greedy sample), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p: must be in (0, 1], got {self.top_p}")
        bad = [j for j in self.pass_k if not 1 <= j <= self.samples]
        if bad:
            raise UserError(f"--pass-k: each j of pass@j must be between 1 and --samples ({self.samples}), got {bad[0]}")

    @property
    def ks(self) -> tuple[int, ...]:
        """The j of every pass@j reported, ascending."""
        return tuple(sorted(set(self.pass_k or (self.samples,))))


@dataclass
class Problem:
    """One problem: an id, the prompt as the model reads it (text or chat messages), the gold answer."""

    id: str
    prompt: Any
    solution: str


# ----------------------------------------------------------------------------------------------
# Problems


def _champ() -> list[Problem]:
    try:
        import champ_dataset
    except ImportError as exc:
        raise UserError("--data builtin:champ needs the champ-dataset package: pip install champ-dataset==1.0.0") from exc
    from rewards.math import dapo_math_prompt

    return [Problem(f"champ/{pid}", [{"role": "user", "content": dapo_math_prompt(p.text.strip())}], p.answer.strip())
            for pid, p in champ_dataset.load("v0").problems.items() if (p.answer or "").strip()]


def _file_rows(spec: str) -> list[dict]:
    from datasets import DatasetDict

    if not Path(spec).expanduser().exists():
        raise UserError(f"--data {spec}: no such file or directory; give a .jsonl/.parquet file, a save_to_disk dir "
                        "or builtin:champ")
    data = read_dataset(str(Path(spec).expanduser()), field="--data")
    if isinstance(data, DatasetDict):
        data = data[next((s for s in ("test", "validation", "eval", "train") if s in data), list(data)[0])]
    return data.to_list()


def _prompt_of(value, field: str, where: str):
    from rewards.math import dapo_math_prompt

    if field == "problem":
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{where}: `problem` must be non-empty text")
        return [{"role": "user", "content": dapo_math_prompt(value.strip())}]
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                 for m in value):
        return value
    raise UserError(f"{where}: `{field}` must be non-empty text or a list of chat messages with `content`")


def load_problems(spec: str, settings: MathEvalSettings) -> tuple[list[Problem], str]:
    """(problems, description) of `--data`, the first `settings.limit`; one-line UserError naming the
    file, column or row on bad input."""
    if spec.strip().lower() == "builtin:champ":
        problems = _champ()
    elif spec.strip().lower().startswith("builtin:"):
        raise UserError(f"--data {spec}: unknown builtin; the builtin problem set is builtin:champ")
    else:
        rows = _file_rows(spec)
        columns = sorted(rows[0]) if rows else []
        sol = settings.solution_field
        if sol not in columns:
            raise UserError(f"--data {spec}: no `{sol}` column (the gold answer of each problem); the data has "
                            f"{columns}" + ("" if sol != "solution" else "; name another with --solution-field"))
        field = settings.prompt_field or next((f for f in PROMPT_FIELDS if f in columns), None)
        if field is None or field not in columns:
            raise UserError(f"--data {spec}: no `{field or 'prompt'}` column" + ("" if field else " or `problem` column")
                            + f" (what the model is asked); the data has {columns}")
        problems = []
        for i, row in enumerate(rows):
            where = f"--data {spec}: row {i}"
            gold = row.get(sol)
            if gold is None or not str(gold).strip():
                raise UserError(f"{where}: `{sol}` is empty; every problem needs its gold answer")
            problems.append(Problem(str(row.get("id", i)), _prompt_of(row.get(field), field, where), str(gold)))
    if settings.limit is not None:
        problems = problems[: settings.limit]
    if not problems:
        raise UserError(f"--data {spec}: no problems to evaluate")
    return problems, spec


def gradable(problems: list[Problem]) -> tuple[list[Problem], list[str]]:
    """(problems whose gold answer math-verify parses, ids of the others): math_reward scores a row
    with an unparseable gold answer None, so such a problem cannot be graded and is left out."""
    from rewards.math import math_reward

    quiet = logging.getLogger("rewards.math")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # one "no parseable gold answer" warning: the count is reported instead
    try:
        scores = math_reward([""] * len(problems), solution=[p.solution for p in problems])
    finally:
        quiet.setLevel(level)
    return ([p for p, s in zip(problems, scores) if s is not None],
            [p.id for p, s in zip(problems, scores) if s is None])


# ----------------------------------------------------------------------------------------------
# Sampling and scoring


def _generate(model, tokenizer, problems: list[Problem], settings: MathEvalSettings, progress) -> list[list]:
    """k `rl.signal.sampling.Sample`s per problem, problem-major."""
    sampling = SamplingSettings(samples=settings.samples, max_new_tokens=settings.max_new_tokens,
                                temperature=settings.temperature, top_p=settings.top_p, top_k=0,
                                batch_size=settings.batch_size, seed=settings.seed)
    drawn = sample(model, tokenizer, [prompt_ids(tokenizer, p.prompt) for p in problems], sampling, progress=progress)
    per = [[] for _ in problems]
    for s in drawn:
        per[s.prompt].append(s)
    return per


def _score_problem(problem: Problem, samples: list, settings: MathEvalSettings) -> dict:
    from rewards.math import extract_math_answer, math_reward

    rewards = math_reward([s.text for s in samples], solution=[problem.solution] * len(samples))
    correct = sum(1 for r in rewards if r is not None and r >= 1.0)
    k = len(samples)
    lengths = [len(s.ids) for s in samples]
    return {"id": problem.id, "solution": problem.solution, "correct": correct, "samples": k,
            "avg": correct / k, **{f"pass@{j}": pass_at_k(k, correct, j) for j in settings.ks},
            "mean_length": sum(lengths) / k,
            "truncated": sum(1 for s in samples if s.stop is None and len(s.ids) >= settings.max_new_tokens) / k,
            "answers": [extract_math_answer(s.text) for s in samples], "rewards": rewards}


def metric_names(settings: MathEvalSettings) -> list[str]:
    return ["avg"] + [f"pass@{j}" for j in settings.ks] + ["mean_length", "truncated"]


def mean_ci(values: list[float], seed: int = 0) -> dict:
    """Mean over problems with its 95% percentile-bootstrap interval (the one-sample bootstrap is the
    paired one of rl/eval/stats.py against zeros)."""
    d = paired_bootstrap([0.0] * len(values), values, seed=seed)
    return {"mean": d.after, "ci95": [d.low, d.high]}


def evaluate_math(model_path: str, data: str, settings: MathEvalSettings, *, problems: list[Problem] | None = None,
                  model=None, tokenizer=None, progress: bool = True) -> dict:
    """One model on a problem set: JSON-ready summary (avg@k, pass@j, lengths, each with a 95% CI over
    problems) and per-problem rows. `problems` (already loaded and graded) and `model`/`tokenizer`
    (already loaded) may be passed in."""
    from tqdm.auto import tqdm

    skipped: list[str] = []
    if problems is None:
        problems, _ = load_problems(data, settings)
        problems, skipped = gradable(problems)
    if not problems:
        raise UserError(f"--data {data}: no problem has a gold answer math-verify can parse ({len(skipped)} skipped, "
                        f"e.g. {skipped[:3]})")
    if model is None:
        model, tokenizer = load_model(model_path, settings.device)
    bar = tqdm(total=len(problems), desc=f"eval math k={settings.samples}", unit="problem", disable=not progress)
    started = time.perf_counter()
    try:
        drawn = _generate(model, tokenizer, problems, settings, bar.update)
    finally:
        bar.close()
    rows = [_score_problem(p, s, settings) for p, s in zip(problems, drawn)]
    seconds = time.perf_counter() - started
    return {"model": str(model_path), "data": str(data), "problems": len(rows), "skipped": skipped,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()},
            "metrics": {m: mean_ci([r[m] for r in rows], settings.seed) for m in metric_names(settings)},
            "seconds": seconds, "per_problem": rows}


def compare_math(result: dict, other: dict, settings: MathEvalSettings) -> dict:
    """result - other per metric over the same problems: the paired bootstrap of rl/eval/stats.py."""
    ours = {r["id"]: r for r in result["per_problem"]}
    theirs = {r["id"]: r for r in other["per_problem"]}
    ids = [i for i in ours if i in theirs]
    out = {}
    for m in metric_names(settings):
        d = paired_bootstrap([theirs[i][m] for i in ids], [ours[i][m] for i in ids], seed=settings.seed)
        out[m] = {"diff": d.diff, "ci95": [d.low, d.high], "excludes_zero": d.excludes_zero, "problems": d.units}
    return out


def format_math(result: dict, other: dict | None = None, diff: dict | None = None) -> str:
    """The table printed by `rl eval math`."""
    s = result["settings"]
    lines = [f"{result['data']}: {result['problems']} problems, k={s['samples']} samples at T={s['temperature']:g}, "
             f"max_new_tokens {s['max_new_tokens']}"
             + (f" ({len(result['skipped'])} skipped: gold answer does not parse)" if result["skipped"] else "")]

    def cell(entry, pct):
        scale = 100.0 if pct else 1.0
        lo, hi = (v * scale for v in entry["ci95"])
        return f"{entry['mean'] * scale:.2f} [{lo:.2f}, {hi:.2f}]" if pct else f"{entry['mean']:.1f} [{lo:.1f}, {hi:.1f}]"

    names = list(result["metrics"])
    header = f"{'metric':<14}{'model':>26}" + (f"{'compare':>26}{'model - compare':>28}" if other else "")
    lines += [f"model: {result['model']}" + (f"   compare: {other['model']}" if other else ""), header]
    for m in names:
        pct = m not in ("mean_length",)
        label = {"avg": f"avg@{s['samples']} %", "mean_length": "length (tok)", "truncated": "truncated %"}.get(m, m + " %")
        row = f"{label:<14}{cell(result['metrics'][m], pct):>26}"
        if other:
            d = diff[m]
            scale = 100.0 if pct else 1.0
            row += (f"{cell(other['metrics'][m], pct):>26}"
                    f"{d['diff'] * scale:+11.2f} [{d['ci95'][0] * scale:+.2f}, {d['ci95'][1] * scale:+.2f}]")
        lines.append(row)
    lines.append("95% intervals: bootstrap over problems" + (" (paired for the difference)" if other else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The command


EXAMPLES = """examples:
  rl eval math --model builtin:smollm2-135m-instruct --data builtin:champ --samples 4 --max-new-tokens 256
  rl eval math --model runs/forking-qwen3-8b-dapo --data aime24.jsonl --samples 16 --temperature 1.0 \\
      --max-new-tokens 20480 --compare Qwen/Qwen3-8B-Base --output aime24.json   # the 80/20 paper's avg@16

--data: builtin:champ, or .jsonl/.parquet/save_to_disk dir with `solution` and `prompt` (or `problem`) columns.
"""


def register(ev_sub) -> None:
    """`rl eval math`'s parser, under `rl eval` (rl/eval/cli.py)."""
    import argparse

    p = ev_sub.add_parser(
        "math", help="avg@k and pass@k on math problems, scored by the math reward",
        description="k samples per problem at a temperature, each scored by rewards/math.py (math-verify): avg@k "
        "and unbiased pass@k with 95% bootstrap intervals over problems; --compare adds paired differences.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint dir, LoRA adapter dir, hub id or builtin: name")
    p.add_argument("--data", required=True, help="builtin:champ, or .jsonl/.parquet/save_to_disk dir of problems")
    p.add_argument("--compare", default=None, metavar="OTHER_MODEL",
                   help="a second model on the same problems; differences model - other with paired CIs")
    p.add_argument("--samples", "-k", type=POSITIVE_INT, default=16, help="k: completions per problem (default 16)")
    p.add_argument("--temperature", type=NON_NEGATIVE, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=FRACTION, default=1.0, help="nucleus sampling (default 1.0: off)")
    p.add_argument("--max-new-tokens", type=POSITIVE_INT, default=1024, help="completion length (default 1024)")
    p.add_argument("--pass-k", default=None, metavar="J[,J...]", help="pass@j for these j <= k (default: k)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="problems per generate call")
    p.add_argument("--limit", type=POSITIVE_INT, default=None, help="only the first N problems")
    p.add_argument("--prompt-field", default=None, help="column the model is asked (default: prompt, else problem)")
    p.add_argument("--solution-field", default="solution", help="column of gold answers (default: solution)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--output", "-o", default=None,
                   help="write the results as JSON here (a new file, or a previous result of this command)")
    p.add_argument("--overwrite", action="store_true", help="let --output replace a file this command did not write")
    p.set_defaults(func=run_math)


def _pass_ks(text: str | None) -> tuple[int, ...]:
    if text is None:
        return ()
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--pass-k: expected whole numbers separated by commas like 1,4,16, got {text!r}") from None


def run_math(args) -> int:
    """Everything that can be wrong is checked before a model loads; then evaluate, print, write."""
    import json

    out = None
    if args.output:
        out = check_output_file(args.output, "--output", COMMAND, overwrite=args.overwrite,
                                inputs={"--data": args.data, "--model": args.model, "--compare": args.compare})
    settings = MathEvalSettings(samples=args.samples, temperature=args.temperature, top_p=args.top_p,
                                max_new_tokens=args.max_new_tokens, pass_k=_pass_ks(args.pass_k),
                                batch_size=args.batch_size, limit=args.limit, seed=args.seed, device=args.device,
                                prompt_field=args.prompt_field, solution_field=args.solution_field)
    check_model_arg(args.model, "--model")
    if args.compare:
        check_model_arg(args.compare, "--compare")
    problems, _ = load_problems(args.data, settings)
    problems, skipped = gradable(problems)
    result = evaluate_math(args.model, args.data, settings, problems=problems)
    result["skipped"] = skipped
    other = diff = None
    if args.compare:
        other = evaluate_math(args.compare, args.data, settings, problems=problems)
        other["skipped"] = skipped
        diff = compare_math(result, other, settings)
    print(format_math(result, other, diff))
    if out is not None:
        payload = {"version": 1, "written_by": COMMAND, "model": result, "compare": other, "difference": diff}
        check_output_file(args.output, "--output", COMMAND, overwrite=args.overwrite)  # changed meanwhile?
        atomic_write_text(out, json.dumps(payload, indent=2, ensure_ascii=False), make_parents=True)
        print(f"wrote {args.output}")
    return 0
