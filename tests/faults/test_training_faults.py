"""Faults during training: a reward that raises, NaN/inf gradients. Nothing bad is applied or saved."""

from __future__ import annotations

import inspect
import json
import logging
import math

import pytest
import torch
from safetensors.torch import load_file

from rewards.rpt import rpt_reward
from rl.runtime.checkpoint import check_complete, list_checkpoints
from rl.errors import UserError
from rl.runtime.faults import NonFiniteGuard, RewardError, wrap_reward
from rewards.registry import required_columns
from tests.faults.flaky_rewards import boom_reward, nan_reward
from tests.faults.helpers import one_error_line, rpt_rows, run_cli, write_recipe

# ------------------------------------------------------------------------------------------ reward wrapper (unit)


def _batch(n=4, boom=2):
    prompts = [f"prompt {i}" + (" BOOM" if i == boom else "") for i in range(n)]
    return dict(prompts=prompts, completions=[f"completion {i}" for i in range(n)], completion_ids=[[1]] * n,
                doc_id=[f"doc{i}" for i in range(n)], trainer_state=None)


def test_wrapper_keeps_name_signature_and_columns():
    wrapped = wrap_reward(rpt_reward)
    assert wrapped.__name__ == "rpt_reward"
    assert inspect.signature(wrapped) == inspect.signature(rpt_reward)
    assert required_columns([wrapped]) == {"rpt_reward": ["continuation", "boundaries"]}
    assert wrap_reward(wrapped) is wrapped


def test_raise_policy_names_reward_and_sample(caplog):
    with pytest.raises(RewardError) as info, caplog.at_level(logging.ERROR):
        wrap_reward(boom_reward, "raise")(**_batch())
    msg = str(info.value)
    assert "\n" not in msg
    for needle in ("reward `boom_reward`", "ValueError", "sample 2 of the batch", "doc_id='doc2'",
                   "'prompt 2 BOOM'", "'completion 2'", "reward_error_policy: none"):
        assert needle in msg, msg
    assert any("Traceback" in r.getMessage() for r in caplog.records)  # the user's traceback is logged


def test_none_policy_scores_only_the_failing_sample_none(caplog):
    metrics = []
    out = wrap_reward(boom_reward, "none")(**_batch(), log_metric=lambda k, v: metrics.append((k, v)))
    assert out == [1.0, 1.0, None, 1.0]
    assert metrics == [("reward_errors/boom_reward", 1.0)]
    assert any("scored None" in r.getMessage() for r in caplog.records)


def test_non_finite_scores():
    batch = _batch(boom=-1)
    batch["prompts"][1] += " NAN"
    with pytest.raises(RewardError, match=r"returned nan .*sample 1"):
        wrap_reward(nan_reward, "raise")(**batch)
    assert wrap_reward(nan_reward, "none")(**batch) == [0.5, None, 0.5, 0.5]


def test_wrong_length_and_batch_level_errors_always_raise():
    def short(completions, **kw):
        return [1.0]

    def batch_only(completions, **kw):
        if len(completions) > 1:
            raise RuntimeError("batch too big")
        return [0.0]

    for policy in ("raise", "none"):
        with pytest.raises(RewardError, match="returned 1 values for 4 completions"):
            wrap_reward(short, policy)(**_batch())
        with pytest.raises(RewardError, match="each sample alone scores fine"):
            wrap_reward(batch_only, policy)(**_batch())


def test_malformed_rpt_row_names_the_reward_and_row():
    wrapped = wrap_reward(rpt_reward, "raise")
    with pytest.raises(RewardError, match=r"reward `rpt_reward`.*row 0.*past the end"):
        wrapped(completions=["\\boxed{ a}", "x"], continuation=[" a", " b"], boundaries=[[2], [9]])
    assert wrap_reward(rpt_reward, "none")(completions=["\\boxed{ a}", "x"], continuation=[" a", " b"],
                                           boundaries=[[2], [9]]) == [1.0, None]
    assert isinstance(RewardError("x"), UserError)


# ------------------------------------------------------------------------------------------ reward faults (e2e)


def _boom_rows(count=6):
    """8 rows, the first `count` of which make boom_reward raise (so every step meets one)."""
    rows = rpt_rows(8)
    for i in range(count):
        rows[i]["prompt"] = f"Say BOOM {i}:"
    return rows


@pytest.mark.slow
def test_raising_reward_stops_with_reward_and_sample_named(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, rows=_boom_rows(8), max_steps=2,
                          reward_funcs=["tests.faults.flaky_rewards.boom_reward"], save_strategy="no")
    line = one_error_line(*run_cli(["train", "--config", str(recipe)]))
    assert "reward `boom_reward`" in line and "BOOM" in line and "sample" in line and "doc_id='doc" in line


@pytest.mark.slow
def test_raising_reward_with_policy_none_keeps_training(tmp_path, tiny_model_dir):
    recipe = write_recipe(tmp_path, tiny_model_dir, rows=_boom_rows(), max_steps=2, reward_error_policy="none",
                          reward_funcs=["tests.faults.flaky_rewards.boom_reward", "rpt"])
    rc, lines = run_cli(["train", "--config", str(recipe)])
    assert rc == 0, lines
    history = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    assert any(e.get("reward_errors/boom_reward", 0) > 0 for e in history), history
    assert all(math.isfinite(e["loss"]) for e in history if "loss" in e)


# ------------------------------------------------------------------------------------------ NaN / inf steps


@pytest.fixture
def poison_steps(monkeypatch):
    """Make the loss of the given optimizer steps NaN or inf (so their gradients are too)."""
    from rl.train.trainer import EntropyGRPOTrainer

    plan: dict[int, float] = {}
    original = EntropyGRPOTrainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = original(self, model, inputs, *args, **kwargs)
        poison = plan.get(self.state.global_step + 1)  # the step being computed
        return loss * poison if poison is not None else loss

    monkeypatch.setattr(EntropyGRPOTrainer, "compute_loss", compute_loss)
    return plan


def _weights_finite(ckpt) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(str(ckpt / "model.safetensors")).values())


@pytest.mark.slow
def test_nan_and_inf_steps_are_skipped_counted_and_not_saved(tmp_path, tiny_model_dir, poison_steps, caplog):
    poison_steps.update({2: float("nan"), 3: float("inf")})
    recipe = write_recipe(tmp_path, tiny_model_dir, max_steps=4, max_bad_steps=3)
    rc, lines = run_cli(["train", "--config", str(recipe)])
    assert rc == 0, lines
    run = tmp_path / "run"
    assert [c.name for c in list_checkpoints(run)] == ["checkpoint-1", "checkpoint-4"]  # bad steps not saved
    assert all(check_complete(c) is None and _weights_finite(c) for c in list_checkpoints(run))
    assert _weights_finite(run)  # the final model
    history = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    assert [e["faults/skipped_step"] for e in history if "faults/skipped_step" in e] == [2, 3]
    assert sum("non-finite (NaN/inf) gradients" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.slow
def test_consecutive_bad_steps_stop_the_run_clearly(tmp_path, tiny_model_dir, poison_steps):
    poison_steps.update({s: float("nan") for s in range(2, 10)})
    recipe = write_recipe(tmp_path, tiny_model_dir, max_steps=6, max_bad_steps=2)
    line = one_error_line(*run_cli(["train", "--config", str(recipe)]))
    assert "training stopped at step 3" in line and "2 consecutive optimizer steps (2, 3)" in line, line
    assert "newest complete checkpoint: " + str(tmp_path / "run" / "checkpoint-1") in line
    run = tmp_path / "run"
    assert [c.name for c in list_checkpoints(run)] == ["checkpoint-1"]
    assert not (run / "model.safetensors").exists()  # no final model written after divergence
    # the saved checkpoint resumes cleanly once the cause is gone
    poison_steps.clear()
    rc, lines = run_cli(["train", "--config", str(recipe), "--max_steps", "2", "--resume_from_checkpoint", "auto"])
    assert rc == 0, lines
    assert _weights_finite(run / "checkpoint-2")


def test_guard_unit_skip_and_stop():
    """The callback alone: a non-finite gradient is dropped before the optimizer sees it."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    guard = NonFiniteGuard(max_bad_steps=2)
    args = TrainingArguments(output_dir="/tmp/unused", use_cpu=True, report_to=[])
    state, control = TrainerState(), TrainerControl()
    guard.on_train_begin(args, state, control)
    for step in (1, 2):
        model.weight.grad = torch.full_like(model.weight, float("nan"))
        model.bias.grad = torch.ones_like(model.bias)
        guard.on_pre_optimizer_step(args, state, control, model=model, optimizer=opt)
        opt.step()
        state.global_step = step
        control.should_save = True
        guard.on_step_end(args, state, control, model=model)
        assert control.should_save is False
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert guard.skipped == [1, 2] and control.should_training_stop
    with pytest.raises(UserError, match="2 consecutive optimizer steps"):
        guard.raise_if_diverged("/tmp/nonexistent-run")
