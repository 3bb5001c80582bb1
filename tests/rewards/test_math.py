"""rewards/math.py: verifiable math-answer reward with math-verify (real answers, real parser)."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("math_verify")

from rewards import get_reward_funcs  # noqa: E402
from rewards.math import DAPO_MATH_PROMPT, dapo_math_prompt, extract_math_answer, math_reward  # noqa: E402
from rl.errors import UserError  # noqa: E402
from rewards.registry import required_columns  # noqa: E402


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    "completion, gold",
    [
        (r"Half of one is \boxed{0.5}.", r"\frac{1}{2}"),
        (r"So $x = \boxed{\frac{1}{2}}$", "0.5"),
        (r"\boxed{\dfrac12}", r"\frac{1}{2}"),
        (r"The diagonal is \boxed{\sqrt{8}}", r"2\sqrt{2}"),
        (r"\boxed{2\sqrt{2}}", r"\sqrt{8}"),
        (r"\boxed{x = 3}", "3"),
        (r"\boxed{(x+1)^2}", "x^2+2x+1"),
        (r"\boxed{\{2, 1\}}", r"\{1,2\}"),
        (r"\boxed{1,000}", "1000"),
        (r"\boxed{10\%}", "0.1"),
        (r"\boxed{90^\circ}", "90"),
        (r"\boxed{\frac{\pi}{2}}", r"\pi/2"),
        ("Working...\nAnswer: 42", "42"),  # the DAPO prompt's format
        ("Working...\n**Answer:** $\\frac{3}{4}$.", "0.75"),
        ("Answer: 7\nthen I changed my mind\nAnswer: 12", "12"),  # the last Answer line counts
    ],
)
def test_equivalent_answers_score_one(completion, gold):
    assert math_reward([completion], [gold]) == [1.0]


@pytest.mark.parametrize(
    "completion, gold",
    [
        (r"\boxed{41}", "42"),
        (r"\boxed{\frac{1}{3}}", r"\frac{1}{2}"),
        (r"\boxed{\sqrt{7}}", r"2\sqrt{2}"),
        ("I think it is 42 but I won't box it.", "42"),  # no box, no Answer line
        (r"\boxed{42", "42"),  # never closed: no answer
        ("", "42"),
        (r"\boxed{}", "42"),
        (r"<think>maybe \boxed{42}</think> so the answer is \boxed{41}", "42"),  # last box after </think>
        (r"<think>it is \boxed{42}</think> I am not sure.", "42"),  # a box inside the reasoning is a draft
        (r"\boxed{a} then \boxed{b}", "a"),  # last top-level box only
    ],
)
def test_wrong_or_missing_answers_score_zero(completion, gold):
    assert math_reward([completion], [gold]) == [0.0]


def test_conversational_completions_and_think_blocks():
    completions = [
        chat(r"<think>draft \boxed{1}</think>The answer is \boxed{\frac{1}{2}}."),
        chat(r"<think>long thought</think>Answer: 0.5"),
        [{"role": "assistant", "content": [{"type": "text", "text": r"so \boxed{"}, {"type": "text", "text": "0.5}"}]}],
        chat("no answer at all"),
    ]
    assert math_reward(completions, ["0.5"] * 4) == [1.0, 1.0, 1.0, 0.0]


def test_gold_may_be_a_worked_solution_with_a_box():
    gold = r"We add them: $1+1=2$, so the answer is $\boxed{2}$."
    assert math_reward([r"\boxed{2}", r"\boxed{3}"], [gold, gold]) == [1.0, 0.0]


def test_unparseable_or_missing_gold_gives_none_not_zero(caplog):
    rewards = math_reward([r"\boxed{1}"] * 3, [None, "", r"\boxed{"])
    assert rewards == [None, None, None]
    assert "no parseable gold answer" in caplog.text


def test_numeric_gold_values_are_accepted():
    assert math_reward([r"\boxed{42}", r"\boxed{0.25}"], [42, 0.25]) == [1.0, 1.0]


def test_model_output_never_raises():
    weird = [None, 12, {"role": "assistant"}, [{"role": "user", "content": "x"}], "\\boxed{" * 5000,
             r"\boxed{" + "9" * 5000 + "}", r"\boxed{\frac{1}{0}}", r"\boxed{\\\\\\}", "Answer: }}}{{{"]
    rewards = math_reward(weird, ["1"] * len(weird))
    assert rewards == [0.0] * len(weird)


def test_works_off_the_main_thread():
    out = []
    thread = threading.Thread(target=lambda: out.append(math_reward([r"\boxed{0.5}", "x"], [r"\frac12", "1"])))
    thread.start()
    thread.join()
    assert out == [[1.0, 0.0]]


def test_missing_math_verify_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "math_verify", None)  # import fails as if not installed
    with pytest.raises(UserError, match="pip install 'math-verify"):
        math_reward([r"\boxed{1}"], ["1"])


def test_bad_solution_column_is_a_user_error():
    with pytest.raises(UserError, match="no `solution` column"):
        math_reward(["x"], None)
    with pytest.raises(UserError, match="2 entries but there are 1"):
        math_reward(["x"], ["1", "2"])


def test_extract_math_answer_rules():
    assert extract_math_answer(r"so \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert extract_math_answer("reasoning\nAnswer: $5$.") == "5"
    assert extract_math_answer("<think>Answer: 3</think>\nAnswer: 4") == "4"
    assert extract_math_answer("<think>Answer: 3</think> nothing") is None
    assert extract_math_answer("The answer: is unclear") is None  # not at the start of a line
    assert extract_math_answer(None) is None


def test_registry_signature_and_prompt():
    (func,) = get_reward_funcs(["math"])
    assert func is math_reward and func.__name__ == "math_reward"
    assert required_columns([func]) == {"math_reward": ["solution"]}
    prompt = dapo_math_prompt("What is {x} if x = 2?")
    assert prompt.startswith("Solve the following math problem step by step.")
    assert "What is {x} if x = 2?" in prompt and 'after "Answer:".' in prompt
    assert DAPO_MATH_PROMPT.count("{problem}") == 1


def test_trl_style_call_with_extra_columns():
    rewards = math_reward(prompts=["p", "p"], completions=[chat(r"\boxed{4}"), chat(r"\boxed{5}")],
                          completion_ids=[[1], [2]], solution=["4", "4"], trainer_state=None,
                          log_extra=lambda *a: None, log_metric=lambda *a: None, level=["easy", "easy"])
    assert rewards == [1.0, 0.0]
