"""What the seed-repeating benches share (a helper, not a bench): one `python -m rl.demo` run per seed
(`run_demo`, and `run_seed` on it; its demo_summary.json back) and the 95% t-interval over seeds
(`t_interval`).

Used by bench/rpt_learning.py (run_demo), bench/rpt_select_by.py (run_seed, t_interval) and
bench/rlp_vs_rpt.py (t_interval).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ROOT", "run_demo", "run_seed", "t_interval"]

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


def heldout_metric(summary: dict, split: str, key: str) -> dict | None:
    """{before, after, diff, ci95} of one held-out token split's metric in a demo summary
    (rl/eval/learning_report.py: splits `all`, `hard`; keys `top1`, `nll_cal`, `expected`, ...), or None."""
    return (summary.get("heldout_token_splits", {}).get(split, {}).get("metrics") or {}).get(key)


def run_demo(run_dir: Path, log: Path, args: list[str], data: Path | None) -> tuple[int, dict]:
    """`python -m rl.demo --output_dir RUN_DIR ARGS` (RPT rows copied from `data` into RUN_DIR/rpt-data
    first when given, so runs train on the same rows), its output in `log`: (exit code, its
    demo_summary.json with `wall_seconds` and `log` added; only those two when the demo failed)."""
    if data is not None and not (run_dir / "rpt-data").exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(data, run_dir / "rpt-data")
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.call([sys.executable, "-m", "rl.demo", "--output_dir", str(run_dir), *args], cwd=ROOT,
                               stdout=handle, stderr=subprocess.STDOUT)
    summary = {} if code else json.loads((run_dir / "demo_summary.json").read_text())
    summary.update(wall_seconds=time.time() - started, log=str(log))
    return code, summary


def run_seed(seed: int, steps: int, out: Path, data: Path | None, extra: list[str]) -> dict:
    """`python -m rl.demo` at `seed` for `steps` steps into out/seed<seed> (RPT rows copied from `data` when
    given, so every seed trains on the same rows), `extra` recipe overrides last; its demo_summary.json
    with `wall_seconds` and `log` added. The demo's output goes to out/seed<seed>.log."""
    log = out / f"seed{seed}.log"
    code, summary = run_demo(out / f"seed{seed}", log, [
        "--seed", str(seed), "--max_steps", str(steps), "--run_name", f"bench-rpt-seed{seed}", "--report_to",
        "none", "--save_steps", str(steps), *extra], data)
    if code:
        raise SystemExit(f"seed {seed}: the demo exited with {code}; see {log}")
    return summary
