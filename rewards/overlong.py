"""DAPO's overlong reward shaping (arXiv 2503.14476, Eq. 13): TRL's soft overlong punishment, set from the recipe.

Why: a run that truncates long answers at `max_completion_length` scores them like wrong answers,
which punishes sound reasoning that was merely long; DAPO instead adds a length term that is 0 up
to `L_max - L_cache` tokens, falls linearly to -1 over the last `L_cache` tokens, and is -1 beyond.
The reward itself is TRL's (`trl.rewards.get_soft_overlong_punishment`), not a copy: here it is only
registered, and its two lengths come from the recipe:

* `L_max` = `max_completion_length` (the generation cap, as in DAPO where it is the maximum
  response length: 20,480 in DAPO and "Beyond the 80/20 Rule");
* `L_cache` = `overlong_buffer_length` (DAPO: 4,096, so the penalty starts after 16,384 tokens).

Recipes use it beside the task reward: `reward_funcs: [math, soft_overlong_punishment]`. DAPO adds
it to a -1/+1 accuracy reward; `math` scores 0/1, so `reward_weights: [1.0, 0.5]` keeps DAPO's
ratio (a + 0.5 l = (2a - 1 + l + 1) / 2: the same advantages after GRPO's group normalisation).

`rl train` and its dry run build the reward from the recipe (`configure`, rewards/registry.py);
the registered function is the same reward at DAPO's lengths (20,480 and 4,096). Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rewards.registry import register_reward
from rl.errors import UserError

__all__ = ["DAPO_BUFFER_LENGTH", "DAPO_MAX_LENGTH", "configure_overlong", "overlong_summary",
           "soft_overlong_punishment_reward"]

DAPO_MAX_LENGTH = 20_480  # DAPO's maximum response length (L_max)
DAPO_BUFFER_LENGTH = 4_096  # DAPO's soft punishment interval (L_cache)
NAME = "soft_overlong_punishment"  # TRL logs it as `soft_overlong_punishment_reward`


def _trl_punishment(max_length: int, buffer_length: int) -> Callable[..., list]:
    from trl.rewards import get_soft_overlong_punishment  # trl imports lazily (no torch), only when used

    return get_soft_overlong_punishment(max_completion_len=max_length, soft_punish_cache=buffer_length)


def overlong_lengths(settings: Any) -> tuple[int, int]:
    """(L_max, L_cache) from a parsed recipe; UserError naming the field when they cannot shape anything."""
    buffer_length = getattr(settings, "overlong_buffer_length", None)
    max_length = getattr(settings, "max_completion_length", None)
    if buffer_length is None:
        raise UserError(f"overlong_buffer_length: reward `{NAME}` needs it: the last this-many tokens before "
                        f"max_completion_length are penalised from 0 down to -1 (DAPO: {DAPO_BUFFER_LENGTH} at "
                        f"max_completion_length {DAPO_MAX_LENGTH})")
    if isinstance(buffer_length, bool) or not isinstance(buffer_length, int) or buffer_length < 1:
        raise UserError(f"overlong_buffer_length: must be a whole number of tokens >= 1, got {buffer_length!r}")
    if not isinstance(max_length, int) or max_length < 1:
        raise UserError(f"max_completion_length: reward `{NAME}` needs a positive completion length, got {max_length!r}")
    if buffer_length >= max_length:
        raise UserError(f"overlong_buffer_length: {buffer_length} must be below max_completion_length ({max_length}): "
                        f"reward `{NAME}` would penalise every completion from its first token (DAPO: "
                        f"{DAPO_BUFFER_LENGTH} at {DAPO_MAX_LENGTH})")
    return max_length, buffer_length


def configure_overlong(settings: Any) -> Callable[..., list]:
    """TRL's soft overlong punishment with the recipe's lengths (rewards/registry.py `configure`)."""
    func = _trl_punishment(*overlong_lengths(settings))
    func.__wrapped__ = soft_overlong_punishment_reward  # spec_of finds the registration through it
    return func


def overlong_summary(settings: Any, names) -> str:
    """One dry-run line: where the overlong penalty applies (when the recipe uses it) and what
    `mask_truncated_completions` does with truncated completions."""
    mask = bool(getattr(settings, "mask_truncated_completions", False))
    masked = ("mask_truncated_completions true: truncated completions are left out of the loss" if mask else
              "mask_truncated_completions false: truncated completions stay in the loss")
    if NAME not in (names or []):
        return f"no `{NAME}` reward; {masked}"
    try:
        max_length, buffer_length = overlong_lengths(settings)
    except UserError:
        return masked  # the reward check reports the field
    start = max_length - buffer_length
    return (f"`{NAME}` 0 up to {start:,} tokens, linear to -1 at {max_length:,} (overlong_buffer_length "
            f"{buffer_length:,}); {masked}")


@register_reward(NAME, configure=configure_overlong, example_row={})
def soft_overlong_punishment_reward(completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
    """TRL's soft overlong punishment at DAPO's lengths (L_max 20,480, L_cache 4,096) on each completion's
    token count; `rl train` uses the recipe's lengths instead (`configure_overlong`)."""
    return _trl_punishment(DAPO_MAX_LENGTH, DAPO_BUFFER_LENGTH)(completion_ids)
