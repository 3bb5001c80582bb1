"""The one sampler: G completions per prompt, cut and decoded as the trainer cuts and decodes them.

Every door that lets a model write uses it: the signal check (rl/train/signal_check.py),
`rl eval next-token --mode reasoning`, `rl profile entropy --generate`, `rl profile bits --generate`
and `rl prune --sample`. What they share is done here once:

* prompts arrive as token ids; `prompt_ids` renders a prompt the way the model read text (chat
  messages through the chat template with the generation prompt, text after the tokenizer's text
  prefix: BOS where it adds one, never an EOS it may append; rl/signal/scoring.py `text_prefix`);
* `batch_size` prompts per `generate` call, left-padded (positions count real tokens only), each
  prompt read once and its KV cache repeated for its G samples (`generate_shared_prefill`: the
  same distribution as HF's `num_return_sequences`, which reads the prompt G times); `max_rows`
  caps the completions of one call, splitting a prompt's samples over several calls;
* eval mode and inference mode, every module's train flag restored (`scoring`);
* temperature 0 is greedy (one sample per prompt); otherwise temperature, top-p, top-k (0 or None:
  off), min-p and repetition penalty, as TRL passes them;
* the RNG: an int `seed` samples from a forked RNG seeded with it, so the caller's RNG (CPU and
  the model's CUDA device) is untouched afterwards (the signal check must not change what training
  draws); `seed=None` draws from the caller's RNG, for a caller whose several calls are one stream;
* the stop rule of TRL 1.16: the tokenizer's EOS and the model's generation-config EOS ids end a
  completion (generate stops on all of them); `Sample.ids` end before the first, `Sample.stop`
  holds it (TRL's completion ids include it). `stop_after` optionally ends a completion once its
  text so far satisfies a predicate (rl prune: a finished `Answer:` line);
* `Sample.text`: what the completion adds after its prompt (rl/signal/decoding.py
  `in_context_texts`), so `prompt + text` is what the model wrote with every tokenizer.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rl.signal.decoding import in_context_texts
from rl.signal.padding import left_pad
from rl.signal.scoring import scoring, text_prefix

__all__ = ["SamplingSettings", "Sample", "sample", "prompt_ids", "generate_shared_prefill", "seeded", "stop_ids"]


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample (see the module doc); checked on construction (ValueError)."""

    samples: int = 1  # completions per prompt (G)
    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy, one sample per prompt
    top_p: float = 1.0
    top_k: int | None = 0  # 0 or None: off
    min_p: float | None = None
    repetition_penalty: float = 1.0
    batch_size: int = 4  # prompts per generate call
    max_rows: int | None = None  # completions per generate call at most (None: batch_size x samples)
    seed: int | None = 0  # int: a forked RNG seeded with it; None: the caller's RNG

    def __post_init__(self):
        for name in ("samples", "max_new_tokens", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1 or None, got {self.max_rows}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.temperature == 0 and self.samples > 1:
            raise ValueError("temperature 0 is greedy: one sample per prompt (raise the temperature to draw several)")

    def generate_kwargs(self) -> dict:
        """The sampling keywords for `generate` (greedy: only `do_sample=False`)."""
        if self.temperature == 0:
            return {"do_sample": False}
        kwargs = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p,
                  "top_k": self.top_k or 0, "repetition_penalty": self.repetition_penalty}
        if self.min_p is not None:
            kwargs["min_p"] = self.min_p
        return kwargs


@dataclass
class Sample:
    """One completion: its prompt's index, its tokens before the stop token, the stop token (None when
    it ran to `max_new_tokens` or `stop_after` ended it) and the text it adds after its prompt."""

    prompt: int
    ids: list[int]
    stop: int | None
    text: str


def prompt_ids(tokenizer, prompt, *, user_turn: bool = False) -> list[int]:
    """Token ids of a prompt as the model reads it: chat messages through the chat template (generation
    prompt added; the template writes its own BOS) when the tokenizer has one, else their contents
    joined by blank lines and read as text; text after the tokenizer's text prefix (BOS where it adds
    one, never an appended EOS: the model goes on after the prompt). `user_turn`: a string prompt is
    one user message when the tokenizer has a chat template (`rl profile ... --generate`)."""
    if user_turn and isinstance(prompt, str) and getattr(tokenizer, "chat_template", None):
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
            return list(ids["input_ids"])
        prompt = "\n\n".join(m["content"] for m in prompt)
    return text_prefix(tokenizer) + list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def pad_id(tokenizer) -> int:
    """The id generate pads with: the tokenizer's pad, else its EOS, else 0 (always masked)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def stop_ids(model, tokenizer) -> list[int]:
    """TRL 1.16's stop ids: the tokenizer's EOS first, then the model's generation-config EOS ids."""
    config = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [] if config is None else [config] if isinstance(config, int) else list(config)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids = [tokenizer.eos_token_id, *ids]
    return [int(i) for i in ids]


@contextlib.contextmanager
def seeded(seed: int | None, device):
    """Draws inside come from a forked RNG seeded with `seed` (CPU, and `device` when it is CUDA); the
    caller's RNG states are restored afterwards. `seed=None`: the caller's RNG, untouched by this."""
    if seed is None:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[device] if getattr(device, "type", "cpu") == "cuda" else []):
        torch.manual_seed(seed)
        yield


def generate_shared_prefill(model, ids, mask, pos, generations: int, **generate_kwargs):
    """`generate` with `generations` samples per prompt, the prompt read once, not once per sample.

    HF's `num_return_sequences` copies each prompt before the prefill, so G samples cost G prompt
    forwards; on CPU with short completions that is nearly all the work. Here the prompt minus its
    last token is run once, its KV cache repeated G times, and `generate` continues from it (the
    same distribution: the same logits are computed, only once). One sample per prompt, and models
    whose forward takes no cache, use plain `generate`.
    """
    params = inspect.signature(getattr(model, "get_base_model", lambda: model)().forward).parameters
    # transformers 5.x names the cache `cache` (`past_key_values` before, still accepted by generate)
    name = "cache" if "cache" in params else "past_key_values"
    if generations > 1 and ids.shape[1] >= 2 and name in params and "position_ids" in params:
        prefill = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True)
        cache = getattr(prefill, name, None)
        if hasattr(cache, "batch_repeat_interleave"):
            cache.batch_repeat_interleave(generations)
            return model.generate(input_ids=ids.repeat_interleave(generations, dim=0),
                                  attention_mask=mask.repeat_interleave(generations, dim=0), **{name: cache},
                                  **generate_kwargs)
    return model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=generations, **generate_kwargs)


class _TextStop:
    """Stopping criterion: a row is done once its completion's text satisfies `done`; records, per row,
    the completion length at which it first was (generate pads the row after that)."""

    def __init__(self, tokenizer, prompt_len: int, done: Callable[[str], bool]):
        self.tokenizer, self.prompt_len, self.done = tokenizer, prompt_len, done
        self.ends: dict[int, int] = {}

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        flags = [bool(self.done(t)) for t in texts]
        for row, flag in enumerate(flags):
            if flag and row not in self.ends:
                self.ends[row] = input_ids.shape[1] - self.prompt_len
        return torch.tensor(flags, device=input_ids.device)


def _calls(n_prompts: int, settings: SamplingSettings):
    """(prompt indices, samples each, whether the call ends its prompts) per generate call."""
    rows = settings.max_rows
    if rows is not None and settings.samples > rows:  # one prompt per call, its samples in pieces
        for p in range(n_prompts):
            left = settings.samples
            while left:
                n = min(left, rows)
                left -= n
                yield [p], n, not left
        return
    per = settings.batch_size if rows is None else max(1, min(settings.batch_size, rows // settings.samples))
    for start in range(0, n_prompts, per):
        yield list(range(start, min(n_prompts, start + per))), settings.samples, True


def sample(model, tokenizer, prompts: Sequence[Sequence[int]], settings: SamplingSettings, *,
           stop_after: Callable[[str], bool] | None = None,
           progress: Callable[[int], None] | None = None) -> list[Sample]:
    """`settings.samples` completions of each prompt (token ids), prompt-major (prompt 0's samples
    first, in draw order); `progress(n)` is called as each batch finishes `n` prompts."""
    from transformers import StoppingCriteriaList

    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    stops = stop_ids(model, tokenizer)
    kwargs = {**settings.generate_kwargs(), "max_new_tokens": settings.max_new_tokens, "pad_token_id": pad}
    if stops:
        kwargs["eos_token_id"] = stops
    out: list[Sample] = []
    with seeded(settings.seed, device), scoring(model):
        for chunk, n, done in _calls(len(prompts), settings):
            seqs = [[int(t) for t in prompts[i]] for i in chunk]
            ids, mask, pos = left_pad(seqs, pad, device)
            stopper = _TextStop(tokenizer, ids.shape[1], stop_after) if stop_after is not None else None
            extra = {"stopping_criteria": StoppingCriteriaList([stopper])} if stopper is not None else {}
            generated = generate_shared_prefill(model, ids, mask, pos, n, **kwargs, **extra)
            rows, ends = [], []
            for r, row in enumerate(generated[:, ids.shape[1]:].tolist()):
                end = min(stopper.ends.get(r, len(row)), len(row)) if stopper is not None else len(row)
                cut = next((i for i, t in enumerate(row[:end]) if t in stops), None)
                rows.append(row[:end] if cut is None else row[:cut])
                ends.append(None if cut is None else row[cut])
            texts = in_context_texts(tokenizer, [seqs[r // n] for r in range(len(rows))], rows)
            out += [Sample(chunk[r // n], row, stop, text) for r, (row, stop, text) in enumerate(zip(rows, ends, texts))]
            if progress is not None and done:
                progress(len(chunk))
    return out
