"""Dynamic sampling on 2 gloo ranks (accelerate, DDP) against 1 process: the ranks agree on the groups kept
and hold the same number of samples, and the step is the one-process step.

One optimizer step (tests/rl/train/forking_worker.py --dynamic-sampling: 8 prompts, a reward that is flat
for some prompts, fake deterministic generation, step-scope forking mask, float64, SGD): 1 process x 4
micro-batches of 4 against 2 ranks x 2 micro-batches of 4. Round 0 is TRL's batch (the same 4 prompts in
both layouts), extra rounds draw the same fresh prompts, and the kept samples are laid out in the same
global order, so the kept (sample, position) set and the update match as in
tests/rl/train/test_forking_invariance.py (the mask's population is the kept samples).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.kit import build_sharp_model
from tests.ranks import launch_ranks
from tests.rl.train.test_forking_invariance import rel_diffs

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(900)]

WORKER = Path(__file__).with_name("forking_worker.py")


def test_two_ranks_keep_the_same_groups_and_step_as_one_process(tmp_path, tiny_model_dir_plain):
    model_dir = build_sharp_model(tiny_model_dir_plain, tmp_path / "model")
    results = {}
    for name, (procs, bs, ga) in {"1x4": (1, 4, 4), "2x2": (2, 4, 2)}.items():
        out = tmp_path / f"{name}.pt"
        args = [str(WORKER), "--model-dir", str(model_dir), "--out", str(out), "--bs", str(bs), "--ga", str(ga),
                "--dynamic-sampling"]
        if procs == 1:
            proc = launch_ranks(args, ranks=1, config=None, cwd=tmp_path, timeout=600)
        else:
            proc = launch_ranks(args, ranks=2, config="ddp", cwd=tmp_path, env={"ACCELERATE_USE_CPU": "1"}, timeout=600)
        assert proc.returncode == 0, f"{name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        results[name] = torch.load(out, weights_only=False)
        assert results[name]["world"] == procs
    one, two = results["1x4"], results["2x2"]
    logs = [next(e for e in r["log"] if "dynamic_sampling/generation_batches" in e) for r in (one, two)]
    assert logs[0]["dynamic_sampling/generation_batches"] >= 2  # a flat group was dropped and refilled
    for key in ("generation_batches", "dropped_share", "prompts", "kept_groups", "short"):
        assert logs[0][f"dynamic_sampling/{key}"] == logs[1][f"dynamic_sampling/{key}"], key
    assert one["kept"] == two["kept"] and len(one["kept"]) > 10
    assert all(math.isclose(x[2], y[2], rel_tol=1e-12) for x, y in zip(one["weights"], two["weights"]))
    per, total = rel_diffs(two["update"], one["update"])
    assert per < 1e-5 and total < 1e-6, (per, total)
