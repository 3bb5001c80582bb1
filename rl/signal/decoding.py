"""The text of a completion as rewards score it: what the model wrote, not a lossy decode of it.

TRL 1.16 decodes each completion alone (`batch_decode(completion_ids, skip_special_tokens=True)`).
That is not the text the model wrote after the prompt with every tokenizer:

- SentencePiece-style decoders (Llama-2, Mistral, TinyLlama: `Strip(' ', 1, 0)`; T5/Unigram
  `Metaspace`) drop the leading space of whatever is decoded first, so tokens `▁on ▁the` decode
  alone to "on the" while the model wrote " on the" after its prompt;
- tokenizers with `clean_up_tokenization_spaces=True` turn " ." / " ," / " 's" into "." / "," / "'s".

Byte-level BPE (GPT-2, Qwen, Llama-3, SmolLM2) loses nothing either way. Here a plain-text prompt's
completion is `decode(prompt_ids + completion_ids)` minus `decode(prompt_ids)`, both with special
tokens skipped (as TRL skips them) and clean-up off: exactly the characters the completion adds in
context, so `prompt + completion` is the text the model produced (`in_context_texts`). A chat
completion is a message, decoded alone as TRL does but with clean-up off (`decode_alone`).
A completion ending inside a multi-byte character ends with U+FFFD, as a decode does; RPT
boundaries (rl/data/boundaries.py) are whole-character ends, so that never changes an RPT reward.

Torch-free: used by the trainer (`EntropyGRPOTrainer._generate`), the signal check and
`rl prune --sample`, so that every door scores the same text.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["decode_alone", "decode_ids", "in_context_texts"]


def decode_ids(tokenizer, ids: Sequence[int]) -> str:
    """`ids` decoded as TRL decodes completions (special tokens skipped) but with clean-up off."""
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def decode_alone(tokenizer, completion_ids: Sequence[Sequence[int]]) -> list[str]:
    """Each completion decoded on its own, special tokens skipped, clean-up off: a chat completion's
    message content (TRL's decode without `clean_up_tokenization_spaces` rewriting " ." to ".")."""
    return tokenizer.batch_decode([[int(t) for t in ids] for ids in completion_ids], skip_special_tokens=True,
                                  clean_up_tokenization_spaces=False)


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def in_context_texts(tokenizer, prompt_ids: Sequence[Sequence[int]],
                     completion_ids: Sequence[Sequence[int]]) -> list[str]:
    """Per completion, the text it adds after its prompt (see the module doc).

    `prompt_ids[i]` are the prompt tokens the completion `completion_ids[i]` was sampled after (as
    the model read them, special tokens included); lists or 1-D tensors. Each distinct prompt is
    decoded once (TRL repeats every prompt `num_generations` times). When the prompt's text is not
    a prefix of the whole decode (a decoder that rewrites across the join; not seen with any
    family of tests/tokenizer_matrix.py), the completion is what follows their common prefix.
    """
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts for {len(completion_ids)} completions")
    prompts = [[int(t) for t in ids] for ids in prompt_ids]
    heads: dict[tuple[int, ...], str] = {}
    for ids in prompts:
        if tuple(ids) not in heads:
            heads[tuple(ids)] = decode_ids(tokenizer, ids)
    fulls = tokenizer.batch_decode([ids + [int(t) for t in completion] for ids, completion in
                                    zip(prompts, completion_ids)],
                                   skip_special_tokens=True, clean_up_tokenization_spaces=False)
    texts = []
    for ids, full in zip(prompts, fulls):
        head = heads[tuple(ids)]
        texts.append(full[len(head):] if full.startswith(head) else full[_common_prefix(head, full):])
    return texts
