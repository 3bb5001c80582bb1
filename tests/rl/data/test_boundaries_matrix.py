"""RPT boundaries over the tokenizer matrix (tests/tokenizer_matrix.py): at every usable position of
every matrix text, the boundaries `split_at_token` computes from the document's own tokenization are
exactly the byte ends of the true continuation tokens as the trainer hands them to a reward: the text
those tokens add after the row's prompt, tokenized as TRL tokenizes it (BOS included where the kind
adds one), decoded in context (rl/signal/decoding.py)."""

from __future__ import annotations

from rewards.rpt import rpt_completion_exact_reward
from rl.data.boundaries import split_at_token
from rl.signal.decoding import in_context_texts
from tests.tokenizer_matrix import MATRIX_TEXTS

TOKENS = 3  # continuation tokens per row, as `rl data rpt --continuation-tokens`


def true_token_ends(tok, text: str, cut, ids: list[int], position: int) -> list[int]:
    """Byte ends (into the continuation) of the first 1..TOKENS true tokens whose in-context text
    ends on a whole character of the document, strictly increasing."""
    prompt_ids = tok(text=cut.context)["input_ids"]
    ends: list[int] = []
    for j in range(1, TOKENS + 1):
        if position + j > len(ids):
            break
        added = in_context_texts(tok, [prompt_ids], [ids[position:position + j]])[0]
        whole = text[cut.continuation_start:cut.continuation_start + len(added)] == added
        size = len(added.encode("utf-8"))
        if added and whole and (not ends or size > ends[-1]):
            ends.append(size)
    return ends


def test_boundaries_are_the_byte_ends_of_the_true_tokens_in_context(matrix_tokenizer_kind):
    kind, tok = matrix_tokenizer_kind
    checked = 0
    for text in MATRIX_TEXTS:
        enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)  # as rl/data/rpt.py
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        for position in range(1, len(ids)):
            cut = split_at_token(text, offsets, position, TOKENS, 64)
            if cut is None:
                continue
            checked += 1
            where = (kind, text, position, tok.convert_ids_to_tokens(ids[position:position + TOKENS]))
            assert cut.boundaries == true_token_ends(tok, text, cut, ids, position), where
            # and each boundary is what a reward pays for: the true tokens up to it earn Eq. 3's 1
            prompt_ids = tok(text=cut.context)["input_ids"]
            for j in range(1, TOKENS + 1):
                added = in_context_texts(tok, [prompt_ids], [ids[position:position + j]])[0]
                if cut.continuation.startswith(added) and len(added.encode("utf-8")) in cut.boundaries:
                    assert rpt_completion_exact_reward(
                        completions=[added], continuation=[cut.continuation], boundaries=[cut.boundaries]) == [1.0]
    assert checked > 40


def test_a_unigram_byte_run_over_several_characters_has_a_boundary_after_each_character(matrix_root):
    from tests.tokenizer_matrix import matrix_tokenizer

    tok = matrix_tokenizer("cleanup", matrix_root)
    text = "Then 2x = 14, so"
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
    tokens, offsets = tok.convert_ids_to_tokens(enc["input_ids"]), enc["offset_mapping"]
    first = tokens.index("<0x31>")
    assert tokens[first:first + 2] == ["<0x31>", "<0x34>"] and offsets[first] == offsets[first + 1]  # one span
    cut = split_at_token(text, offsets, first, 3, 64)
    assert (cut.context, cut.continuation, cut.boundaries) == ("Then 2x = ", "14,", [1, 2, 3])
    cut = split_at_token(text, offsets, first + 1, 2, 64)  # "4" starts on a whole character
    assert (cut.context, cut.continuation, cut.boundaries) == ("Then 2x = 1", "4,", [1, 2])
