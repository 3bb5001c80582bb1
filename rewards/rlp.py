"""RLP's information-gain reward ("RLP: Reinforcement as a Pretraining Objective", arXiv 2510.01265).

    r(c_t) = log p_theta(x_t | x_<t, c_t) - log p_teacher(x_t | x_<t)

A completion is a thought c_t about what comes after the row's `context`. The reward scores the
true next token(s) x_t (from the row's `continuation` and `boundaries`, as `rl data rpt` / `rl data
rlp` write them) teacher-forced after: the context and the open delimiter (the prompt's ids as TRL
tokenized them for the sampler, BOS included where the tokenizer adds one), the thought (the sampler's
own ids where they decode to it), the close delimiter (always appended: a thought that ran out of
tokens before writing it gets it, and a thought that wrote it is cut there), minus the same tokens'
log-prob under the teacher without a thought (rl/train/rlp_teacher.py: ema | base | none). Chat
rows are scored in the same plain-text frame, not in the chat template the sampler saw. Number of
scored tokens: `rlp_next_tokens` (default 1, the paper's); with more, the log-probs of the first k
tokens are summed.

The reward needs the policy, so it cannot be a pure function of text: the trainer
(rl/train/rlp_trainer.py, mixed into EntropyGRPOTrainer) binds a scorer around TRL's reward
call (`bind_scorer`), and the reward hands it the rows. Called without a bound scorer (plain TRL,
the registry contract test) it scores every row None and warns once.

This module holds only the text side (delimiters, prompts, thought parsing) and stays torch-free.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from rewards.registry import register_reward
from rewards.rpt import completion_text

logger = logging.getLogger(__name__)

__all__ = ["CHAT_PROMPT", "THINK_CLOSE", "THINK_OPEN", "bind_scorer", "current_scorer", "rlp_prompt",
           "rlp_reward", "split_thought"]

#: Delimiters of a thought in the scored sequence: context + THINK_OPEN + thought + THINK_CLOSE + x_t.
THINK_OPEN = " <think>"
THINK_CLOSE = "</think>"

#: The thought prompt for chat models (one user message). Base models get the raw context followed by
#: THINK_OPEN as a plain string, so the thought is a literal continuation of the scored sequence.
CHAT_PROMPT = (
    "Here is the beginning of a text. Think briefly about what the very next word is likely to be, "
    "using the meaning and style of the text. Write only your thinking and end it with " + THINK_CLOSE + ".\n\n"
    "Text:\n{context}"
)

_scorers: list = []
_warned = [False]


def rlp_prompt(context: str, use_chat: bool, template: str | None = None):
    """The row's `prompt` for an RLP row: chat models get one user message (`template` with a
    `{context}` placeholder, default CHAT_PROMPT); base models the context followed by THINK_OPEN."""
    if use_chat:
        return [{"role": "user", "content": (template or CHAT_PROMPT).replace("{context}", context)}]
    return context + THINK_OPEN


def split_thought(text: str) -> tuple[str, bool]:
    """(thought, closed): the completion's text up to its first THINK_CLOSE (closed=True), else the
    whole text (closed=False: truncated, the scorer appends the delimiter). A leading THINK_OPEN
    that chat models like to write is dropped."""
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN.strip()):
        text = stripped[len(THINK_OPEN.strip()):]
    cut = text.find(THINK_CLOSE)
    if cut < 0:
        return text, False
    return text[:cut], True


@contextlib.contextmanager
def bind_scorer(scorer):
    """Make `scorer` (rl/train/rlp_trainer.py `RLPScorer`) the one `rlp_reward` uses inside the block."""
    _scorers.append(scorer)
    try:
        yield scorer
    finally:
        _scorers.pop()


def current_scorer():
    return _scorers[-1] if _scorers else None


@register_reward(
    "rlp",
    required_columns=("context", "continuation", "boundaries"),
    example_row={"context": "The cat sat", "continuation": " on the mat", "boundaries": [3, 7, 11]},
    needs_policy=True,
    bind_scorer=bind_scorer,
    teacher=True,
)
def rlp_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    completion_ids: Sequence[Sequence[int]] | None = None,
    context: Sequence[str] | None = None,
    continuation: Sequence[str] | None = None,
    boundaries: Sequence[Sequence[int]] | None = None,
    **kwargs,
) -> list[float | None]:
    """Information gain (nats) of each thought about the row's true next token(s); None for rows
    missing a column, and for every row when no trainer bound a scorer."""
    n = len(completions)
    scorer = current_scorer()
    if scorer is None:
        if not _warned[0]:
            _warned[0] = True
            logger.warning("rlp reward: no policy scorer bound (use `rl train` / EntropyGRPOTrainer); scoring None")
        return [None] * n
    texts = [completion_text(c) for c in completions]
    thoughts = [split_thought(t) if isinstance(t, str) else None for t in texts]
    columns = [c if c is not None else [None] * n for c in (context, continuation, boundaries)]
    ids = completion_ids if completion_ids is not None else [None] * n
    return scorer.information_gain(thoughts, ids, *columns)
