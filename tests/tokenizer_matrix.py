"""The test kit's tokenizer matrix: the tokenizer families token-level code must be right on, built
offline with the `tokenizers` library (never the hub).

- `bpe`: GPT-2's byte-level BPE (SmolLM2, Qwen, Llama-3 style): spaces are part of the next token,
  every byte has a symbol, decoding one token alone keeps its leading space.
- `sentencepiece`: Llama-2 / Mistral / TinyLlama style: BPE with a Metaspace (`▁`) pre-tokenizer,
  byte fallback (`<0xE6>` ...) for characters outside the vocabulary, BOS added on every encode, and
  the real decoder `Replace(▁→' '), ByteFallback, Fuse, Strip(' ', 1, 0)`, which drops the leading
  space of whatever is decoded alone (a completion decoded without its prompt loses it).
- `cleanup`: a Unigram SentencePiece model (T5 style) with `clean_up_tokenization_spaces=True`:
  decoding also turns " ." / " ," / " 's" into "." / "," / "'s".
- `bos_bpe`: byte-level BPE whose BOS is added by default (Llama-3 style post-processor).

Multi-byte characters are covered on purpose: `ü`, `東京`, `😀` are outside the SentencePiece-style
vocabularies, so they become byte-fallback tokens and one character is split across tokens.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

TOKENIZER_KINDS = ("bpe", "sentencepiece", "cleanup", "bos_bpe")
# Whether each kind puts BOS before text when it encodes with its defaults (the model's view of text).
ADDS_BOS = {"bpe": False, "sentencepiece": True, "cleanup": False, "bos_bpe": True}


def kind_of(model_dir) -> str:
    """The matrix kind of a `matrix_model_dir` (its directory name starts with the kind)."""
    return next(k for k in sorted(TOKENIZER_KINDS, key=len, reverse=True) if Path(model_dir).name.startswith(k))

# Text that exercises what differs between the families: leading spaces, punctuation after a space,
# contractions, accented Latin letters (in vocabulary), CJK and emoji (byte fallback in the
# SentencePiece-style vocabularies: one character split over several tokens).
MATRIX_TEXTS = (
    "The quick brown fox jumps over the lazy dog on the hill.",
    "It's a test , with spaces before punctuation . And the dog 's bone.",
    "Über café naïve: 東京 is big 😀 and ü.",
    "Let x = 3 + 4. Then 2x = 14, so the answer is 14.",
)

_TRAIN = [
    "The quick brown fox jumps over the lazy dog on the hill.",
    "Hello world, it's a test. The dog's bone is on the table; the cat sat on the mat.",
    "We compute the sum of the numbers and then the product: the answer is the result.",
    "Let x be a number. Then x plus one is bigger than x, and the proof is done.",
    "A café and a naïve idea, said the man on the hill in the morning.",
    "Solve for the value of n where n squared equals the sum of the first odd numbers.",
] * 20
_SPECIALS = ["<unk>", "<s>", "</s>"]
_BYTES = [f"<0x{i:02X}>" for i in range(256)]
# Only ASCII letters and a few accented ones enter the vocabulary: everything else falls back to bytes.
_ALPHABET = sorted((set("".join(_TRAIN)) - {" "}) | {"▁"})


def _bytes_in_vocab(tok):
    """The trainers add `<0xNN>` as special tokens; in real SentencePiece-style tokenizer.json files
    (Llama-2, Mistral, T5) they are plain vocabulary, so `skip_special_tokens=True` keeps them."""
    import json

    from tokenizers import Tokenizer

    state = json.loads(tok.to_str())
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] in _SPECIALS]
    return Tokenizer.from_str(json.dumps(state))


def _sentencepiece_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=_SPECIALS + _BYTES, initial_alphabet=_ALPHABET,
                                  limit_alphabet=len(_ALPHABET), show_progress=False)
    tok.train_from_iterator(_TRAIN, trainer)
    tok = _bytes_in_vocab(tok)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    return tok


def _unigram_cleanup():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(vocab_size=500, special_tokens=_SPECIALS + _BYTES, unk_token="<unk>",
                                      initial_alphabet=_ALPHABET, show_progress=False)
    tok.train_from_iterator(_TRAIN, trainer)
    # byte fallback: rebuild the trained model with it on (the trainer has no such option)
    import json

    state = json.loads(tok.to_str())
    state["model"]["byte_fallback"] = True
    tok = _bytes_in_vocab(Tokenizer.from_str(json.dumps(state)))
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁",
                                                                                  prepend_scheme="always",
                                                                                  split=True)])
    return tok


def _bos_bpe():
    from tokenizers import processors

    from tests.tiny_models import gpt2_tokenizer

    backend = gpt2_tokenizer().backend_tokenizer
    bos = backend.token_to_id("<|endoftext|>")
    backend.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A <|endoftext|> $B",
        special_tokens=[("<|endoftext|>", bos)])
    return backend


@lru_cache(maxsize=None)
def _saved(kind: str, root: str) -> str:
    """Build `kind` once per process and save it as a transformers tokenizer directory under `root`."""
    from transformers import PreTrainedTokenizerFast

    if kind == "bpe":
        from tests.tiny_models import gpt2_tokenizer

        tok = gpt2_tokenizer()
    elif kind == "sentencepiece":
        tok = PreTrainedTokenizerFast(tokenizer_object=_sentencepiece_bpe(), bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>", pad_token="</s>", clean_up_tokenization_spaces=False)
    elif kind == "cleanup":
        tok = PreTrainedTokenizerFast(tokenizer_object=_unigram_cleanup(), bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>", pad_token="</s>", clean_up_tokenization_spaces=True)
    elif kind == "bos_bpe":
        tok = PreTrainedTokenizerFast(tokenizer_object=_bos_bpe(), bos_token="<|endoftext|>",
                                      eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                      clean_up_tokenization_spaces=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; one of {TOKENIZER_KINDS}")
    path = Path(root) / kind
    tok.save_pretrained(path)
    return str(path)


def matrix_tokenizer(kind: str, root: Path | str):
    """The `kind` tokenizer of the matrix, loaded back through `AutoTokenizer` from its saved
    directory (the way every command loads a tokenizer)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_saved(kind, str(root)))


def build_matrix_model(path: Path | str, kind: str, root: Path | str, chat_template: bool = False,
                       hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A tiny random Llama-architecture model whose tokenizer is the matrix's `kind`, saved to `path`.

    Not Qwen2: transformers 5 loads every `qwen2` model directory's tokenizer as `Qwen2Tokenizer`
    (rebuilt from vocab and merges with Qwen's byte-level pipeline), whatever tokenizer.json says, so
    `AutoTokenizer.from_pretrained(path)` would not be the kind; a `llama` directory loads its
    tokenizer.json as saved."""
    from transformers import LlamaConfig

    from tests.tiny_models import save_tiny_model

    return save_tiny_model(path, matrix_tokenizer(kind, root), LlamaConfig, chat_template=chat_template,
                           hidden_size=hidden_size, layers=layers, seed=seed)
