"""`boxed_format_reward`: 1.0 when a completion gives a complete, non-empty `\\boxed{}` answer.

Not part of either paper. It is a small shaping term for very small models (the 135M demo model
almost never boxes an answer, so the RPT reward alone is 0 for every sample and GRPO gets no
signal). Weight it low (e.g. `reward_weights: [1.0, 0.1]`) so it cannot outweigh a correct
prediction. It applies the same extraction rule as the RPT reward (`extract_prediction`).
"""

from __future__ import annotations

from rewards.rpt import _completion_text, extract_prediction


def boxed_format_reward(completions, **kwargs) -> list[float]:
    """1.0 per completion with a complete, non-empty box (after the last `</think>`), else 0.0."""
    out = []
    for completion in completions:
        # Same reading of a completion as the RPT reward: plain text, or the last assistant message
        # (text parts joined); anything else has no box and scores 0.0, never raises.
        prediction = extract_prediction(_completion_text(completion))
        out.append(1.0 if prediction else 0.0)
    return out
