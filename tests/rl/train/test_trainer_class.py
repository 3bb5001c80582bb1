"""What the trainer class itself carries, whoever builds it: the fault guards, one default per setting,
G/(G-1) advantage scaling as a plain function."""

from __future__ import annotations

import errno

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from rl.runtime.disk_errors import CheckpointSaveError
from rl.runtime.faults import NonFiniteGuard
from rl.train.advantages import group_advantage_factor
from rl.train.config import EntropyGRPOConfig, entropy_setting
from tests.rl.train.forking_worker import make_trainer

pytestmark = pytest.mark.timeout(600)


def test_a_trainer_built_directly_has_the_guards(tiny_model_dir_plain, tmp_path, monkeypatch):
    """No `rl train` wiring: the NonFiniteGuard sits right after DefaultFlowCallback, and a disk error in a
    checkpoint write is one CheckpointSaveError line."""
    from transformers.trainer_callback import DefaultFlowCallback

    trainer = make_trainer(tiny_model_dir_plain, tmp_path, max_bad_steps=2)
    callbacks = trainer.callback_handler.callbacks
    guards = [cb for cb in callbacks if isinstance(cb, NonFiniteGuard)]
    assert guards == [trainer.nonfinite_guard] and trainer.nonfinite_guard.max_bad_steps == 2
    flow = next(i for i, cb in enumerate(callbacks) if isinstance(cb, DefaultFlowCallback))
    assert callbacks[flow + 1] is trainer.nonfinite_guard

    def full_disk(self, model, trial):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(GRPOTrainer, "_save_checkpoint", full_disk)
    with pytest.raises(CheckpointSaveError) as info:
        trainer._save_checkpoint(trainer.model, None)
    assert "\n" not in str(info.value) and "checkpoint-0" in str(info.value)

    def bug(self, model, trial):
        raise KeyError("not a disk error")

    monkeypatch.setattr(GRPOTrainer, "_save_checkpoint", bug)
    with pytest.raises(KeyError):  # anything else passes through unchanged
        trainer._save_checkpoint(trainer.model, None)


def test_a_guard_passed_in_is_the_one_used(tiny_model_dir_plain, tmp_path):
    guard = NonFiniteGuard(5)
    trainer = make_trainer(tiny_model_dir_plain, tmp_path, callbacks=[guard])
    assert trainer.nonfinite_guard is guard
    assert sum(isinstance(cb, NonFiniteGuard) for cb in trainer.callback_handler.callbacks) == 1


def test_settings_have_one_default(tmp_path):
    """A plain GRPOConfig gets EntropyGRPOConfig's defaults (forking_table_steps was 50 there, 0 in the trainer)."""
    plain = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[])
    ours = EntropyGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[])
    for name in ("forking_table_steps", "entropy_mask_scope", "entropy_mask_normalize", "entropy_mask_side",
                 "advantage_group_scaling", "dynamic_sampling", "dynamic_sampling_max_batches"):
        assert entropy_setting(plain, name) == getattr(ours, name), name
    assert entropy_setting(plain, "forking_table_steps") == 50
    ours.forking_table_steps = 7
    assert entropy_setting(ours, "forking_table_steps") == 7


def test_group_advantage_factor():
    assert group_advantage_factor(4) == pytest.approx(4 / 3)
    assert group_advantage_factor(4, enabled=False) == 1.0
    assert group_advantage_factor(1) == 1.0
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])  # r - mean over groups of 2
    torch.testing.assert_close(adv * group_advantage_factor(2), adv * 2)
