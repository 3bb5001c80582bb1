"""`EntropyGRPOTrainer`: TRL's GRPOTrainer with entropy-rl's additions wired in.

Kept thin on purpose: tensor math lives in rl/entropy.py, checkpoint logic in rl/checkpoint.py.
"""

from __future__ import annotations

from trl import GRPOTrainer


class EntropyGRPOTrainer(GRPOTrainer):
    """GRPOTrainer for entropy-rl recipes (accepts `EntropyGRPOConfig`)."""

    _tag_names = ["trl", "grpo", "entropy-rl"]
