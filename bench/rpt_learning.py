"""Benchmark: does RPT in the completion format learn, beyond one run? (the demo recipe, several seeds)

Not a test. Runs `python -m rl.demo` (recipes/rpt_smollm2_cpu.yaml: SmolLM2-135M-Instruct, LoRA,
CHAMP) once per seed at a larger step count, each in its own output dir under --out (the RPT data
is built once and copied, so every seed trains on the same rows), reads each run's
demo_summary.json and prints per seed: the probe reward and the held-out expected accuracy over
all tokens of the held-out documents, base -> trained, with the paired difference and its 95% CI
(paired bootstrap over documents, as the demo reports it); then the mean gain over seeds with a
t-interval over seeds (the spread between seeds is part of the uncertainty).

    .venv/bin/python bench/rpt_learning.py [--seeds 1,2,3] [--max-steps 120] [--out runs/bench-rpt-learning]

Default sizing: ~30 minutes on a quiet 2-core CPU. The last line is
`rpt_learning: seeds=N mean_heldout_gain_pts=X ci95=[L, H] mean_probe_gain=Y`.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (n >= 2; for one seed the interval is the value itself)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T975.get(n - 1, 1.96) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def run_seed(seed: int, steps: int, out: Path, data: Path | None, extra: list[str]) -> dict:
    run_dir = out / f"seed{seed}"
    if data is not None and not (run_dir / "rpt-data").exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(data, run_dir / "rpt-data")
    cmd = [sys.executable, "-m", "rl.demo", "--seed", str(seed), "--max_steps", str(steps),
           "--output_dir", str(run_dir), "--run_name", f"bench-rpt-seed{seed}", "--report_to", "none",
           "--save_steps", str(steps), *extra]
    started = time.time()
    log = run_dir.parent / f"seed{seed}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.call(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"seed {seed}: the demo exited with {code}; see {log}")
    summary = json.loads((run_dir / "demo_summary.json").read_text())
    summary["wall_seconds"] = time.time() - started
    summary["log"] = str(log)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--max-steps", type=int, default=120)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-rpt-learning"))
    parser.add_argument("extra", nargs="*", help="recipe overrides passed to the demo, after --")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    rows = []
    data = None
    for seed in seeds:
        summary = run_seed(seed, args.max_steps, out, data, args.extra)
        data = data or out / f"seed{seed}" / "rpt-data"
        tokens = summary["heldout_tokens"]["expected"]
        probe = summary["probe_reward"]
        rows.append((seed, probe, tokens, summary))
        print(f"seed {seed}: probe reward {probe['before']:.3f} -> {probe['after']:.3f} (diff {probe['diff']:+.3f}, "
              f"95% CI [{probe['ci95'][0]:+.3f}, {probe['ci95'][1]:+.3f}]); held-out expected accuracy "
              f"{100 * tokens['before']:.2f}% -> {100 * tokens['after']:.2f}% (diff {100 * tokens['diff']:+.2f} pts, "
              f"95% CI [{100 * tokens['ci95'][0]:+.2f}, {100 * tokens['ci95'][1]:+.2f}]); "
              f"{summary['wall_seconds']:.0f} s", flush=True)
    print(f"\n{'seed':>4} {'probe before':>12} {'probe after':>11} {'probe diff [95% CI]':>28} "
          f"{'held-out exp. acc.':>18} {'diff pts [95% CI]':>24} {'top-1 diff':>10} {'NLL diff':>9}")
    for seed, probe, tokens, summary in rows:
        top1 = summary["heldout_tokens"]["top1"]["diff"]
        nll = summary["heldout_tokens"]["nll"]["diff"]
        print(f"{seed:>4} {probe['before']:>12.3f} {probe['after']:>11.3f} "
              f"{probe['diff']:>+8.3f} [{probe['ci95'][0]:+.3f}, {probe['ci95'][1]:+.3f}] "
              f"{100 * tokens['before']:>7.2f}->{100 * tokens['after']:.2f}% "
              f"{100 * tokens['diff']:>+7.2f} [{100 * tokens['ci95'][0]:+.2f}, {100 * tokens['ci95'][1]:+.2f}] "
              f"{100 * top1:>+9.2f} {nll:>+9.4f}")
    gains = [100 * t["diff"] for _, _, t, _ in rows]
    probes = [p["diff"] for _, p, _, _ in rows]
    mean, low, high = t_interval(gains)
    pmean, plow, phigh = t_interval(probes)
    print(f"mean over {len(rows)} seeds: held-out expected accuracy {mean:+.2f} pts (95% t-interval over seeds "
          f"[{low:+.2f}, {high:+.2f}]); probe reward {pmean:+.3f} [{plow:+.3f}, {phigh:+.3f}]")
    print(f"rpt_learning: seeds={len(rows)} mean_heldout_gain_pts={mean:.2f} ci95=[{low:.2f}, {high:.2f}] "
          f"mean_probe_gain={pmean:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
