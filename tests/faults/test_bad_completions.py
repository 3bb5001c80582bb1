"""Model output is untrusted: every registered reward scores hostile completions (never raises, never
hangs, never evaluates them) in both plain-text and conversational form."""

from __future__ import annotations

import math
import time

import pytest

from rewards import REWARD_FUNCS

COMPLETIONS = {
    "empty": "",
    "whitespace": " \n\t\r ",
    "huge-5mb": "a" * 5_000_000 + "\\boxed{ world}",
    "huge-open-braces": "{" * 1_000_000 + "\\boxed{ world}",
    "unbalanced-open": "\\boxed{ world",
    "unbalanced-close": "}}}} \\boxed{ world}}}}",
    "unbalanced-mixed": "\\boxed{\\frac{1}{2} \\boxed{ world",
    "nested-boxes": "\\boxed{\\boxed{\\boxed{ world}}}",
    "deeply-nested": "\\boxed{" * 100_000 + " world" + "}" * 100_000,
    "many-boxes": "\\boxed{ world}" * 100_000,
    "empty-box": "\\boxed{}",
    "box-in-think-only": "<think>\\boxed{ world}</think> no answer",
    "control-chars": "\x00\x01\x07\x08\x1b[31m\\boxed{\x00 world\x7f}\u202e\ufeff",
    "lone-surrogate": "\\boxed{\ud800 world}",
    "non-bmp": "\\boxed{ 🌍🌍}" + "\U0010ffff",
    "latex-bomb": "\\boxed{" + "\\frac{1}{" * 2_000 + "2" + "}" * 2_000 + "}",
    "huge-answer": "\\boxed{" + "9" * 100_000 + "}",
    "python-code": "\\boxed{__import__('os').system('touch /tmp/rl_pwned')}",
    "format-string": "\\boxed{{0.__class__}} {context} %s %n",
    "power-tower": "\\boxed{9^{9^{9^{9^{9}}}}}",
}
SLOW_FOR_MATH = {"power-tower", "latex-bomb", "huge-answer"}  # math-verify's own timeouts bound these


def _call(func, completion):
    return func(prompts=["p"], completions=[completion], completion_ids=[[1, 2]], continuation=[" world"],
                boundaries=[[6]], solution=["42"], doc_id=["d"], trainer_state=None)


@pytest.mark.parametrize("reward", sorted(REWARD_FUNCS))
@pytest.mark.parametrize("case", sorted(COMPLETIONS))
def test_hostile_completion_is_scored(reward, case, tmp_path):
    if reward == "math" and case in SLOW_FOR_MATH:
        pytest.skip("covered by test_math_reward_time_is_bounded")
    func = REWARD_FUNCS[reward]
    text = COMPLETIONS[case]
    for completion in (text, [{"role": "assistant", "content": text}]):
        start = time.perf_counter()
        out = _call(func, completion)
        elapsed = time.perf_counter() - start
        assert isinstance(out, list) and len(out) == 1
        assert out[0] is None or (isinstance(out[0], float) and math.isfinite(out[0]) and 0.0 <= out[0] <= 1.0)
        assert elapsed < 3.0, f"{reward} took {elapsed:.1f}s on {case}"


@pytest.mark.parametrize("case", sorted(SLOW_FOR_MATH))
def test_math_reward_time_is_bounded(case):
    start = time.perf_counter()
    out = _call(REWARD_FUNCS["math"], COMPLETIONS[case])
    assert len(out) == 1 and (out[0] is None or math.isfinite(out[0]))
    assert time.perf_counter() - start < 15


def test_expected_scores_on_edge_cases():
    rpt = REWARD_FUNCS["rpt"]
    score = {case: _call(rpt, text)[0] for case, text in COMPLETIONS.items()}
    assert score["huge-5mb"] == 1.0 and score["huge-open-braces"] == 1.0  # the box after the noise still counts
    assert score["nested-boxes"] == 0.0  # outermost box wins: "\boxed{\boxed{ world}}" is not " world"
    assert score["unbalanced-close"] == 1.0 and score["unbalanced-open"] == 0.0
    assert score["box-in-think-only"] == 0.0 and score["empty-box"] == 0.0
    assert score["many-boxes"] == 1.0


@pytest.mark.parametrize("weird", [None, 42, 3.5, {"content": "\\boxed{ world}"}, [1, 2], [{"role": "user"}],
                                   [{"role": "assistant", "content": None}],
                                   [{"role": "assistant", "content": [{"type": "text", "text": None}]}],
                                   [{"role": "assistant", "content": [{"type": "image"}, "x"]}], b"\\boxed{ world}"])
@pytest.mark.parametrize("reward", sorted(REWARD_FUNCS))
def test_non_text_completion_is_scored(reward, weird):
    out = _call(REWARD_FUNCS[reward], weird)
    assert len(out) == 1 and (out[0] is None or math.isfinite(out[0]))


def test_completions_are_never_executed():
    from pathlib import Path

    marker = Path("/tmp/rl_pwned")
    marker.unlink(missing_ok=True)
    for func in REWARD_FUNCS.values():
        _call(func, COMPLETIONS["python-code"])
    assert not marker.exists()
