"""Dynamic sampling on 2 gloo ranks (accelerate: DDP, DeepSpeed ZeRO-2 and ZeRO-3) against 1 process: the ranks agree on the groups kept
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


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir_plain):
    root = tmp_path_factory.mktemp("dynamic-sampling-ranks")
    model_dir = build_sharp_model(tiny_model_dir_plain, root / "model")
    done: dict[str, dict] = {}  # a layout run once serves every test that compares against it

    def _run(name: str, procs: int, bs: int, ga: int, *extra: str) -> dict:
        if name in done:
            return done[name]
        out = root / f"{name}.pt"
        args = [str(WORKER), "--model-dir", str(model_dir), "--out", str(out), "--bs", str(bs), "--ga", str(ga),
                "--dynamic-sampling", *extra]
        if procs == 1:
            proc = launch_ranks(args, ranks=1, config=None, cwd=root, timeout=600)
        elif "--zero3" in extra or "--zero2" in extra:  # the worker applies rl/runtime/cpu_distributed.py's workarounds
            proc = launch_ranks(args, ranks=2, config="zero3" if "--zero3" in extra else "zero2", cwd=root, timeout=600)
        else:
            proc = launch_ranks(args, ranks=2, config="ddp", cwd=root, env={"ACCELERATE_USE_CPU": "1"}, timeout=600)
        assert proc.returncode == 0, f"{name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        result = torch.load(out, weights_only=False)
        assert result["world"] == procs
        done[name] = result
        return result

    return _run


def same_plan(one: dict, two: dict) -> None:
    logs = [next(e for e in r["log"] if "dynamic_sampling/generation_batches" in e) for r in (one, two)]
    assert logs[0]["dynamic_sampling/generation_batches"] >= 2  # a flat group was dropped and refilled
    for key in ("generation_batches", "dropped_share", "prompts", "kept_groups", "short"):
        assert logs[0][f"dynamic_sampling/{key}"] == logs[1][f"dynamic_sampling/{key}"], key
    assert one["kept"] == two["kept"] and len(one["kept"]) > 10


def test_two_ranks_keep_the_same_groups_and_step_as_one_process(run):
    one, two = run("1x4", 1, 4, 4), run("2x2", 2, 4, 2)
    same_plan(one, two)
    assert all(math.isclose(x[2], y[2], rel_tol=1e-12) for x, y in zip(one["weights"], two["weights"]))
    per, total = rel_diffs(two["update"], one["update"])
    assert per < 1e-5 and total < 1e-6, (per, total)


@pytest.mark.deepspeed
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_ranks_keep_the_same_groups_and_step_as_one_process(run, stage):
    """ZeRO-2 and ZeRO-3 (2 CPU ranks): under ZeRO-3 every round's generate gathers the weights on all ranks
    together, so the ranks must run the same number of rounds; ZeRO-2 partitions the gradients and optimizer
    state, so the kept samples' gradients must reduce as DDP's do. float32, as the forking mask's ZeRO-3
    invariance test."""
    pytest.importorskip("deepspeed")
    one = run("1x4-fp32", 1, 4, 4, "--dtype", "float32")
    sharded = run(f"2x2-{stage}", 2, 4, 2, "--dtype", "float32", f"--{stage}")
    assert one["zero_stage"] is None and sharded["zero_stage"] == int(stage[-1])  # DeepSpeed ran, not a fallback
    same_plan(one, sharded)
    per, total = rel_diffs(sharded["update"], one["update"])
    assert per < 1e-4 and total < 1e-5, (per, total)
