"""What the seed-repeating benches share (a helper, not a bench): one `python -m rl.demo` run per seed
(`run_seed`, its demo_summary.json back) and the 95% t-interval over seeds (`t_interval`).

Used by bench/rpt_select_by.py (run_seed, t_interval) and bench/rlp_vs_rpt.py (t_interval); they were
bench/rpt_learning.py's until its rewrite as the settings search.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ROOT", "run_seed", "t_interval"]

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
    """`python -m rl.demo` at `seed` for `steps` steps into out/seed<seed> (RPT rows copied from `data` when
    given, so every seed trains on the same rows), `extra` recipe overrides last; its demo_summary.json
    with `wall_seconds` and `log` added. The demo's output goes to out/seed<seed>.log."""
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
