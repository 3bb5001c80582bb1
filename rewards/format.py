"""`boxed_format_reward`: 1.0 when a completion gives a complete, non-empty `\\boxed{}` answer.

Not part of either paper. It is a small shaping term for very small models (the 135M demo model
almost never boxes an answer, so the RPT reward alone is 0 for every sample and GRPO gets no
signal). Weight it low (e.g. `reward_weights: [1.0, 0.1]`) so it cannot outweigh a correct
prediction. It applies the same extraction rule as the RPT reward (`extract_prediction`).
"""

from __future__ import annotations

from rewards.registry import register_reward
from rewards.rpt import completion_text, extract_prediction
from rl.errors import UserError


def _refuse_completion_rows(formats) -> None:
    for index, value in enumerate(formats):
        if value == "completion":
            raise UserError(
                f"boxed_format_reward: row {index} is completion-format RPT data (the completion itself is the "
                "guess, no \\boxed{} is asked for); drop `boxed_format` from reward_funcs"
            )


def _check_dataset(dataset, where: str) -> None:
    """Before training: completion-format rows get no box, so this reward would be 0 for all of them."""
    if "rpt_format" in dataset.column_names:
        try:
            _refuse_completion_rows(dataset["rpt_format"])
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None


@register_reward("boxed_format", check_dataset=_check_dataset, boxed_answer=True)
def boxed_format_reward(completions, rpt_format=None, **kwargs) -> list[float]:
    """1.0 per completion with a complete, non-empty box (after the last `</think>`), else 0.0.

    Completion-format RPT rows (`rpt_format` column) have no box to write: refused with one line."""
    if rpt_format is not None:
        _refuse_completion_rows(rpt_format)
    out = []
    for completion in completions:
        # Same reading of a completion as the RPT reward: plain text, or the last assistant message
        # (text parts joined); anything else has no box and scores 0.0, never raises.
        prediction = extract_prediction(completion_text(completion))
        out.append(1.0 if prediction else 0.0)
    return out

