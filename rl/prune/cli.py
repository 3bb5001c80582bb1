"""`rl prune`: likelihood-preserving pruning of reasoning chains (argument parsing and the run).

Order of work: parse keep ratios, check the output directory and the model argument, read and check
every row, tokenise and check each fits the model's context (all before weights load); then prune
each chain to empty (the deletion order ranks every token), rescore the kept chain at each keep ratio
exactly, categorise tokens, and write everything through rl/runtime/outputs.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, fields

from rl.errors import UserError
from rl.runtime.values import FINITE, POSITIVE, POSITIVE_INT, Number
from rl.prune.categories import categorise_tokens
from rl.prune.chains import check_fits, read_chains
from rl.prune.report import category_stats, plot_curves, sft_name, survival_table, write_sft
from rl.runtime.models import check_model_arg, check_not_adapter
from rl.runtime.outputs import check_output_dir, replace_dir, written_files
from rl.signal.scoring import text_prefix

COMMAND = "rl prune"
EXAMPLES = """examples:
  rl prune --data builtin:champ --model builtin:smollm2-135m-instruct --keep 0.3,0.5,0.7 -o runs/prune \\
      --mode approx --limit 20
  rl prune --data chains.jsonl --model runs/policy --keep 0.5 -o runs/prune-exact     # exact greedy
  rl prune --data problems.jsonl --model runs/policy --sample 8 --reward math -o runs/prune-own
      # the policy's own correct chains: 8 samples per question, kept when the math reward is 1

writes OUT/sft/keep-R.jsonl (TRL prompt/completion rows per keep ratio), OUT/steps.jsonl (per chain:
tokens, deletion order, ranks, categories, score curve), OUT/summary.json (settings, approximations,
answer log-likelihood per keep ratio, category statistics), likelihood_curve.png and survival.png;
with --sample also OUT/samples.jsonl (every drawn completion, its reward and whether it was pruned).
"""


def _keeps(text: str) -> list[float]:
    """Keep ratios: numbers in [0, 1], each with its own SFT file name (two decimals)."""
    shape = f"expected comma-separated ratios like 0.3,0.5,0.7, got {text!r}"
    try:
        keeps = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(shape) from None
    if not keeps:
        raise argparse.ArgumentTypeError(shape)
    if any(not 0 <= k <= 1 for k in keeps):  # NaN fails this too
        raise argparse.ArgumentTypeError(f"keep ratios must be finite numbers in [0, 1], got {text!r}")
    names: dict[str, float] = {}
    for k in keeps:
        if sft_name(k) in names:
            raise argparse.ArgumentTypeError(f"{names[sft_name(k)]:g} and {k:g} would both be written to "
                                             f"{sft_name(k)}; give ratios that differ at two decimals")
        names[sft_name(k)] = k
    return keeps


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prune", help="prune reasoning chains by answer likelihood; SFT data and token-function statistics",
        description="Greedy likelihood-preserving deletion of reasoning tokens (arXiv 2601.03066): delete, one "
        "token at a time, the chain token whose removal costs the least log p(answer | question, chain).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="JSONL rows with question/reasoning/answer fields, or builtin:champ")
    p.add_argument("--model", required=True, help="pruner model: checkpoint dir, hub id or builtin: name")
    p.add_argument("--keep", type=_keeps, default=[0.3, 0.5, 0.7], help="keep ratios (default 0.3,0.5,0.7)")
    p.add_argument("-o", "--output-dir", required=True, help="new directory for the outputs")
    p.add_argument("--mode", choices=["exact", "approx"], default="exact",
                   help="exact: score every token at every step (the paper's greedy); approx: pre-filter "
                   "candidates by surprisal and delete several per step (labelled in the outputs)")
    p.add_argument("--objective", choices=["answer", "joint"], default="answer",
                   help="answer: log p(answer | question, chain); joint: log p(chain, answer | question)")
    p.add_argument("--candidates", type=POSITIVE_INT, default=16, help="approx: tokens scored per step (lowest surprisal)")
    p.add_argument("--per-step", type=Number(float, 0, 1, low_open=True), default=0.1,
                   help="approx: fraction of the remaining chain deleted per step (at least one token)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16, help="candidates per batched forward")
    p.add_argument("--limit", type=POSITIVE_INT, default=None,
                   help="prune only the first N rows (after --max-chain-tokens); with --sample, the first N questions")
    p.add_argument("--max-chain-tokens", type=POSITIVE_INT, default=None,
                   help="skip rows whose chain has more tokens than this (counted and reported); default: none")
    for role in ("question", "reasoning", "answer"):
        p.add_argument(f"--{role}-field", default=role, help=f"JSONL field holding the {role} (default {role})")
    s = p.add_argument_group("the policy's own chains (instead of the rows' reasoning)")
    s.add_argument("--sample", type=POSITIVE_INT, default=None, metavar="N",
                   help="draw N completions per question from --policy in the pruner's frame ('Question: Q / "
                   "Reasoning:' ... 'Answer: A'), score them with --reward, and prune the correct ones")
    s.add_argument("--reward", default=None, help="with --sample: a registered reward (e.g. math) or a dotted path; "
                   "it sees the row's fields as columns and its answer as `solution`")
    s.add_argument("--policy", default=None, help="with --sample: the model that writes the chains (default: --model)")
    s.add_argument("--min-reward", type=FINITE, default=1.0, help="with --sample: reward that counts as correct")
    s.add_argument("--per-question", type=POSITIVE_INT, default=1,
                   help="with --sample: distinct correct chains kept per question")
    s.add_argument("--max-new-tokens", type=POSITIVE_INT, default=256, help="with --sample: completion length cap (tokens)")
    s.add_argument("--temperature", type=POSITIVE, default=1.0, help="with --sample: sampling temperature (> 0)")
    s.add_argument("--seed", type=int, default=0, help="with --sample: sampling seed")
    s.add_argument("--few-shot", default=None, metavar="FILE",
                   help="with --sample: JSONL rows (same fields) shown as worked examples before each question, "
                   "so that a small policy writes the 'Answer:' line; the pruner scores chains without them")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output directory not written by rl prune (never one that holds an input)")
    p.set_defaults(func=run)


@dataclass
class PruneJob:
    """One `rl prune` run: one field per flag, read once from argparse's namespace (`from_args`), so
    the pipeline's functions take named settings rather than the namespace."""

    data: str
    model: str
    output_dir: str
    keep: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])
    mode: str = "exact"
    objective: str = "answer"
    candidates: int = 16
    per_step: float = 0.1
    batch_size: int = 16
    limit: int | None = None
    max_chain_tokens: int | None = None
    question_field: str = "question"
    reasoning_field: str = "reasoning"
    answer_field: str = "answer"
    sample: int | None = None  # --sample N: the policy's own chains
    reward: str | None = None
    policy: str | None = None
    min_reward: float = 1.0
    per_question: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0
    seed: int = 0
    few_shot: str | None = None
    overwrite: bool = False

    @classmethod
    def from_args(cls, args) -> "PruneJob":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    @property
    def row_fields(self) -> tuple[str, str, str]:
        """The JSONL fields holding question, reasoning and answer."""
        return self.question_field, self.reasoning_field, self.answer_field


def run(args) -> int:
    """`rl prune` from its parsed flags."""
    return prune_command(PruneJob.from_args(args))


def prune_command(job: PruneJob) -> int:
    """The run (see the module doc): check everything, sample when asked, prune, write, print."""
    from rl.prune.pruner import PruneSettings

    try:
        settings = PruneSettings(mode=job.mode, objective=job.objective, batch_size=job.batch_size,
                                 candidates=job.candidates, per_step=job.per_step)
    except ValueError as exc:
        raise UserError(f"--batch-size/--candidates/--per-step: {exc}") from None
    if job.limit is not None and job.limit < 1:
        raise UserError(f"--limit: must be >= 1, got {job.limit}")
    sampling = _sample_settings(job)
    inputs = {"--data": job.data, "--model": job.model, "--policy": job.policy, "--few-shot": job.few_shot}

    def check_out():
        return check_output_dir(job.output_dir, "--output-dir", COMMAND, overwrite=job.overwrite, inputs=inputs)

    out = check_out()
    model_path = check_model_arg(job.model, "--model")
    check_not_adapter(model_path, "--model")  # the pruner loads full weights (as rl data rpt's proxy)
    policy_path = model_path
    if sampling and job.policy:
        policy_path = check_model_arg(job.policy, "--policy")
        check_not_adapter(policy_path, "--policy")
    tok, max_len = _tokenizer(model_path, job.model)
    if sampling:
        questions, reward, policy_tok = _check_sampling(job, sampling, policy_path, model_path, tok, max_len)
    else:
        limit = None if job.max_chain_tokens else job.limit  # --limit counts rows that pass the length cap
        rows = _encode_rows(job, read_chains(job.data, job.row_fields, limit), tok, max_len, job.limit)
    import torch
    from transformers import AutoModelForCausalLM

    def load(path):
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    t0 = time.monotonic()
    source, records, model = {"kind": "rows", "data": job.data}, None, None
    if sampling:
        # a separate policy is loaded, used and freed before the pruner loads (one model in memory at a time)
        model = load(model_path) if policy_path == model_path else None
        policy = model or load(policy_path)
        rows, source, records = _sample(job, sampling, questions, reward, policy, policy_tok, tok, max_len)
        del policy
    model = model or load(model_path)
    chains, sft = _prune_all(model, tok, rows, settings, job.keep)
    summary = _summary(job, settings, chains, sft, time.monotonic() - t0)
    summary["source"] = source
    with replace_dir(out, COMMAND, recheck=check_out) as tmp:
        _write(tmp, chains, sft, summary, job.keep, records)
    if sampling:
        print(f"policy samples: {source['correct']}/{source['drawn']} correct ({source['pass_rate']:.1%}) over "
              f"{source['questions']} questions; {len(chains)} chains pruned")
    print(summary["table"])
    for k, c in summary["answer_loglik"].items():
        print(f"keep {float(k):.2f}: mean answer log-likelihood {c['mean']:.3f} over {c['chains']} chains")
    for line in summary["approximations"]:
        print(line)
    for path in written_files(out):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _sample_settings(job: PruneJob):
    """SampleSettings when --sample is given (checked with the flags that go with it), else None."""
    from rl.prune.samples import SampleSettings

    flags = [f for f, given in (("--reward", job.reward), ("--policy", job.policy), ("--few-shot", job.few_shot))
             if given]
    if job.sample is None:
        if flags:
            raise UserError(f"{flags[0]}: only used with --sample N (the policy writes the chains)")
        return None
    if not job.reward:
        raise UserError("--sample: needs --reward NAME to tell correct samples from wrong ones (e.g. --reward math)")
    try:
        return SampleSettings(samples=job.sample, max_new_tokens=job.max_new_tokens, temperature=job.temperature,
                              min_reward=job.min_reward, per_question=job.per_question, seed=job.seed)
    except ValueError as exc:
        raise UserError(f"--sample/--max-new-tokens/--per-question/--temperature: {exc}") from None


def _tokenizer(model_path, name):
    """The pruner's fast tokenizer and context length (tokenizer and config only, no weights)."""
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    if not getattr(tok, "is_fast", False):
        raise UserError(f"--model {name}: a fast tokenizer (character offsets) is needed to categorise tokens")
    return tok, getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)


def _check_sampling(job: PruneJob, sampling, policy_path, model_path, tok, max_len):
    """Questions, reward and the policy's tokenizer, all checked before any weights load."""
    from transformers import AutoConfig, AutoTokenizer

    from rewards import get_reward_func
    from rl.prune.pruner import PROMPT_TEMPLATE
    from rl.prune.samples import check_reward_columns

    questions = read_chains(job.data, job.row_fields, job.limit, need_reasoning=False)
    if job.few_shot:
        from rl.prune.samples import few_shot_prefix

        if job.few_shot.strip().lower().startswith("builtin:"):
            raise UserError(f"--few-shot {job.few_shot}: give a JSONL file of worked examples")
        sampling.prefix = few_shot_prefix(read_chains(job.few_shot, job.row_fields, flag="--few-shot"))
    try:
        reward = get_reward_func(job.reward)
    except UserError as exc:  # the registry speaks of the recipe field; here it is the flag
        message = str(exc).removeprefix("reward_funcs: ")
        raise UserError(f"--reward {job.reward}: {message}") from None
    check_reward_columns(reward, questions, f"--data {job.data}")
    policy_tok = tok if policy_path == model_path else AutoTokenizer.from_pretrained(policy_path)
    policy_len = getattr(AutoConfig.from_pretrained(policy_path), "max_position_embeddings", None)
    for who, t, limit, prefix in (("--policy", policy_tok, policy_len, sampling.prefix), ("--model", tok, max_len, "")):
        for q in questions:
            prompt = prefix + PROMPT_TEMPLATE.format(question=q.question.strip())
            n = len(text_prefix(t)) + len(t(prompt, add_special_tokens=False)["input_ids"])  # BOS counts
            if limit and n + job.max_new_tokens > limit:
                raise UserError(f"row {q.id}: its prompt ({n} tokens) + --max-new-tokens {job.max_new_tokens} is "
                                f"longer than the {who} context of {limit}; lower --max-new-tokens")
    return questions, reward, policy_tok


def _sample(job: PruneJob, sampling, questions, reward, policy, policy_tok, tok, max_len):
    """Draw, score and keep the policy's correct chains; encoded rows, source summary, sample records."""
    from rewards.registry import reward_name
    from rl.prune.samples import sample_chains, source_summary

    log = (lambda line: print(line, file=sys.stderr, flush=True))
    chains, records = sample_chains(policy, policy_tok, questions, reward, sampling, log=log)
    source = source_summary(records, chains, len(questions), sampling, job.policy or job.model, reward_name(reward))
    if not chains:
        raise UserError(f"--sample {job.sample}: none of {source['drawn']} completions over {len(questions)} "
                        f"questions was correct ({source['with_answer_line']} wrote an 'Answer:' line); nothing to "
                        "prune: draw more (--sample), raise --max-new-tokens or use a stronger --policy")
    rows = _encode_rows(job, chains, tok, max_len, None, skip_long=True)
    return rows, source, records


def _encode_rows(job: PruneJob, chains, tok, max_len, limit, skip_long=False):
    """(chain, encoded) pairs, checked against the context; rows over --max-chain-tokens skipped
    (and, for the policy's own chains, `skip_long`, rows longer than the pruner's context)."""
    from rl.prune.pruner import encode

    row_fields = job.row_fields
    rows, skipped = [], 0
    for ch in chains:
        if limit is not None and len(rows) >= limit:
            break
        enc = encode(tok, ch.question, ch.reasoning, ch.answer)
        too_long = bool(max_len) and enc.total_len > max_len
        over_cap = job.max_chain_tokens is not None and len(enc.chain_ids) > job.max_chain_tokens
        if over_cap or (skip_long and too_long):
            skipped += 1
            continue
        if not enc.chain_ids:
            raise UserError(f"row {ch.id}: field {row_fields[1]!r} has no tokens; a non-empty chain is needed")
        if not enc.answer_ids:
            raise UserError(f"row {ch.id}: field {row_fields[2]!r} has no tokens; an answer is needed")
        check_fits(enc.total_len, max_len, ch.id, len(enc.chain_ids))
        rows.append((ch, enc))
    if not rows and skip_long:
        raise UserError(f"--sample: every correct chain is longer than --max-chain-tokens {job.max_chain_tokens} "
                        "or the pruner's context; raise the cap or lower --max-new-tokens")
    if not rows:
        raise UserError(f"--max-chain-tokens {job.max_chain_tokens}: every row's chain is longer; raise it")
    if skipped:
        print(f"[rl prune] skipped {skipped} rows with more than {job.max_chain_tokens} chain tokens "
              "(or longer than the pruner's context)", file=sys.stderr)
    return rows


def _prune_all(model, tok, rows, settings, keeps):
    from rl.prune.pruner import PROMPT_TEMPLATE, SEP, chain_pieces, prune, pruned_text, score_kept

    chains, sft = [], {k: [] for k in keeps}
    for i, (ch, enc) in enumerate(rows, 1):
        t = time.monotonic()
        result = prune(model, enc, settings)
        cats = categorise_tokens(enc.chain_text, enc.chain_offsets)
        kept_scores = {}
        for k in keeps:
            kept = result.kept(k)
            kept_scores[str(k)] = score_kept(model, enc, kept, "answer")  # exact, whatever the mode
            sft[k].append({"prompt": PROMPT_TEMPLATE.format(question=ch.question.strip()),
                           "completion": f"{pruned_text(enc, kept, tok)}{SEP} {ch.answer.strip()}"})
        chains.append({"id": ch.id, "n": result.n, "tokens": chain_pieces(enc),
                       "order": result.order, "ranks": result.ranks(), "categories": cats,
                       "curve": result.curve, "answer_loglik": kept_scores,
                       "full_answer_loglik": result.curve[0][1] if settings.objective == "answer" else
                       score_kept(model, enc, list(range(result.n)), "answer"),
                       "candidates_scored": result.candidates_scored})
        print(f"[rl prune] {i}/{len(rows)} {ch.id}: {result.n} tokens, {result.candidates_scored} candidates, "
              f"{time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)
    return chains, sft


def _summary(job: PruneJob, settings, chains, sft, seconds) -> dict:
    from dataclasses import asdict

    stats = category_stats(chains, job.keep)
    curve = {"1.0": {"mean": sum(c["full_answer_loglik"] for c in chains) / len(chains), "chains": len(chains)}}
    for k in job.keep:
        vals = [c["answer_loglik"][str(k)] for c in chains]
        curve[str(k)] = {"mean": sum(vals) / len(vals), "chains": len(vals)}
    return {"written_by": COMMAND, "data": job.data, "model": job.model, "settings": asdict(settings),
            "approximations": settings.approximations() or ["none: exact greedy deletion"],
            "keep": job.keep, "chains": len(chains), "tokens": sum(c["n"] for c in chains),
            "seconds": round(seconds, 1), "answer_loglik": curve, "categories": stats,
            "table": survival_table(stats, job.keep)}


def _write(tmp, chains, sft, summary, keeps, records=None) -> None:
    if records is not None:
        with (tmp / "samples.jsonl").open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    for k in keeps:
        write_sft(tmp, k, sft[k])
    with (tmp / "steps.jsonl").open("w", encoding="utf-8") as fh:
        for ch in chains:
            fh.write(json.dumps(ch, ensure_ascii=False) + "\n")
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    plot_curves(tmp, summary["answer_loglik"], summary["categories"])
