"""The tokenizer matrix keeps the properties it exists to test: if a tokenizers release changed one
of them, every matrix test would silently test less."""

from __future__ import annotations

import pytest

from tests.tokenizer_matrix import ADDS_BOS, MATRIX_TEXTS


def test_every_kind_round_trips_the_matrix_texts_up_to_its_space_cleanup(matrix_tokenizer_kind):
    kind, tok = matrix_tokenizer_kind
    for text in MATRIX_TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        expected = tok.clean_up_tokenization(text) if kind == "cleanup" else text
        assert tok.decode(ids) == expected, kind


@pytest.mark.parametrize("kind,strips", [("bpe", False), ("sentencepiece", True), ("cleanup", True), ("bos_bpe", False)])
def test_decoding_a_completion_alone_strips_its_leading_space_where_the_real_ones_do(matrix_root, kind, strips):
    from tests.tokenizer_matrix import matrix_tokenizer

    tok = matrix_tokenizer(kind, matrix_root)
    prompt, completion = "The dog sat", " on the hill"
    full = tok(prompt + completion, add_special_tokens=False)["input_ids"]
    head = tok(prompt, add_special_tokens=False)["input_ids"]
    assert full[:len(head)] == head
    alone = tok.decode(full[len(head):])
    assert (alone == completion.lstrip()) if strips else (alone == completion), (kind, alone)


@pytest.mark.parametrize("kind,adds_bos", ADDS_BOS.items())
def test_bos_is_added_by_default_where_the_family_does(matrix_root, kind, adds_bos):
    from tests.tokenizer_matrix import matrix_tokenizer

    tok = matrix_tokenizer(kind, matrix_root)
    ids = tok("the hill")["input_ids"]
    assert (ids[0] == tok.bos_token_id) is adds_bos


@pytest.mark.parametrize("kind", ["sentencepiece", "cleanup"])
def test_characters_outside_the_vocabulary_split_into_byte_tokens(matrix_root, kind):
    from tests.tokenizer_matrix import matrix_tokenizer

    tok = matrix_tokenizer(kind, matrix_root)
    pieces = tok.convert_ids_to_tokens(tok("東京 😀", add_special_tokens=False)["input_ids"])
    assert "<0xE6>" in pieces and "<0xF0>" in pieces  # 東 and 😀 each span several tokens


def test_cleanup_kind_removes_spaces_before_punctuation(matrix_root):
    from tests.tokenizer_matrix import matrix_tokenizer

    tok = matrix_tokenizer("cleanup", matrix_root)
    assert tok.decode(tok("a test , ok .", add_special_tokens=False)["input_ids"]) == "a test, ok."


def test_matrix_models_load_and_run(matrix_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(matrix_model_dir)
    model = AutoModelForCausalLM.from_pretrained(matrix_model_dir)
    assert model.config.vocab_size == len(tok)
    ids = tok("The dog", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert model(ids).logits.shape[-1] == len(tok)


def test_matrix_model_dirs_load_their_kinds_tokenizer(matrix_model_dir, matrix_root):
    """`AutoTokenizer` on the model directory (as every command loads it) gives the kind's tokenizer."""
    from transformers import AutoTokenizer

    from tests.tokenizer_matrix import matrix_tokenizer

    kind = matrix_model_dir.name.split("-")[0]
    loaded, built = AutoTokenizer.from_pretrained(matrix_model_dir), matrix_tokenizer(kind, matrix_root)
    for text in MATRIX_TEXTS:
        assert loaded(text)["input_ids"] == built(text)["input_ids"], kind
        assert loaded.decode(loaded(text)["input_ids"][2:]) == built.decode(built(text)["input_ids"][2:]), kind
