"""Reinforcement Pre-Training (RPT) reward: prefix matching on token boundaries.

RPT (Dong et al., arXiv 2506.08007) turns next-token prediction into an RL task: the policy
reads a context, reasons, and writes its guess for what comes next inside `\\boxed{...}`.
Eq. 3 of the paper rewards the guess with 1 iff its bytes are a prefix of the ground-truth
continuation *and* that prefix ends exactly where one of the ground-truth tokens ends:

    r = 1  if  bytes(y) == bytes(continuation)[:len(bytes(y))]  and  len(bytes(y)) in boundaries
    r = 0  otherwise

`boundaries` are cumulative UTF-8 byte offsets of the ground-truth token ends (built by
rl/data/boundaries.py from the document's own tokenization), so predicting one token, or several
whole tokens, is rewarded, while stopping inside a token is not. Bytes are compared verbatim:
nothing is stripped, so a leading space is part of a token (`" para"` is not `"para"`).

Two prompt formats (the `rpt_format` column of each row, set by `rl data rpt --format`):

* `reasoning` (the paper's): the model reasons and answers in `\\boxed{}`; `rpt_reward` scores the
  box with Eq. 3 verbatim. For reasoning / instruction-following models.
* `completion`: the prompt is the raw context and the completion itself is the guess (for base
  models and small chat models: SmolLM2-135M-Instruct's top-1 is right at 41% of high-entropy
  positions on the raw context but 6% under the instruction prompt, where it almost never boxes).
  `rpt_completion_reward` scores the completion's bytes with the same core (`rewarded_prefix_bytes`).
  The completion's length is the generation budget (`max_completion_length`), not a choice the
  model makes, so Eq. 3's "stop on a boundary" is read as "the completion's first whole tokens are
  right": the completion is cut at the longest ground-truth token boundary up to which it matches,
  and earns 1 when that cut keeps at least one token. A completion right for two tokens and then
  wrong earns 1 (Eq. 3 verbatim would give 0: it rewards only a guess that ends on a boundary); one
  that stops inside the first token, or whose first token is wrong, earns 0. With 1-token
  completions both readings are the same. `rpt_completion_exact_reward` keeps Eq. 3 verbatim on
  the whole completion for those who want the paper's rule at any length.

A reward used on rows of the other format raises a one-line `UserError` (never a silent 0).

The completion's text must be what the model wrote. TRL 1.16 decodes a completion alone, which with
a SentencePiece-style tokenizer (Llama-2, Mistral) drops its first token's leading space (`▁on`
decodes alone to "on") and with `clean_up_tokenization_spaces` turns " ." into ".": every right
completion-format guess would pay 0. `EntropyGRPOTrainer` (and the signal check, `rl prune
--sample`) hand rewards a plain-text prompt's completion as the text it adds after the prompt, and
chat content without the clean-up (rl/signal/decoding.py); under a plain TRL `GRPOTrainer` these
rewards see TRL's decode.

This module is pure Python on purpose (no torch, nothing from rl.train.trainer): it is imported by the
trainer, by the data tools and by tests, and must stay cheap and side-effect free.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from numbers import Integral
from typing import Any

from rewards.registry import register_reward
from rl.errors import UserError

__all__ = [
    "FORMATS",
    "check_rpt_dataset",
    "completion_text",
    "extract_prediction",
    "prefix_match_reward",
    "rewarded_prefix_bytes",
    "rpt_completion_exact_reward",
    "rpt_completion_reward",
    "rpt_reward",
]

FORMATS = ("reasoning", "completion")

_THINK_END = "</think>"
_BOX_OPEN = "\\boxed{"
# One scan finds box openings and every brace; the box's own "{" is the last char of its match.
_BOX_OR_BRACE = re.compile(r"\\boxed\{|[{}]")


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of `text`; lone surrogates (possible in JSON data) are encoded, never raised on."""
    return text.encode("utf-8", "surrogatepass")


def extract_prediction(text: str) -> str | None:
    """Return the content of the model's final `\\boxed{...}` answer, or None when there is none.

    Rule, exactly:
    1. Only the text after the last `</think>` counts; with no `</think>`, the whole text counts.
       (A box inside the reasoning is a draft, not the answer.)
    2. A box opens with the literal characters `\\boxed{` (no space: `\\boxed {x}` is not a box)
       and closes at the brace that balances its `{`. Braces are counted raw, as LaTeX groups:
       `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`. Escaped braces (`\\{`) are counted too, so an
       unbalanced brace can't be expressed inside a box (same as common math answer extractors).
       Braces are matched like parentheses: an extra `}` with nothing open is plain text.
    3. Among the complete (balanced) boxes, the answer is the one whose closing brace comes last.
       That box is never inside another complete box, so this is "the last top-level box":
       `\\boxed{a\\boxed{b}}` gives `a\\boxed{b}`, `\\boxed{a} then \\boxed{b}` gives `b`.
       A box that never closes (a truncated answer) is ignored and doesn't hide anything:
       `\\boxed{a} \\boxed{b` gives `a`, and `\\boxed{b \\boxed{c}` gives `c`.
    4. The content is returned verbatim: nothing is stripped (`\\boxed{ para}` gives `" para"`).
       An empty box gives `""` (which `prefix_match_reward` scores 0).

    Runs in one regex pass plus one step per brace after the first box (linear time, no
    recursion), so huge, unbalanced or deeply nested inputs are fine.
    """
    if not isinstance(text, str):
        return None
    start = text.rfind(_THINK_END)
    start = 0 if start < 0 else start + len(_THINK_END)
    first = text.find(_BOX_OPEN, start)
    if first < 0:
        return None
    # Braces before the first box cannot change how later braces pair up (a stack match of a
    # later "{" only depends on what follows it), so scanning starts at the first box.
    stack: list[int] = []  # content start of each open brace; -1 marks a plain (non-box) brace
    best: tuple[int, int] | None = None
    for match in _BOX_OR_BRACE.finditer(text, first):
        token = match.group()
        if token == "}":
            if stack:
                content_start = stack.pop()
                if content_start >= 0:
                    best = (content_start, match.start())  # closes later than any earlier box
        elif token == "{":
            stack.append(-1)
        else:
            stack.append(match.end())
    if best is None:
        return None
    return text[best[0] : best[1]]


def rewarded_prefix_bytes(prediction: str, continuation: str, boundaries: Sequence[int]) -> int:
    """The Eq. 3 core shared by both formats: the largest ground-truth boundary `b` such that the
    prediction's first `b` bytes equal the continuation's first `b` bytes (0 when even the first
    token is not reproduced).

    `boundaries` are cumulative UTF-8 byte offsets into `continuation` where ground-truth tokens
    end. Eq. 3 (`prefix_match_reward`) asks in addition that the prediction ends exactly there.
    """
    predicted, truth = _utf8(prediction), _utf8(continuation)
    best = 0
    for bound in boundaries:
        if bound > len(predicted) or predicted[:bound] != truth[:bound]:
            break  # boundaries increase: once a prefix differs, every longer one differs too
        best = bound
    return best


def prefix_match_reward(prediction: str | None, continuation: str, boundaries: Sequence[int]) -> float:
    """RPT Eq. 3 for one sample: 1.0 iff the prediction's bytes are a non-empty prefix of the
    continuation's bytes ending exactly on a ground-truth token boundary, else 0.0.

    A None prediction (no box) scores 0.0.
    """
    if prediction is None:
        return 0.0
    size = len(_utf8(prediction))
    if size < 1:
        return 0.0
    return 1.0 if rewarded_prefix_bytes(prediction, continuation, boundaries) == size else 0.0


def completion_prefix_reward(completion: str | None, continuation: str, boundaries: Sequence[int]) -> float:
    """Completion format, one sample: 1.0 iff the completion reproduces at least the first
    ground-truth token (its longest boundary-ending correct prefix is non-empty); see the module doc."""
    if completion is None:
        return 0.0
    return 1.0 if rewarded_prefix_bytes(completion, continuation, boundaries) > 0 else 0.0


def completion_text(completion: Any) -> str | None:
    """The text to score from one TRL completion: a plain string, or the last assistant message
    of a conversational completion (`[{"role": "assistant", "content": ...}]`), whose content may
    be a string or a list of parts (`[{"type": "text", "text": ...}]`, text parts concatenated)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if not isinstance(completion, (list, tuple)):
        return None
    messages = [m for m in completion if isinstance(m, dict)]
    assistant = [m for m in messages if m.get("role") == "assistant"]
    if not assistant:
        return None
    content = assistant[-1].get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return None


def _short(value: Any, limit: int = 60) -> str:
    """repr of a bad value, cut to keep error messages on one short line."""
    text = repr(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


_FIX = "rebuild the data with `rl data rpt` or fix the row"


def _check_row(index: int, continuation: Any, boundaries: Any, source: str = "rpt_reward") -> None:
    """Raise UserError (one line naming the row and the fix) when an RPT row is malformed."""
    where = f"{source}: row {index}"
    if not isinstance(continuation, str):
        raise UserError(f"{where}: `continuation` must be a string, got {_short(continuation)}; {_FIX}")
    if not isinstance(boundaries, (list, tuple)) or not boundaries:
        raise UserError(
            f"{where}: `boundaries` must be a non-empty list of byte offsets, got {_short(boundaries)}; {_FIX}"
        )
    previous = 0
    for value in boundaries:
        if isinstance(value, bool) or not isinstance(value, Integral) or value <= previous:
            raise UserError(
                f"{where}: `boundaries` must be strictly increasing positive integers, got {_short(boundaries)}; {_FIX}"
            )
        previous = value
    size = len(_utf8(continuation))
    if previous > size:
        raise UserError(
            f"{where}: last boundary {previous} is past the end of `continuation` ({size} UTF-8 bytes); {_FIX}"
        )


def _column(name: str, values: Any, count: int, source: str = "rpt_reward") -> list:
    """Check that a dataset column arrived as a list aligned with the completions."""
    if values is None:
        raise UserError(
            f"{source}: the dataset has no `{name}` column; train it on data built by `rl data rpt` "
            "(columns prompt, continuation, boundaries)"
        )
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise UserError(f"{source}: `{name}` must be a list with one entry per completion, got {_short(values)}")
    if len(values) != count:
        raise UserError(
            f"{source}: `{name}` has {len(values)} entries but there are {count} completions; "
            "pass one entry per completion"
        )
    return list(values)


def _check_formats(formats: Any, count: int, expected: str, source: str) -> None:
    """Refuse rows of the other format (one line naming the row and the reward to use instead).

    `formats` is the `rpt_format` column; None (no column, or a row without a value: data made by
    hand or before formats existed) says nothing and is accepted by either reward."""
    if formats is None:
        return
    formats = _column("rpt_format", formats, count, source)
    for index, fmt in enumerate(formats):
        if fmt is None or fmt == expected:
            continue
        if fmt not in FORMATS:
            raise UserError(f"{source}: row {index}: unknown `rpt_format` {_short(fmt)}; expected one of {list(FORMATS)}")
        raise UserError(
            f"{source}: row {index} is {fmt}-format RPT data but this reward scores {expected}-format "
            f"completions; use reward `{_REWARD_FOR_FORMAT[fmt]}` or rebuild the data with `--format {expected}`"
        )


def _score_rows(completions, continuation, boundaries, rpt_format, expected: str, source: str, score) -> list:
    """Shared body of the RPT rewards: check columns, rows and formats, then `score(text, cont, bounds)`."""
    completions = list(completions)
    count = len(completions)
    continuations = _column("continuation", continuation, count, source)
    boundary_lists = _column("boundaries", boundaries, count, source)
    _check_formats(rpt_format, count, expected, source)
    for index, (cont, bounds) in enumerate(zip(continuations, boundary_lists)):
        if cont is None and bounds is None:
            continue
        _check_row(index, cont, bounds, source)
    rewards: list[float | None] = []
    for completion, cont, bounds in zip(completions, continuations, boundary_lists):
        if cont is None and bounds is None:
            rewards.append(None)
            continue
        rewards.append(score(completion_text(completion), cont, bounds))
    return rewards


def _format_checker(expected: str, source: str):
    """The registration's `check_dataset`: `check_rpt_dataset` for rows of the `expected` format."""

    def check(dataset: Any, where: str) -> None:
        check_rpt_dataset(dataset, where, expected=expected, source=source)

    return check


# An RPT row as `rl data rpt` writes it (the columns the rewards read): "the cat sat" continues
# with " on the mat", tokens " on" | " the" | " mat" end at bytes 3, 7, 11.
_EXAMPLE = {"continuation": " on the mat", "boundaries": [3, 7, 11]}


def _registration(name: str, fmt: str, func_name: str):
    return register_reward(name, required_columns=("continuation", "boundaries"),
                           check_dataset=_format_checker(fmt, func_name), rpt_format=fmt,
                           boxed_answer=fmt == "reasoning", example_row={**_EXAMPLE, "rpt_format": fmt})


@_registration("rpt", "reasoning", "rpt_reward")  # reasoning-format rows: the answer in \boxed{} (paper)
def rpt_reward(
    completions: Sequence[Any],
    continuation: Sequence[str] | None = None,
    boundaries: Sequence[Sequence[int]] | None = None,
    rpt_format: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """TRL reward function for reasoning-format RPT: `prefix_match_reward(extract_prediction(c), ...)`.

    TRL calls it as `rpt_reward(prompts=..., completions=..., completion_ids=..., **columns,
    trainer_state=...)`; `continuation`, `boundaries` (and `rpt_format`, when the data has it) are
    dataset columns, one entry per completion. Completions may be plain strings or conversational
    message lists (the last assistant message is scored). A completion with no complete box scores 0.0.

    A row whose `continuation` and `boundaries` are both None is not an RPT row (e.g. a math
    problem in a mixed dataset); it gets None, which TRL reads as "this reward doesn't apply".
    Any other malformed row, or a completion-format row, raises `rl.errors.UserError` naming the
    row and the fix, before anything is scored.
    """

    def score(text, cont, bounds):
        return prefix_match_reward(extract_prediction(text) if text is not None else None, cont, bounds)

    return _score_rows(completions, continuation, boundaries, rpt_format, "reasoning", "rpt_reward", score)


@_registration("rpt_completion", "completion", "rpt_completion_reward")  # the completion is the guess
def rpt_completion_reward(
    completions: Sequence[Any],
    continuation: Sequence[str] | None = None,
    boundaries: Sequence[Sequence[int]] | None = None,
    rpt_format: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """TRL reward function for completion-format RPT: 1.0 when the completion itself starts with
    at least the first ground-truth token (`completion_prefix_reward`; the rule and why: module doc).

    Same columns, None rows and errors as `rpt_reward`; reasoning-format rows are refused.
    """
    return _score_rows(completions, continuation, boundaries, rpt_format, "completion",
                       "rpt_completion_reward", completion_prefix_reward)


@_registration("rpt_completion_exact", "completion", "rpt_completion_exact_reward")  # Eq. 3 verbatim
def rpt_completion_exact_reward(
    completions: Sequence[Any],
    continuation: Sequence[str] | None = None,
    boundaries: Sequence[Sequence[int]] | None = None,
    rpt_format: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """Completion-format RPT with Eq. 3 verbatim on the whole completion: 1.0 only when the
    completion ends exactly on a ground-truth boundary (right for two tokens, then wrong: 0.0)."""
    return _score_rows(completions, continuation, boundaries, rpt_format, "completion",
                       "rpt_completion_exact_reward", prefix_match_reward)


_REWARD_FOR_FORMAT = {"reasoning": "rpt", "completion": "rpt_completion"}


def check_rpt_dataset(dataset: Any, where: str, batch_size: int = 10_000, *, expected: str = "reasoning",
                      source: str = "rpt_reward") -> None:
    """Check every row's `continuation`/`boundaries` (and `rpt_format`) before training (UserError
    naming `where` and the row).

    `dataset` is a `datasets.Dataset` (read in column batches, so it stays cheap for large data).
    Rows where both are None are not RPT rows (mixed data) and pass, as in `rpt_reward`.
    """
    columns = ["continuation", "boundaries"]
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise UserError(
            f"{where}: reward `{source}` needs column(s) {missing}, the dataset has {sorted(dataset.column_names)}; "
            "build RPT data with `rl data rpt` (columns prompt, continuation, boundaries)"
        )
    has_format = "rpt_format" in dataset.column_names
    start = 0
    for batch in dataset.select_columns(columns + (["rpt_format"] if has_format else [])).iter(batch_size=batch_size):
        count = len(batch["continuation"])
        try:
            _check_formats(batch["rpt_format"] if has_format else None, count, expected, f"{where}: {source}")
        except UserError as exc:  # renumber the row to the whole dataset
            raise UserError(_renumber(str(exc), start)) from None
        for offset, (cont, bounds) in enumerate(zip(batch["continuation"], batch["boundaries"])):
            if cont is None and bounds is None:
                continue
            _check_row(start + offset, cont, bounds, source=where)
        start += count


def _renumber(message: str, start: int) -> str:
    """`... row N ...` -> `... row N+start ...` (batch-local row numbers to dataset row numbers)."""
    return re.sub(r"row (\d+)", lambda m: f"row {int(m.group(1)) + start}", message, count=1)
