"""Evidence bench: RLP's information-gain reward vs the RPT completion format, same steps and seeds.

Not a test. On the builtin SmolLM2-135M-Instruct with LoRA and the CHAMP corpus, each seed trains
two arms from the same base model, for the same number of optimizer steps, through the real
`rl train` (a subprocess per run):

* `rpt`: recipes/rpt_smollm2_cpu.yaml (one-token guess, binary reward, the `make demo` job);
* `rlp`: recipes/rlp_smollm2_cpu.yaml (16-token thoughts after " <think>", reward = information
  gain of the true next token over the EMA teacher's no-think prediction, arXiv 2510.01265).

Both recipes keep their own tuned settings (learning rate, temperature, thought length): this
compares the two methods as shipped, at equal steps, not at equal FLOPs (an RLP step samples 16
tokens per completion and scores each thought; the wall time of each arm is printed).

Measured on held-out CHAMP documents (whole documents neither arm trained on; both recipes hold
out by the same document hash), with the RPT issue's evaluation (rl/eval/metrics.py): expected
accuracy of the true next token at temperature 0.8, greedy top-1 and NLL over every token, and
expected accuracy at the RPT arm's held-out high-entropy positions. Per seed: each arm vs the
base model and rlp - rpt, paired by document, 95% paired-bootstrap CIs (rl/eval/stats.py); over
seeds: the mean difference with a t-interval over seeds. Reward curves (each arm's batch reward
per step: RPT accuracy, RLP information gain in nats) go to rlp_vs_rpt.json and a PNG.

    .venv/bin/python -m bench.rlp_vs_rpt --quick   # 1 seed, 10 steps per arm: ~15 min on a quiet 2-core CPU
    .venv/bin/python -m bench.rlp_vs_rpt           # 3 seeds, 30 steps per arm: ~1.5 h
    .venv/bin/python -m bench.rlp_vs_rpt --smoke   # a tiny local model and corpus, 1 step per arm: seconds

`--smoke` passes the recipes a tiny local model and bench/smoke.py's 16 documents instead of SmolLM2
and CHAMP (bench/smoke.py `rpt_overrides`), 1 step per arm, into a temporary
`--out`; the same `rl train` runs, held-out split, measurements and report (numbers mean nothing).

Measured (2026-12-05, default sizing: 3 seeds x 30 steps per arm, one torch thread per run, a
machine shared with another bench; 14 held-out documents, 3,108 tokens, 56 RPT positions):
held-out expected accuracy vs base, per seed (paired bootstrap CIs over documents)
    rpt  +1.06 [+0.83, +1.40]   +0.66 [+0.37, +0.97]   +1.61 [+1.39, +1.86]
    rlp  +0.18 [+0.07, +0.28]   +0.54 [+0.45, +0.64]   -0.09 [-0.20, +0.04]
    rlp - rpt  -0.89 [-1.29, -0.60]   -0.12 [-0.45, +0.18]   -1.70 [-1.90, -1.49]
over seeds (t-interval): rpt +1.11 [-0.06, +2.28], rlp +0.21 [-0.59, +1.00], rlp - rpt -0.90
[-2.86, +1.06] pts; NLL and top-1 moved by less than their CIs in every arm. RLP's own batch reward
(information gain; each step's prompts differ, so it is noisy) rose in two seeds of three (least-
squares slope +0.083 and +0.052 nats/step, mean of the first 10 -> last 10 steps -5.92 -> -4.27 and
-5.77 -> -4.70) and stayed flat in one (+0.003/step): thoughts that hurt the next token less, which
did not carry over to plain next-token prediction at this scale. An RLP step took 1.7-2.1x an RPT step.

Those figures lead with expected accuracy, which a temperature change alone moves; they were taken
with the RPT recipe's earlier lr 3e-4, which bench/rpt_learning.py later showed only sharpens. The
bench now leads with greedy top-1 (temperature-fair); it does not fit calibrated temperatures (the
demo and bench/rpt_learning.py do), and it has not been rerun since.

The last line is
`rlp_vs_rpt: seeds=N steps=S heldout_top1_pts rpt=D [L, H] rlp=D [L, H] rlp_minus_rpt=D [L, H] | sharpening-inclusive
heldout_expected_pts rpt=D [L, H] rlp=D [L, H] rlp_minus_rpt=D [L, H]` (percentage points of held-out greedy
top-1, then of expected accuracy at T = 0.8; intervals over seeds, or the bootstrap CI for one seed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.demo_runs import ROOT, t_interval  # the benches' one t-interval over seeds

BUILTIN = "builtin:smollm2-135m-instruct"
RECIPES = {"rpt": ROOT / "recipes" / "rpt_smollm2_cpu.yaml", "rlp": ROOT / "recipes" / "rlp_smollm2_cpu.yaml"}
EVAL_TEMPERATURE = 0.8  # the RPT evaluation's sampling temperature (the demo's)


def train_arm(arm: str, seed: int, steps: int, run_dir: Path, data: Path | None, extra: list[str] = ()) -> dict:
    """One `rl train` run of `arm`'s recipe (plus `extra` recipe overrides) into run_dir; returns its log
    history and wall time."""
    if data is not None and not (run_dir / "rpt-data").exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(data, run_dir / "rpt-data")  # the same rows for every seed of this arm
    cmd = [sys.executable, "-m", "rl.cli", "train", "--config", str(RECIPES[arm]), "--max_steps", str(steps),
           "--seed", str(seed), "--output_dir", str(run_dir), "--run_name", f"bench-{arm}-seed{seed}",
           "--report_to", "none", "--save_steps", str(steps), "--signal_check", "off", *extra]
    log = run_dir.parent / f"{run_dir.name}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.call(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"{arm} seed {seed}: rl train exited with {code}; see {log}")
    state = run_dir / f"checkpoint-{steps}" / "trainer_state.json"
    history = json.loads(state.read_text())["log_history"] if state.is_file() else []
    steps_logged = [e for e in history if "reward" in e and "train_runtime" not in e]
    return {"seconds": time.time() - started, "log": str(log),
            "rewards": [e["reward"] for e in steps_logged],
            "info_gain": [e.get("rlp/info_gain") for e in steps_logged]}


def held_out(run_dirs: dict[str, Path], extra: list[str] = ()):
    """(held-out document texts, RPT held-out position rows): documents in neither arm's training split."""
    from datasets import load_from_disk

    from rl.data.corpus import read_corpus
    from rl.data.loading import split_by_document
    from rl.train.recipe import parse_recipe

    trained, evaluated, rpt_rows = set(), set(), []
    for arm, run_dir in run_dirs.items():
        args, _, _ = parse_recipe(["--config", str(RECIPES[arm]), *extra])
        train_rows, eval_rows = split_by_document(load_from_disk(str(run_dir / "rpt-data")), args.eval_fraction,
                                                  args.rpt_seed)
        trained |= set(train_rows["doc_id"])
        if arm == "rpt":
            script_args = args  # the corpus fields and context length of the RPT evaluation
        if eval_rows is not None:
            evaluated |= set(eval_rows["doc_id"])
            if arm == "rpt":
                rpt_rows = [dict(r) for r in eval_rows]
    keep = evaluated - trained
    documents = read_corpus(script_args.corpus, text_field=script_args.rpt_text_field,
                            id_field=script_args.rpt_id_field)
    texts = [d.text for d in documents if d.doc_id in keep]
    rows = [r for r in rpt_rows if r["doc_id"] in keep]
    if not texts:
        raise SystemExit("no held-out document is outside both arms' training splits")
    return texts, rows, script_args.rpt_max_context_tokens


def measure(name: str, texts: list[str], rows: list[dict], context: int) -> dict:
    from rl.eval.learning_report import position_values
    from rl.eval.metrics import document_metrics
    from rl.eval.next_token import load_model

    model, tokenizer = load_model(name, device="cpu")
    out = {"documents": document_metrics(model, tokenizer, texts, temperature=EVAL_TEMPERATURE),
           "positions": position_values(model, tokenizer, rows, EVAL_TEMPERATURE, context) if rows else []}
    del model
    return out


def compare(before: dict, after: dict, rows: list[dict], seed: int) -> dict:
    from rl.eval.learning_report import compare_documents, compare_positions

    out = {"tokens": {k: v.as_dict() for k, v in compare_documents(before["documents"], after["documents"],
                                                                   seed=seed).items()}}
    if rows:
        positions = compare_positions(rows, before["positions"], after["positions"], seed=seed).get("all", {})
        out["positions"] = {k: v.as_dict() for k, v in positions.items()}
    return out


def plot(curves: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, arm, label in ((axes[0], "rpt", "RPT batch reward (accuracy)"),
                           (axes[1], "rlp", "RLP batch reward (information gain, nats)")):
        for seed, values in curves[arm].items():
            ax.plot(range(1, len(values) + 1), values, label=f"seed {seed}")
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def fmt(d: dict, scale: float = 100.0) -> str:
    return f"{scale * d['diff']:+.2f} [{scale * d['ci95'][0]:+.2f}, {scale * d['ci95'][1]:+.2f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per arm")
    parser.add_argument("--quick", action="store_true", help="1 seed, 10 steps per arm")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny local model and corpus, 1 seed, 1 step per arm, a temporary --out: checks that the "
                             "bench runs (its numbers mean nothing)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-rlp-vs-rpt"))
    args = parser.parse_args(argv)
    seeds = [1] if args.quick or args.smoke else [int(s) for s in args.seeds.split(",")]
    steps = 10 if args.quick else 1 if args.smoke else args.steps
    base_model, extra = BUILTIN, []
    if args.smoke:
        from bench.smoke import rpt_overrides, tiny_corpus, tiny_model

        smoke_dir = tempfile.TemporaryDirectory(prefix="rlp-vs-rpt-smoke-")
        base_model = str(tiny_model(smoke_dir.name, chat_template=False))
        extra = rpt_overrides(base_model, tiny_corpus(smoke_dir.name))
        args.out = str(Path(smoke_dir.name) / "out")
    out = Path(args.out)
    if out.exists() and not (out / ".rlp_vs_rpt").is_file():
        raise SystemExit(f"--out {out} exists and was not made by this bench; choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / ".rlp_vs_rpt").write_text("made by bench/rlp_vs_rpt.py\n")
    for arm in RECIPES:  # a previous run's models would be measured as this run's
        for seed in seeds:
            if (out / arm / f"seed{seed}").exists():
                shutil.rmtree(out / arm / f"seed{seed}")

    results: dict = {"steps": steps, "seeds": seeds, "eval_temperature": EVAL_TEMPERATURE, "per_seed": {}}
    curves: dict = {arm: {} for arm in RECIPES}
    data: dict[str, Path | None] = {arm: None for arm in RECIPES}
    base = None
    for seed in seeds:
        runs = {}
        for arm in RECIPES:
            run_dir = out / arm / f"seed{seed}"
            runs[arm] = train_arm(arm, seed, steps, run_dir, data[arm], extra)
            data[arm] = data[arm] or run_dir / "rpt-data"
            curves[arm][seed] = runs[arm]["rewards"]
            first, last = runs[arm]["rewards"][:5], runs[arm]["rewards"][-5:]
            print(f"seed {seed} {arm}: {steps} steps in {runs[arm]['seconds']:.0f} s; batch reward, mean of the first "
                  f"{len(first)} {sum(first) / max(1, len(first)):+.3f}, of the last {len(last)} "
                  f"{sum(last) / max(1, len(last)):+.3f}", flush=True)
        texts, rows, context = held_out({arm: out / arm / f"seed{seed}" for arm in RECIPES}, extra)
        if base is None:  # the base model and the held-out set are the same for every seed
            base = measure(base_model, texts, rows, context)
        trained = {arm: measure(str(out / arm / f"seed{seed}"), texts, rows, context) for arm in RECIPES}
        seed_result = {"heldout_documents": len(texts), "heldout_positions": len(rows),
                       "wall_seconds": {arm: round(runs[arm]["seconds"], 1) for arm in RECIPES},
                       "rpt_vs_base": compare(base, trained["rpt"], rows, seed),
                       "rlp_vs_base": compare(base, trained["rlp"], rows, seed),
                       "rlp_minus_rpt": compare(trained["rpt"], trained["rlp"], rows, seed)}
        results["per_seed"][seed] = seed_result
        for key in ("rpt_vs_base", "rlp_vs_base", "rlp_minus_rpt"):
            tok = seed_result[key]["tokens"]
            pos = seed_result[key].get("positions", {}).get("expected")
            print(f"seed {seed} {key:>13}: held-out expected acc {fmt(tok['expected'])} pts, top-1 "
                  f"{fmt(tok['top1'])} pts, NLL {fmt(tok['nll'], 1.0)} nats"
                  + (f"; RPT positions expected acc {fmt(pos)} pts" if pos else ""), flush=True)
    results["curves"] = curves
    (out / "rlp_vs_rpt.json").write_text(json.dumps(results, indent=1))
    figure = plot(curves, out / "rlp_vs_rpt_rewards.png")

    print(f"\nheld-out: {results['per_seed'][seeds[0]]['heldout_documents']} documents, "
          f"{results['per_seed'][seeds[0]]['heldout_positions']} RPT positions; {steps} steps per arm; "
          f"curves {figure or 'not plotted (no matplotlib)'}; JSON {out / 'rlp_vs_rpt.json'}")
    # greedy top-1 first: a pure change of temperature cannot move it; expected accuracy at T = 0.8 it can
    summary: dict[str, dict[str, tuple]] = {"top1": {}, "expected": {}}
    for metric, label in (("top1", "greedy top-1 (temperature-fair)"),
                          ("expected", "expected accuracy (sharpening-inclusive)")):
        for key in ("rpt_vs_base", "rlp_vs_base", "rlp_minus_rpt"):
            diffs = [results["per_seed"][s][key]["tokens"][metric] for s in seeds]
            if len(seeds) == 1:
                d = diffs[0]
                summary[metric][key] = (100 * d["diff"], 100 * d["ci95"][0], 100 * d["ci95"][1])
            else:
                summary[metric][key] = t_interval([100 * d["diff"] for d in diffs])
            mean, low, high = summary[metric][key]
            text = (f"{key:>13}: held-out {label} {mean:+.2f} pts [{low:+.2f}, {high:+.2f}] "
                    f"({'bootstrap CI, one seed' if len(seeds) == 1 else f't-interval over {len(seeds)} seeds'})")
            if metric == "top1":  # the NLL at T = 1 once, beside the temperature-fair metric
                nll = [results["per_seed"][s][key]["tokens"]["nll"]["diff"] for s in seeds]
                text += f"; mean NLL diff at T = 1 {sum(nll) / len(nll):+.4f} nats"
            print(text)

    def parts(metric: str) -> str:
        return " ".join(f"{name}={summary[metric][key][0]:.2f} [{summary[metric][key][1]:.2f}, "
                        f"{summary[metric][key][2]:.2f}]" for name, key in
                        (("rpt", "rpt_vs_base"), ("rlp", "rlp_vs_base"), ("rlp_minus_rpt", "rlp_minus_rpt")))

    print(f"rlp_vs_rpt: seeds={len(seeds)} steps={steps} heldout_top1_pts {parts('top1')} "
          f"| sharpening-inclusive heldout_expected_pts {parts('expected')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
