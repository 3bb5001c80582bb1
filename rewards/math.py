"""Verifiable math-answer reward (RLVR), checked with Hugging Face's `math-verify`.

`math_reward(completions, solution, **kwargs) -> list[float | None]` has TRL's reward signature. The
dataset needs two columns:

* `prompt`: the problem as the model sees it (a string or chat messages). The math recipes use the
  DAPO prompt below, which is what DAPO-Math-17k stores and what "Beyond the 80/20 Rule"
  (arXiv 2506.01939) trained on.
* `solution`: the gold answer of the row, either bare (`\\frac{1}{2}`, `0.5`, `(1, 2)`, `x=3`) or a
  worked solution whose last `\\boxed{...}` holds it. Same column name as TRL's `accuracy_reward`.

The model's answer, exactly:
1. Only the text after the last `</think>` counts (the whole text when there is none).
2. The last top-level `\\boxed{...}` in it (`rewards.rpt.extract_prediction`, same rule as RPT);
   with no complete box, the last line of the form `Answer: ...` (the DAPO prompt's format,
   `**Answer:**` and leading spaces allowed). Surrounding `$` and a trailing period are dropped.
3. Gold and answer are both parsed as `\\boxed{...}` by math-verify and compared with
   `math_verify.verify(gold, answer)`: numbers, fractions, radicals, sets, intervals, equations
   (`x=3` vs `3`), percentages and units are compared mathematically, not as strings.

Scores: 1.0 when they match; 0.0 for a wrong answer, no answer, an answer that does not parse, a
parse or verify timeout, an answer longer than `MAX_ANSWER_CHARS`, or any error raised while
reading the model's output (model output never raises). A row whose gold answer is missing or
does not parse gets None (TRL: "this reward does not apply"), with one warning per call: that is
a data problem, and scoring every completion 0 would hide it. Rewards are 0/1 where DAPO uses
-1/+1; with TRL's group-normalised advantages (`scale_rewards: group`) the two are identical.

Timeouts: math-verify bounds parse/verify time with `signal.alarm`, which only works in the main
thread (where TRL calls rewards). In any other thread timeouts are off, as in TRL's own
`accuracy_reward`, and the answer-length cap is what keeps sympy from running away.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

from rewards.registry import register_reward
from rewards.rpt import completion_text, extract_prediction
from rl.errors import UserError

__all__ = ["DAPO_MATH_PROMPT", "MAX_ANSWER_CHARS", "check_gold_answers", "dapo_math_prompt", "extract_math_answer",
           "math_reward"]

logger = logging.getLogger(__name__)

# The instruction of DAPO-Math-17k (Yu et al., arXiv 2503.14476; dataset BytedTsinghua-SIA/DAPO-Math-17k),
# which "Beyond the 80/20 Rule" trains on. `{problem}` is replaced verbatim (plain replace, not format:
# problems are full of braces).
DAPO_MATH_PROMPT = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
    "{problem}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)

MAX_ANSWER_CHARS = 1000  # longer "answers" score 0 without parsing (sympy can take very long on them)
_PARSE_TIMEOUT_S = 5
_VERIFY_TIMEOUT_S = 5
_THINK_END = "</think>"
_ANSWER_LINE = re.compile(r"(?im)^[^\S\n]*(?:\*\*|__)?answer(?:\*\*|__)?[^\S\n]*[:：](?:\*\*|__)?[^\S\n]*(.*?)[^\S\n]*$")


def dapo_math_prompt(problem: str) -> str:
    """The DAPO instruction around `problem` (use as the `prompt` column, or inside a user message)."""
    return DAPO_MATH_PROMPT.replace("{problem}", problem)


def _drop_period(answer: str) -> str:
    if answer.endswith(".") and not answer[:-1].rstrip().endswith("\\"):
        return answer[:-1].rstrip()
    return answer


def _clean(answer: str) -> str:
    """Drop surrounding `$...$` and a trailing sentence period (`$5$.` -> `5`)."""
    answer = _drop_period(answer.strip())
    while len(answer) >= 2 and answer[0] == "$" and answer[-1] == "$":
        answer = answer[1:-1].strip()
    return _drop_period(answer)


def extract_math_answer(text: str | None) -> str | None:
    """The model's final answer (see the module docstring, rules 1-2), or None when there is none."""
    if not isinstance(text, str):
        return None
    boxed = extract_prediction(text)
    if boxed is not None:
        answer = _clean(boxed)
        return answer or None
    cut = text.rfind(_THINK_END)
    tail = text if cut < 0 else text[cut + len(_THINK_END):]
    lines = _ANSWER_LINE.findall(tail)
    if not lines:
        return None
    return _clean(lines[-1]) or None


def _require_math_verify() -> None:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        raise UserError("math_reward needs the math-verify package: pip install 'math-verify>=0.9'") from None


def _timeouts() -> tuple[int | None, int | None]:
    if threading.current_thread() is threading.main_thread():
        return _PARSE_TIMEOUT_S, _VERIFY_TIMEOUT_S
    return None, None


def _parse_boxed(answer: str, parse_timeout: int | None):
    from math_verify import parse

    return parse("\\boxed{" + answer + "}", parsing_timeout=parse_timeout)


def _gold(solution: Any, parse_timeout: int | None):
    """Parsed gold answer, or None when the row has no usable gold answer."""
    if solution is None or isinstance(solution, bool):
        return None
    text = str(solution).strip()
    if not text:
        return None
    if "\\boxed" in text:
        boxed = extract_prediction(text)
        if boxed is None:
            return None
        text = boxed
    text = _clean(text)
    if not text or len(text) > MAX_ANSWER_CHARS:
        return None
    try:
        parsed = _parse_boxed(text, parse_timeout)
    except Exception:  # noqa: BLE001 - math-verify/sympy raise many types (incl. its TimeoutException)
        return None
    return parsed or None


def _score(gold, completion: Any, parse_timeout: int | None, verify_timeout: int | None) -> float:
    from math_verify import verify

    try:
        answer = extract_math_answer(completion_text(completion))
        if answer is None or len(answer) > MAX_ANSWER_CHARS:
            return 0.0
        parsed = _parse_boxed(answer, parse_timeout)
        if not parsed:
            return 0.0
        return 1.0 if verify(gold, parsed, timeout_seconds=verify_timeout) else 0.0
    except Exception:  # noqa: BLE001 - a model's output must never crash training
        return 0.0


def check_gold_answers(rows: list[dict]) -> list[tuple[str, str]]:
    """Dry-run probe: how many of the first rows have a gold `solution` math-verify can parse
    (none: a problem, math_reward would skip every row; some: a note)."""
    if not rows or "solution" not in rows[0]:
        return []
    bad = [i for i, row in enumerate(rows) if _gold(row.get("solution"), 5) is None]
    if len(bad) == len(rows):
        return [("problem", f"solution: none of the first {len(rows)} gold answers parses with math-verify "
                            f"(row 0: {str(rows[0].get('solution'))[:60]!r}); math_reward would skip every row")]
    if bad:
        return [("note", f"solution: {len(bad)} of the first {len(rows)} gold answers do not parse (rows {bad[:5]}); "
                         "math_reward skips such rows")]
    return []


@register_reward("math", probe=check_gold_answers, boxed_answer=True, example_row={"solution": "\\frac{1}{2}"})
def math_reward(completions: Sequence[Any], solution: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """TRL reward: 1.0 when the completion's final answer equals the row's `solution`, else 0.0.

    `completions` are strings or conversational message lists (the last assistant message is
    scored); `solution` is the dataset column, one gold answer per completion. None for rows whose
    gold answer is missing or unparseable. See the module docstring for the exact rules.
    """
    _require_math_verify()
    completions = list(completions)
    if solution is None:
        raise UserError("math_reward: the dataset has no `solution` column (the gold answer of each problem)")
    if isinstance(solution, (str, bytes)) or not isinstance(solution, Sequence):
        raise UserError("math_reward: `solution` must be a list with one gold answer per completion")
    solutions = list(solution)
    if len(solutions) != len(completions):
        raise UserError(
            f"math_reward: `solution` has {len(solutions)} entries but there are {len(completions)} completions"
        )
    parse_timeout, verify_timeout = _timeouts()
    golds: dict[str, Any] = {}
    rewards: list[float | None] = []
    bad_gold: list[str] = []
    for completion, sol in zip(completions, solutions):
        key = repr(sol)
        if key not in golds:
            golds[key] = _gold(sol, parse_timeout)
        gold = golds[key]
        if gold is None:
            rewards.append(None)
            bad_gold.append(key)
            continue
        rewards.append(_score(gold, completion, parse_timeout, verify_timeout))
    if bad_gold:
        logger.warning(
            "math_reward: %d of %d rows have no parseable gold answer in `solution` (e.g. %s); they get no reward",
            len(bad_gold), len(solutions), bad_gold[0][:80],
        )
    return rewards


math_reward.__name__ = "math_reward"  # TRL logs each reward under its function's __name__
