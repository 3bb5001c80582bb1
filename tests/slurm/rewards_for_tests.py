"""Reward functions for tests only (named by dotted path in test recipes: tests.slurm.rewards_for_tests.NAME).

Why: with a random tiny model the RPT reward is always 0, so every GRPO advantage is 0 and the
weights never move; a "resumed weights equal uninterrupted weights" check would then pass for any
resume, right or wrong. `length_reward` varies with the sampled completion, so training really
changes the weights. The training ranks import this module from the repository root (the job's
working directory, which `python -m` puts on sys.path).
"""

from __future__ import annotations


def length_reward(completions, **kwargs) -> list[float]:
    """Completion length (characters) modulo 3: varies between the completions of one prompt."""
    return [float(len(c if isinstance(c, str) else c[-1]["content"]) % 3) for c in completions]
