"""Reward functions that fail on purpose, named by dotted path in fault-test recipes."""

from __future__ import annotations


def boom_reward(prompts, completions, **kwargs):
    """1.0 per completion, but raises on any prompt containing BOOM (a bug in user reward code)."""
    for prompt in prompts:
        text = prompt if isinstance(prompt, str) else str(prompt)
        if "BOOM" in text:
            raise ValueError(f"cannot score {text[:20]!r}")
    return [1.0] * len(completions)


def nan_reward(prompts, completions, **kwargs):
    """NaN for prompts containing NAN, else 0.5."""
    return [float("nan") if "NAN" in str(p) else 0.5 for p in prompts]
