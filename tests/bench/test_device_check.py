"""bench/device_check.py: the GPU check's CPU mode writes the JSON a GPU run would (every section, no error),
and its gradient check can fail. (tests/bench/test_bench_smoke.py also runs its --smoke, for the last line.)"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_selective_head_check_passes_and_catches_a_wrong_gradient(monkeypatch):
    from bench import device_check
    from rl.train import selective_head

    size = device_check.SIZES["cpu"]
    good = device_check.selective_head(torch.device("cpu"), size)
    assert good["bf16_weights"]["ok"] and good["bf16_autocast"]["ok"]
    assert good["bf16_weights"]["fp32_ours_vs_full"]["weight_rel_err"] < 1e-5
    real = selective_head.selected_logps
    monkeypatch.setattr(selective_head, "selected_logps", lambda *a, **k: real(*a, **k) * 1.01)  # 1% off
    bad = device_check.selective_head(torch.device("cpu"), size)
    assert not bad["bf16_weights"]["ok"] and not bad["bf16_autocast"]["ok"]


@pytest.mark.slow
def test_cpu_mode_writes_every_section(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench.device_check", "--cpu", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["mode"] == "cpu" and data["ok"] and data["failed"] == []
    fm = data["forking_mask"]
    assert fm["completions"] == "8 x 16" and fm["speedup"] > 0
    assert fm["ours"]["kept"] and all(0.1 < k < 0.35 for k in fm["ours"]["kept"])  # about 20% of the tokens
    agr = data["agreement"]
    assert agr["tokens"] > 0 and 0 <= agr["top20_overlap"] <= 1 and math.isfinite(agr["max_abs_dH"])
    grpo = data["grpo"]
    assert [s["step"] for s in grpo["steps"]] == [1, 2, 3] and grpo["weights_moved"] and grpo["finite"]
    assert proc.stdout.strip().splitlines()[-1].startswith("device_check: device=cpu forking_speedup=")
