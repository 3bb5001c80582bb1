"""Fixtures of the fault suite: a guard that fails a test if any model weights load."""

from __future__ import annotations

import pytest


class ModelLoaded(AssertionError):
    pass


@pytest.fixture
def forbid_model_load(monkeypatch):
    """Bad input must be refused before any model loads: make every model load fail the test."""
    import transformers

    import rl.train.trainer

    def refuse(*args, **kwargs):
        raise ModelLoaded("a model was loaded before the bad input was reported")

    monkeypatch.setattr(rl.train.trainer.EntropyGRPOTrainer, "__init__", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    return refuse
