"""Benchmark: which positions should RPT train on? Entropy-chosen vs surprise-chosen vs random.

Not a test. For each criterion (`rl data rpt --select-by`, recipe `rpt_select_by`) and seed it runs
the demo (bench/demo_runs.py `run_seed`: recipes/rpt_smollm2_cpu.yaml, SmolLM2-135M-Instruct,
LoRA, CHAMP) at the same step count and batch, so every arm trains on the same number of rows; the
only difference is which positions those rows are. Each arm's RPT data is built once and copied to
its other seeds. Per arm and seed: held-out expected accuracy over all tokens of the held-out
documents, base -> trained, paired difference with a 95% CI (paired bootstrap over documents, as the
demo reports it); then per arm the mean gain with a 95% t-interval over seeds, and each arm minus
the entropy arm, paired by seed.

    .venv/bin/python -m bench.rpt_select_by [--seeds 1,2,3] [--max-steps 120] [--quick] [--smoke]

Thresholds: entropy >= 1.0 nats (the recipe's), surprisal >= 1.0 nats (about the same share of
CHAMP positions on the builtin proxy), random: every position. Full sizing is ~9 demo runs (about
1.5 hours on a quiet 2-core CPU); --quick is one seed at 20 steps (minutes, for a smoke reading only).
Measured (2026-12-05, --seeds 1,2,3 --max-steps 30, one torch thread per run, shared machine):
held-out expected accuracy gain per seed: entropy +1.06, +0.66, +1.61 (mean +1.11 [-0.06, +2.28]);
surprisal +0.96, +1.91, +0.98 (+1.29 [-0.07, +2.64]); random -0.46, +0.02, +1.72 (+0.43 [-2.42,
+3.28]); surprisal - entropy +0.18 [-2.23, +2.58], random - entropy -0.68 [-2.72, +1.36] (paired by
seed). Entropy and surprisal positions gained in every seed (each seed's bootstrap CI above 0),
random ones in one of three; three seeds do not separate the criteria.
`--smoke`: every arm's demo run with a tiny local model and bench/smoke.py's 16 documents instead of
SmolLM2 and CHAMP (bench/smoke.py `rpt_overrides`), one seed, 1 step, a temporary --out: checks that
the bench runs (its numbers mean nothing).

The last line is `rpt_select_by: seeds=N steps=S entropy=X surprisal=Y random=Z (mean held-out gain, pts)`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.demo_runs import ROOT, run_seed, t_interval

ARMS = {
    "entropy": ["--rpt_select_by", "entropy"],
    "surprisal": ["--rpt_select_by", "surprisal", "--rpt_min_surprise", "1.0"],
    "random": ["--rpt_select_by", "random"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--max-steps", type=int, default=120)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--quick", action="store_true", help="one seed, 20 steps")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny local model and corpus, one seed, 1 step, a temporary --out: checks that the bench "
                             "runs (its numbers mean nothing)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-rpt-select-by"))
    args = parser.parse_args(argv)
    seeds = [1] if args.quick or args.smoke else [int(s) for s in args.seeds.split(",")]
    steps = 20 if args.quick else 1 if args.smoke else args.max_steps
    arms = args.arms.split(",")
    extra: list[str] = []
    if args.smoke:
        from bench.smoke import rpt_overrides, tiny_corpus, tiny_model

        smoke_dir = tempfile.TemporaryDirectory(prefix="rpt-select-by-smoke-")
        # signal check warn: a random model's rewards may all be equal, which `stop` (the recipe's) refuses
        extra = [*rpt_overrides(tiny_model(smoke_dir.name), tiny_corpus(smoke_dir.name)), "--signal_check", "warn"]
        args.out = str(Path(smoke_dir.name) / "out")
    gains: dict[str, dict[int, float]] = {a: {} for a in arms}
    for arm in arms:
        data = None
        for seed in seeds:
            out = Path(args.out) / arm
            summary = run_seed(seed, steps, out, data, ARMS[arm] + extra)
            data = data or out / f"seed{seed}" / "rpt-data"
            t = summary["heldout_tokens"]["expected"]
            gains[arm][seed] = 100 * t["diff"]
            print(f"{arm} seed {seed}: held-out expected accuracy {100 * t['before']:.2f}% -> {100 * t['after']:.2f}% "
                  f"(diff {100 * t['diff']:+.2f} pts, 95% CI [{100 * t['ci95'][0]:+.2f}, {100 * t['ci95'][1]:+.2f}]); "
                  f"probe reward diff {summary['probe_reward']['diff']:+.3f}; {summary['wall_seconds']:.0f} s", flush=True)
    means = {}
    for arm in arms:
        mean, low, high = t_interval(list(gains[arm].values()))
        means[arm] = mean
        print(f"{arm}: mean held-out gain {mean:+.2f} pts (95% t-interval over {len(seeds)} seeds [{low:+.2f}, {high:+.2f}])")
        if arm != "entropy" and "entropy" in arms:
            diffs = [gains[arm][s] - gains["entropy"][s] for s in seeds]
            d, dl, dh = t_interval(diffs)
            print(f"  {arm} - entropy, paired by seed: {d:+.2f} pts [{dl:+.2f}, {dh:+.2f}]")
    print(f"rpt_select_by: seeds={len(seeds)} steps={steps} " + " ".join(f"{a}={means[a]:.2f}" for a in arms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
