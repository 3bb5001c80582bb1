"""How every scoring read sees a model: its real logits, text as it sees text, eval mode.

Shared by everything that scores tokens outside training (`rl data rpt`'s proxy, `rl eval`,
`rl profile entropy`/`bits`, the document metrics, `rl prune`):

* `logit_reader(model)`: the model's real next-token logits, read from the backbone's hidden
  states one slice at a time (no batch x length x vocab tensor). The head's output goes through
  the transform the model's forward applies (Gemma-2 soft-capping, Cohere `logit_scale`, Granite
  `logits_scaling`, Falcon-H1 `lm_head_multiplier`), and a 6-token probe checks, once per model,
  that the result equals the model's own forward; a model whose logits are anything else
  (MiniCPM's hidden scaling, an unknown transform) is read through its own forward instead.
* `text_prefix(tokenizer)`: the ids the tokenizer puts before any text by default (BOS for
  Llama-2/Mistral/Llama-3-style tokenizers, nothing for GPT-2/Qwen). A document is scored as
  `prefix + its own tokens`; positions, offsets and boundaries stay on the document's tokens.
* `scoring(model)`: eval mode (dropout off) and inference mode for the read, the model's
  train/eval flags restored afterwards.
* `token_pieces` / `decoded_pieces` / `token_texts`: per-token strings that reassemble the text
  (a token ending inside a multi-byte character contributes "" and the token completing it the
  whole character), and one token's own text as it reads after other text (a SentencePiece
  `▁the` is " the", not the "the" its decoder's Strip gives when decoded alone).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Sequence

logger = logging.getLogger(__name__)

__all__ = ["LogitReader", "logit_reader", "text_prefix", "scoring", "token_pieces", "decoded_pieces",
           "token_texts"]

_READERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_PREFIXES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_PROBE = (1, 5, 2, 7, 3, 4)  # probe token ids (mod the vocabulary size)


def _head_transform(config):
    """(name, f) for the transform the model's forward applies to lm_head's output, from its config:
    f(head_output) -> logits. Scales first, then soft-capping (no model has both today)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    steps = []
    scale = getattr(text, "logit_scale", None)  # Cohere: logits * logit_scale
    if isinstance(scale, (int, float)) and scale != 1.0:
        steps.append(("logit_scale", lambda x, s=scale: x * s))
    divisor = getattr(text, "logits_scaling", None)  # Granite: logits / logits_scaling
    if isinstance(divisor, (int, float)) and divisor != 1.0:
        steps.append(("logits_scaling", lambda x, d=divisor: x / d))
    mult = getattr(text, "lm_head_multiplier", None)  # Falcon-H1: lm_head(h) * lm_head_multiplier
    if isinstance(mult, (int, float)) and mult != 1.0:
        steps.append(("lm_head_multiplier", lambda x, m=mult: x * m))
    cap = getattr(text, "final_logit_softcapping", None)  # Gemma-2/3: tanh(logits / cap) * cap
    if isinstance(cap, (int, float)) and cap:
        import torch

        steps.append(("final_logit_softcapping", lambda x, c=cap: torch.tanh(x / c) * c))

    def transform(x):
        for _, step in steps:
            x = step(x)
        return x

    return "+".join(name for name, _ in steps) or "plain", transform


class LogitReader:
    """A model's real next-token logits in slices: `states(...)` runs the backbone once (or the whole
    model when its logits cannot be reproduced from backbone + head), `logits(states[r, a:b])` gives
    float32 logits of those positions, equal to `model(...).logits[r, a:b]`."""

    def __init__(self, model):
        self.model = model
        self.backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
        self.head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.kind, self._transform = _head_transform(model.config)
        if self.backbone is None or self.head is None or not self._probe():
            self.backbone = self.head = None
            self.kind = "own forward"

    @property
    def chunked(self) -> bool:
        """True when the head runs per slice (False: the model's own full logits are read)."""
        return self.backbone is not None

    def _probe(self) -> bool:
        import torch

        vocab = getattr(self.head, "out_features", None) or getattr(self.model.config, "vocab_size", None) or 2
        ids = torch.tensor([[t % vocab for t in _PROBE]], device=next(self.model.parameters()).device)
        try:
            with scoring(self.model):
                want = self.model(input_ids=ids).logits.float()
                got = self._transform(self.head(self.backbone(input_ids=ids).last_hidden_state)).float()
        except Exception as exc:  # a backbone that needs other inputs: use the model's own forward
            logger.debug("logit reader probe failed (%s); reading the model's own logits", exc)
            return False
        ok = got.shape == want.shape and float((got - want).abs().max()) <= 1e-2 * float(want.abs().max()) + 1e-3
        if not ok:
            logger.info("%s: backbone + head (%s) does not reproduce its logits; scoring through its own forward "
                        "(more memory)", type(self.model).__name__, self.kind)
        return ok

    def states(self, input_ids, attention_mask=None, position_ids=None):
        """Hidden states of the last layer (chunked) or the model's logits, (batch, length, ...)."""
        extra = {"position_ids": position_ids} if position_ids is not None else {}
        if self.backbone is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    def logits(self, states):
        """float32 logits of a slice of `states` (any leading shape)."""
        if self.backbone is None:
            return states.float()
        return self._transform(self.head(states)).float()


def logit_reader(model) -> LogitReader:
    """The model's `LogitReader`, built (and probed) once per model object."""
    try:
        return _READERS[model]
    except (KeyError, TypeError):
        pass
    reader = LogitReader(model)
    try:
        _READERS[model] = reader
    except TypeError:
        pass
    return reader


def text_prefix(tokenizer) -> list[int]:
    """Ids the tokenizer puts before any text when it encodes with its defaults (BOS for Llama-2,
    Mistral and Llama-3 style tokenizers; [] for GPT-2, Qwen): how the model saw text in training.
    Suffixes it adds (an EOS) are not included: a scored text goes on after its last token."""
    try:
        return list(_PREFIXES[tokenizer])
    except (KeyError, TypeError):
        pass
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a")["input_ids"])
    prefix = []
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            prefix = full[:i]
            break
    try:
        _PREFIXES[tokenizer] = tuple(prefix)
    except TypeError:
        pass
    return prefix


@contextlib.contextmanager
def scoring(model):
    """Eval mode (dropout off) and torch.inference_mode for a scoring read; every module's
    train/eval flag is put back afterwards (a model in training stays in training)."""
    import torch

    modes = [(m, m.training) for m in model.modules()] if hasattr(model, "modules") else []
    if modes:
        model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        for module, training in modes:
            module.training = training


def token_pieces(text: str, offsets: Sequence[Sequence[int]]) -> list[str]:
    """Per token of `text` (fast-tokenizer character offsets), the text from its start to the next
    token's start (the last: to the end of `text`), so the pieces reassemble `text` from the first
    token's start. Pieces of one split character share a start: all but the last are ""."""
    starts = [int(a) for a, _ in offsets]
    for i in range(1, len(starts)):  # never backwards (a prepended `▁` can claim the next character)
        starts[i] = max(starts[i], starts[i - 1])
    ends = starts[1:] + [len(text)]
    return [text[a:b] for a, b in zip(starts, ends)]


def decoded_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """Per token of `ids`, the text it adds to `tokenizer.decode(ids)` (no clean-up): "" while it
    leaves a character unfinished, the whole character on the token that completes it. The pieces
    concatenate to the decoded text."""
    pieces, done = [], ""
    for i in range(1, len(ids) + 1):
        text = tokenizer.decode(list(ids[:i]), clean_up_tokenization_spaces=False)
        if i < len(ids) and text.endswith("\ufffd"):
            pieces.append("")  # an unfinished character: its bytes arrive with a later token
            continue
        common = len(done) if text.startswith(done) else len(_common_prefix(done, text))
        pieces.append(text[common:])
        done = text
    return pieces


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def token_texts(tokenizer, ids: Sequence[int], skip_special_tokens: bool = False) -> list[str]:
    """Each token's own text as it reads after other text: decoded after an anchor token and with the
    anchor's text removed, so a SentencePiece `▁the` keeps its space (decoding it alone drops it).
    A token holding part of a multi-byte character gives a string with U+FFFD in it."""
    anchor = list(tokenizer("a", add_special_tokens=False)["input_ids"])[-1:]
    if not anchor:
        return tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=skip_special_tokens,
                                      clean_up_tokenization_spaces=False)
    head = tokenizer.decode(anchor, clean_up_tokenization_spaces=False)
    both = tokenizer.batch_decode([anchor + [int(i)] for i in ids], skip_special_tokens=skip_special_tokens,
                                  clean_up_tokenization_spaces=False)
    out = [b[len(head):] if b.startswith(head) else None for b in both]
    odd = [k for k, t in enumerate(out) if t is None]  # the anchor merged with the token: decode it alone
    for k, text in zip(odd, tokenizer.batch_decode([[int(ids[k])] for k in odd], skip_special_tokens=skip_special_tokens,
                                                   clean_up_tokenization_spaces=False)):
        out[k] = text
    return out
