"""Scope `step`: one optimizer step gives the same kept set and update in every layout.

The same global batch (4 prompts x 4 completions, fake deterministic generation, loss dapo, SGD,
no clipping) runs as 1 process x 4 accumulation micro-batches, 1 process x 1 micro-batch of 16,
and 2 gloo ranks (accelerate, DDP) x 2 micro-batches. Each run is a fresh process
(tests/rl/train/forking_worker.py). In float64 the only layout-dependent arithmetic left is TRL's own:
each rank left-pads its prompts to its local maximum, and the rotary embedding computes its
angles in float32 from those shifted positions (~1e-7 relative). Runs that pad identically agree
to ~1e-15. TRL's own per-micro-batch mask, by contrast, keeps different tokens in different
layouts and moves the parameters differently.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.kit import build_sharp_model
from tests.ranks import launch_ranks

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("forking_worker.py")
LAYOUTS = {"1x4": (1, 4, 4), "1x1": (1, 16, 1), "2x2": (2, 4, 2)}  # processes, micro-batch, accumulation


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir_plain):
    root = tmp_path_factory.mktemp("invariance")
    model_dir = build_sharp_model(tiny_model_dir_plain, root / "model")
    cache = {}

    def _run(layout: str, *extra: str) -> dict:
        key = (layout, extra)
        if key in cache:
            return cache[key]
        procs, bs, ga = LAYOUTS[layout]
        out = root / f"{layout}{''.join(extra).replace('-', '_')}.pt"
        args = [str(WORKER), "--model-dir", str(model_dir), "--out", str(out), "--bs", str(bs), "--ga", str(ga), *extra]
        if procs == 1:
            proc = launch_ranks(args, ranks=1, config=None, cwd=root, timeout=600)
        elif "--zero3" in extra:  # rl/runtime/cpu_distributed.py (called by the worker) makes ZeRO-3 run on CPU ranks
            proc = launch_ranks(args, ranks=procs, config="zero3", cwd=root, timeout=600)
        else:  # without ACCELERATE_USE_CPU every rank runs alone
            proc = launch_ranks(args, ranks=procs, config="ddp", cwd=root, env={"ACCELERATE_USE_CPU": "1"}, timeout=600)
        assert proc.returncode == 0, f"{layout} {extra} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        result = torch.load(out, weights_only=False)
        assert result["world"] == procs
        cache[key] = result
        return result

    return _run


def rel_diffs(a: dict, b: dict) -> tuple[float, float]:
    """(largest per-tensor ||a-b|| / ||b||, global ||a-b|| / ||b||) over the parameter updates."""
    assert a.keys() == b.keys()
    per = max(float((a[n] - b[n]).norm() / b[n].norm()) for n in b)
    total = math.sqrt(sum(float((a[n] - b[n]).norm()) ** 2 for n in b) / sum(float(b[n].norm()) ** 2 for n in b))
    return per, total


def test_step_scope_same_kept_set_and_update_in_every_layout(run):
    ref = run("1x4")
    assert ref["selective"] is None and ref["selective_calls"] == 4  # the selective LM head is what ran
    # one process adds the head's weight gradient straight into .grad; DDP's reducer must see it arrive
    assert ref["head_grad_into_param"] == [True] and run("2x2")["head_grad_into_param"] == [False]
    n_kept = len(ref["kept"])
    steps = [e for e in ref["log"] if "loss" in e]
    assert steps and steps[0]["forking/kept_fraction"] == pytest.approx(0.2, abs=0.02) and n_kept > 10
    for layout in ("1x1", "2x2"):
        other = run(layout)
        assert other["kept"] == ref["kept"], f"{layout}: kept (sample, position) set differs"
        assert [w[:2] for w in other["weights"]] == [w[:2] for w in ref["weights"]]
        assert all(math.isclose(x[2], y[2], rel_tol=1e-12) for x, y in zip(other["weights"], ref["weights"]))
        per, total = rel_diffs(other["update"], ref["update"])
        assert per < 1e-5 and total < 1e-7, (layout, per, total)
    # same padding (one process): identical up to float64 rounding
    per, total = rel_diffs(run("1x1")["update"], ref["update"])
    assert per < 1e-10, per


@pytest.mark.deepspeed
def test_step_scope_selective_head_under_deepspeed_zero3(run):
    """ZeRO-3 (2 CPU ranks): the head module is called (hence gathered) equally often on every rank."""
    pytest.importorskip("deepspeed")
    a, z = run("1x4", "--dtype", "float32"), run("2x2", "--dtype", "float32", "--zero3")
    assert z["selective"] is None and z["selective_calls"] == 2  # rank 0's two micro-batches
    assert z["head_grad_into_param"] == [False]
    assert z["kept"] == a["kept"]
    per, total = rel_diffs(z["update"], a["update"])
    assert per < 1e-4 and total < 1e-5, (per, total)


def test_step_scope_float32_layouts_agree(run):
    a, b = run("1x4", "--dtype", "float32"), run("2x2", "--dtype", "float32")
    assert a["kept"] == b["kept"]
    per, total = rel_diffs(b["update"], a["update"])
    assert per < 1e-4 and total < 1e-5, (per, total)


def test_trl_micro_batch_mask_depends_on_layout(run):
    """Why scope `step` matters: TRL's mask (same data, same model) changes with accumulation."""
    a, b = run("1x4", "--impl", "trl"), run("1x1", "--impl", "trl")
    assert a["kept"] != b["kept"]
    per, total = rel_diffs(a["update"], b["update"])
    assert total > 1e-2, total
