"""Every bench's `--smoke` runs end to end: exit status 0 and the bench's own last line (bench/__init__.py).

The benches are found from the folder: every module of bench/ with a `__main__` block (the others are
helpers they share), so a new bench is run here the day it lands and fails until it has `--smoke`.
Each runs as `python -m bench.NAME --smoke` in its own process from the repository root, as a user
runs it. The selected runs start together, as many at a time as there are CPUs (one OpenMP thread
each), and each test waits for its own, so the whole set costs about its CPU time over the cores.

Measured 2026-12-07 (one at a time, CPU seconds including child processes): rpt_select_by 58 (three
demo runs), rpt_learning 49 (one demo run), rlp_vs_rpt 39 (two `rl train` runs), forking_mask 39 (two
row children), prune_sft 20, forking_learning 18, rpt_signal 9, next_token_eval 9, rlp_cost 9,
prune_speed 8, forking_head_memory 5: 261 s in all, mostly importing torch/transformers/TRL once per
process and the demo's measurement, so about 2 minutes 15 s on an idle 2-core machine (8 min 11 s for
this test on a shared one at load 3-5).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600


def bench_names() -> list[str]:
    """The runnable modules of bench/ (a `__main__` block), by name."""
    return sorted(p.stem for p in (ROOT / "bench").glob("*.py")
                  if p.stem != "__init__" and re.search(r"^if __name__ == .__main__.:", p.read_text(), re.M))


NUM = r"[-+]?\d+(?:\.\d+)?"
CI = rf"{NUM} \[{NUM}, {NUM}\]"
# The last line each bench documents. A bench not listed must end on a line starting `NAME: `.
LAST_LINE = {
    "forking_head_memory": rf"forking_head_memory: autograd_mib={NUM} fused_mib={NUM}",
    "forking_learning": rf"forking_learning: top20_vs_all={CI} bottom80_vs_all={CI}( top20_mb_vs_all={CI})? "
                        rf"base={NUM}",
    "forking_mask": rf"realistic: min_speedup={NUM} max_memory_ratio={NUM}",
    "next_token_eval": rf"standard_mode_ratio={NUM}",
    "prune_sft": rf"prune_sft: likelihood_minus_random={CI} likelihood_minus_surprisal={CI}",
    "prune_speed": rf"prune_speed: speedup={NUM} approx_tokens=\d+->\d+ approx_seconds={NUM}",
    "rlp_cost": rf"rlp_cost: reward_vs_generation={NUM} full_logits_vs_generation={NUM}",
    "rlp_vs_rpt": rf"rlp_vs_rpt: seeds=1 steps=\d+ heldout_top1_pts rpt={CI} rlp={CI} rlp_minus_rpt={CI} "
                  rf"\| sharpening-inclusive heldout_expected_pts rpt={CI} rlp={CI} rlp_minus_rpt={CI}",
    "rpt_select_by": rf"rpt_select_by: seeds=1 steps=\d+ hard_top1_pts( \w+=(?:{NUM}|n/a))+ "
                     rf"hard_cal_nll( \w+=(?:{NUM}|n/a))+ \| sharpening-inclusive expected_pts( \w+={NUM})+",
    "rpt_signal": rf"signal: completion_1tok={NUM} completion_4tok_prefix={NUM} completion_4tok_exact={NUM} "
                  rf"reasoning={NUM}",
}


# Benches whose --smoke has not landed yet, each with why: expected to fail, strictly (the day it passes,
# this test fails until the entry is removed).
PENDING: dict[str, str] = {}


def bench_params() -> list:
    return [pytest.param(name, marks=pytest.mark.xfail(reason=PENDING[name], strict=True)) if name in PENDING
            else name for name in bench_names()]


LONGEST = ("rpt_select_by", "rlp_vs_rpt", "forking_mask")  # several processes each (demo runs, rl train, rows)


def run_smoke(name: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1"}
    try:
        return subprocess.run([sys.executable, "-m", f"bench.{name}", "--smoke"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, -1, exc.stdout or "", f"timed out after {TIMEOUT_S} s")


@pytest.fixture(scope="module")
def smoke_runs(request):
    """bench name -> future of its smoke run, for the benches this session selected, started together."""
    selected = sorted({item.callspec.params["bench"] for item in request.session.items
                       if getattr(item, "originalname", None) == "test_bench_smoke" and hasattr(item, "callspec")})
    selected.sort(key=lambda name: name not in LONGEST)  # the longest first: the last to finish ends sooner
    with ThreadPoolExecutor(max_workers=max(1, min(len(selected), os.cpu_count() or 1))) as pool:
        yield {name: pool.submit(run_smoke, name) for name in selected}


def test_bench_folder_has_benches():
    assert {"forking_mask", "forking_learning", "prune_speed"} <= set(bench_names())


@pytest.mark.parametrize("bench", bench_params())
def test_bench_smoke(bench, smoke_runs):
    proc = smoke_runs[bench].result()
    out = proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode(errors="replace")
    tail = "\n".join((out + "\n" + (proc.stderr or "")).strip().splitlines()[-30:])
    assert proc.returncode == 0, f"python -m bench.{bench} --smoke exited {proc.returncode}:\n{tail}"
    lines = [line for line in out.splitlines() if line.strip()]
    expected = LAST_LINE.get(bench, rf"{re.escape(bench)}: \S.*")
    assert lines and re.fullmatch(expected, lines[-1].strip()), \
        f"bench.{bench} --smoke: last line {lines[-1] if lines else None!r} does not match {expected!r}\n{tail}"
