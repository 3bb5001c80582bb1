"""Tests for the RPT reward (rewards/rpt.py): box extraction, Eq. 3 prefix matching, TRL form."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rewards.rpt import extract_prediction, prefix_match_reward, rpt_reward
from rl.errors import UserError

# The paper's kind of example: ground-truth tokens " para", "graph", " is".
CONT = " paragraph is"
BOUNDS = [5, 10, 13]


def boxed(text: str, think: str = "") -> str:
    return f"{think}Answer: \\boxed{{{text}}}"


# ---------------------------------------------------------------- prefix_match_reward (Eq. 3)


@pytest.mark.parametrize(
    "prediction, expected",
    [
        (" para", 1.0),  # first token, with its leading space
        (" paragraph", 1.0),  # two whole tokens
        (" paragraph is", 1.0),  # the whole continuation
        (" par", 0.0),  # stops inside a token
        ("para", 0.0),  # leading space missing: not a prefix
        (" paragraph i", 0.0),  # stops inside the last token
        (" paragraph is!", 0.0),  # longer than the continuation
        (" Para", 0.0),  # right length, wrong bytes
        ("", 0.0),  # empty prediction is never rewarded
        (None, 0.0),  # no box at all
    ],
)
def test_prefix_match_paper_examples(prediction, expected):
    assert prefix_match_reward(prediction, CONT, BOUNDS) == expected


def test_prefix_match_counts_utf8_bytes_not_characters():
    # "ü" is 2 bytes: tokens " ü" (3 bytes) and "ber" end at bytes 3 and 6.
    assert prefix_match_reward(" ü", " über", [3, 6]) == 1.0
    assert prefix_match_reward(" über", " über", [3, 6]) == 1.0
    # 2 characters but 3 bytes: a character-count comparison would get these wrong.
    assert prefix_match_reward(" üb", " über", [3, 6]) == 0.0
    assert prefix_match_reward("你", "你好", [3, 6]) == 1.0
    assert prefix_match_reward("你", "你好", [6]) == 0.0


def test_prefix_match_operator_token_with_space():
    assert prefix_match_reward(" =", " = 2", [2, 4]) == 1.0
    assert prefix_match_reward("=", " = 2", [2, 4]) == 0.0


# ---------------------------------------------------------------- extract_prediction


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\\boxed{ para}", " para"),  # nothing stripped
        ("so \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{a} then \\boxed{b}", "b"),  # last box wins
        ("\\boxed{a\\boxed{b}}", "a\\boxed{b}"),  # outermost of nested boxes
        ("\\boxed{x\\boxed{y}} and \\boxed{z\\boxed{w}}", "z\\boxed{w}"),
        ("\\boxed{a} \\boxed{b", "a"),  # truncated last box is ignored
        ("\\boxed{b \\boxed{c}", "c"),  # the unclosed outer box contains nothing complete
        ("\\boxed{a}}", "a"),  # an extra close brace is plain text
        ("{{{ \\boxed{a}", "a"),  # unbalanced braces before the box don't matter
        ("\\boxed{}", ""),  # empty box: empty string (scores 0)
        ("\\boxed {x}", None),  # a space after \boxed: not a box
        ("\\boxed{x", None),  # never closes
        ("\\boxed", None),
        ("no box here", None),
        ("", None),
        ("\\boxed{\x00\x07\n\t}", "\x00\x07\n\t"),  # control characters are content
        ("\\boxed{\\{1\\}}", "\\{1\\}"),  # escaped braces counted raw (balanced here)
        ("\\fbox{a} \\boxed{b}", "b"),
    ],
)
def test_extract_prediction_box_rules(text, expected):
    assert extract_prediction(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>maybe \\boxed{a}</think> final \\boxed{b}", "b"),
        ("<think>maybe \\boxed{a}</think> no final answer", None),  # drafts in reasoning don't count
        ("<think>x</think>\\boxed{a}</think>\\boxed{b}", "b"),  # the LAST </think> counts
        ("<think>x</think>\\boxed{a}</think>", None),
        ("\\boxed{a</think>}", None),  # </think> inside a box still splits
        ("<think>no close tag \\boxed{a}", "a"),  # no </think>: the whole text
        ("\\boxed{a} </think>\\boxed{", None),
    ],
)
def test_extract_prediction_think_rules(text, expected):
    assert extract_prediction(text) == expected


@pytest.mark.timeout(60)
def test_extract_prediction_huge_and_pathological_inputs_are_linear():
    # Each case is ~10 MB; a rescan-per-box implementation is quadratic here and times out.
    unclosed = "\\boxed{" * 1_400_000
    assert extract_prediction(unclosed) is None
    assert extract_prediction(unclosed + "x}") == "x"  # innermost closes; the rest never do
    assert extract_prediction("{" * 10_000_000 + "\\boxed{a}") == "a"
    assert extract_prediction("}" * 10_000_000 + "\\boxed{a}") == "a"
    deep = "\\boxed{" + "{" * 3_000_000 + "}" * 3_000_000 + "}"
    assert extract_prediction(deep) == "{" * 3_000_000 + "}" * 3_000_000
    assert extract_prediction("x" * 10_000_000) is None
    assert extract_prediction("\\boxed{" + "y" * 10_000_000 + "}") == "y" * 10_000_000


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("\\boxed{}</think> a\x00ü你")), max_size=60))
def test_extract_prediction_never_crashes_and_returns_a_balanced_substring(text):
    result = extract_prediction(text)
    if result is not None:
        assert f"\\boxed{{{result}}}" in text
        depth = 0
        for ch in result:  # the content of a matched box is itself balanced
            depth += {"{": 1, "}": -1}.get(ch, 0)
            assert depth >= 0
        assert depth == 0


# ---------------------------------------------------------------- rpt_reward (TRL form)


def test_rpt_reward_plain_and_missing_box():
    completions = [boxed(" para"), boxed(" par"), "I think it is para", boxed(" paragraph", "<think>hm</think>")]
    rewards = rpt_reward(completions=completions, continuation=[CONT] * 4, boundaries=[BOUNDS] * 4)
    assert rewards == [1.0, 0.0, 0.0, 1.0]
    assert rpt_reward.__name__ == "rpt_reward"


def test_rpt_reward_accepts_trl_keyword_call():
    # Exactly how TRL's GRPOTrainer calls a reward function, extra columns included.
    rewards = rpt_reward(
        prompts=["p1", "p2"],
        completions=[boxed(" para"), boxed(" is")],
        completion_ids=[[1, 2], [3]],
        continuation=[CONT, CONT],
        boundaries=[BOUNDS, BOUNDS],
        context=["c", "c"],
        entropy=[1.0, 2.0],
        doc_id=["d", "d"],
        position=[3, 4],
        trainer_state=object(),
        log_extra=lambda *a, **k: None,
        log_metric=lambda *a, **k: None,
    )
    assert rewards == [1.0, 0.0]


def test_rpt_reward_conversational_completions():
    completions = [
        [{"role": "assistant", "content": boxed(" para")}],
        [{"role": "assistant", "content": [{"type": "text", "text": "so "}, {"type": "text", "text": boxed(" para")}]}],
        [
            {"role": "assistant", "content": boxed(" para")},
            {"role": "tool", "content": "ignored"},
            {"role": "assistant", "content": boxed("wrong")},
        ],  # the LAST assistant message is scored
        [{"role": "user", "content": boxed(" para")}],  # no assistant message
        [{"role": "assistant", "content": None}],
        [],
    ]
    n = len(completions)
    rewards = rpt_reward(completions=completions, continuation=[CONT] * n, boundaries=[BOUNDS] * n)
    assert rewards == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_rpt_reward_rows_without_rpt_columns_are_not_applicable():
    completions = [boxed(" para"), boxed(" para")]
    rewards = rpt_reward(completions=completions, continuation=[None, CONT], boundaries=[None, BOUNDS])
    assert rewards == [None, 1.0]


@pytest.mark.parametrize(
    "continuation, boundaries, needle",
    [
        (7, BOUNDS, "`continuation` must be a string"),
        (None, BOUNDS, "`continuation` must be a string"),
        (CONT, None, "non-empty list"),
        (CONT, [], "non-empty list"),
        (CONT, "5,10", "non-empty list"),
        (CONT, [5, 5, 13], "strictly increasing"),
        (CONT, [10, 5], "strictly increasing"),
        (CONT, [0, 5], "strictly increasing"),
        (CONT, [-1, 5], "strictly increasing"),
        (CONT, [5.0, 10], "strictly increasing"),
        (CONT, [True, 5], "strictly increasing"),
        (CONT, [5, 14], "past the end"),
        (" ü", [3, 4], "past the end"),  # 2 characters, 3 bytes
    ],
)
def test_rpt_reward_malformed_row_names_the_row(continuation, boundaries, needle):
    with pytest.raises(UserError) as info:
        rpt_reward(completions=["a", "b"], continuation=[CONT, continuation], boundaries=[BOUNDS, boundaries])
    message = str(info.value)
    assert "row 1" in message and needle in message
    assert "rl data rpt" in message and "\n" not in message


def test_rpt_reward_column_errors():
    with pytest.raises(UserError, match="no `continuation` column"):
        rpt_reward(completions=["a"], boundaries=[BOUNDS])
    with pytest.raises(UserError, match="no `boundaries` column"):
        rpt_reward(completions=["a"], continuation=[CONT])
    with pytest.raises(UserError, match="`boundaries` has 1 entries but there are 2 completions"):
        rpt_reward(completions=["a", "b"], continuation=[CONT, CONT], boundaries=[BOUNDS])
    with pytest.raises(UserError, match="one entry per completion"):
        rpt_reward(completions=["a"], continuation=CONT, boundaries=[BOUNDS])


def test_rewards_module_does_not_import_torch_or_trainer():
    code = "import sys, rewards, rewards.rpt; print([m for m in ('torch', 'trl', 'rl.train.trainer') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- property tests

_CHARS = list("abcxyz ,.!\n\t") + ["ü", "é", "ł", "你", "好", "😀", "Ω", "\u0301"]


@st.composite
def continuation_with_boundaries(draw):
    """Random text and a random subset of its whole-character byte offsets as token ends."""
    text = draw(st.text(alphabet=st.sampled_from(_CHARS), min_size=1, max_size=30))
    char_ends = sorted(draw(st.sets(st.integers(1, len(text)), min_size=1)))
    bounds = [len(text[:i].encode()) for i in char_ends]
    return text, bounds


@settings(max_examples=200, deadline=None)
@given(continuation_with_boundaries(), st.data())
def test_property_prefix_scores_one_iff_it_ends_on_a_boundary(case, data):
    text, bounds = case
    for i in range(0, len(text) + 1):
        prefix = text[:i]
        expected = 1.0 if len(prefix.encode()) in bounds else 0.0
        assert rpt_reward(completions=[boxed(prefix)], continuation=[text], boundaries=[bounds]) == [expected]
    # Mutations of a rewarded prefix: change one character, or append one.
    k = data.draw(st.sampled_from(bounds))
    good = text.encode()[:k].decode()
    pos = data.draw(st.integers(0, len(good) - 1))
    other = data.draw(st.sampled_from(_CHARS))
    assume(other != good[pos])
    assert prefix_match_reward(good[:pos] + other + good[pos + 1 :], text, bounds) == 0.0
    if not text.startswith(good + other):
        assert prefix_match_reward(good + other, text, bounds) == 0.0


@pytest.fixture(scope="module")
def gpt2():
    from tests.tiny_models import gpt2_byte_decoder, gpt2_tokenizer

    return gpt2_tokenizer(), gpt2_byte_decoder()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(_CHARS), min_size=1, max_size=30))
def test_property_real_tokenizer_boundaries(gpt2, text):
    """Boundaries from GPT-2's own token bytes (independent of rl/data/boundaries.py): every
    prediction that is the text of the first j tokens scores 1, every other prefix scores 0."""
    tok, byte_decoder = gpt2
    tokens = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    pieces = [bytes(byte_decoder[c] for c in t) for t in tokens]
    data = text.encode()
    assert b"".join(pieces) == data
    cumulative, bounds = 0, []
    for piece in pieces:
        cumulative += len(piece)
        try:
            data[:cumulative].decode()
        except UnicodeDecodeError:
            continue  # the token ends inside a character: not a boundary
        bounds.append(cumulative)
    assert bounds and bounds[-1] == len(data)
    for i in range(len(text) + 1):
        prefix = text[:i]
        expected = 1.0 if len(prefix.encode()) in bounds else 0.0
        completion = [{"role": "assistant", "content": boxed(prefix)}]
        assert rpt_reward(completions=[completion], continuation=[text], boundaries=[bounds]) == [expected]
