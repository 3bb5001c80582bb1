"""The signal check: does GRPO have anything to learn from, before the first step?

GRPO learns only from groups whose rewards are not all equal (the group-relative advantage of an
all-0 or all-1 group is 0). A recipe whose model never earns a reward (a 135M model asked to box
its answer) trains for hours and changes nothing. So before training we sample `num_generations`
completions for a handful of training rows with the policy and the recipe's own sampling
settings, score them with the recipe's rewards exactly as TRL combines them (weighted sum, None
rows skipped), and print the mean reward and the share of groups with signal. With no group
having any signal the run stops with one line that says what was seen and what to change
(`signal_check: warn|off` overrides). It costs one `generate` call per batch of prompts.

The pure parts (`combine_rewards`, `groups_with_signal`, `SignalReport`) are tested directly;
`sample_completions` renders prompts as TRL 1.16 does (chat messages through the chat template
with the generation prompt; strings tokenized as they are) and samples with the one sampler
(rl/signal/sampling.py).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from rewards.registry import spec_of
from rl.errors import UserError
from rl.signal.decoding import decode_alone
from rl.signal.sampling import SamplingSettings, sample

logger = logging.getLogger(__name__)

def combine_rewards(per_func: Sequence[Sequence[float | None]], weights: Sequence[float] | None) -> list[float]:
    """Total reward per completion as TRL computes it: the weighted sum over reward functions,
    a None (reward does not apply) counting as nothing (TRL's nansum)."""
    if not per_func:
        return []
    weights = list(weights) if weights is not None else [1.0] * len(per_func)
    count = len(per_func[0])
    totals = []
    for i in range(count):
        total = 0.0
        for values, weight in zip(per_func, weights):
            value = values[i]
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                total += weight * float(value)
        totals.append(total)
    return totals


def groups_with_signal(totals: Sequence[float], group_size: int, tol: float = 1e-9) -> int:
    """Number of consecutive groups of `group_size` whose rewards are not all equal."""
    if group_size < 1 or len(totals) % group_size:
        raise ValueError(f"{len(totals)} rewards do not split into groups of {group_size}")
    count = 0
    for start in range(0, len(totals), group_size):
        group = totals[start:start + group_size]
        if max(group) - min(group) > tol:
            count += 1
    return count


@dataclass
class SignalReport:
    """What the check saw: sizes, mean total reward, groups with signal, per-reward means, an example."""

    prompts: int
    generations: int
    mean_reward: float
    groups_with_signal: int
    reward_means: dict[str, float] = field(default_factory=dict)
    boxed: int | None = None  # completions with a complete \boxed{} (when a reward reads boxes)
    example: str = ""
    seconds: float = 0.0

    @property
    def samples(self) -> int:
        return self.prompts * self.generations

    @property
    def signal_share(self) -> float:
        return self.groups_with_signal / self.prompts if self.prompts else 0.0

    def format(self) -> str:
        per = ", ".join(f"{name} {value:.3f}" for name, value in self.reward_means.items())
        boxed = f"; complete \\boxed{{}} in {self.boxed} of {self.samples}" if self.boxed is not None else ""
        return (f"signal check: {self.prompts} prompts x {self.generations} samples: mean reward "
                f"{self.mean_reward:.3f} ({per}); {self.groups_with_signal} of {self.prompts} groups have unequal "
                f"rewards ({100 * self.signal_share:.0f}%){boxed} [{self.seconds:.1f} s]")

    def no_signal_message(self, format_hint: str = "") -> str:
        seen = f"all {self.samples} samples of {self.prompts} training prompts got the same reward " \
               f"({self.mean_reward:.3f})"
        if self.boxed is not None:
            seen += f"; the model wrote a complete \\boxed{{}} in {self.boxed} of {self.samples}"
        if self.example:
            seen += f"; e.g. {self.example!r}"
        fix = format_hint or "use rewards the model can earn, a stronger model, or more samples (num_generations)"
        return (f"signal check: no signal for GRPO: {seen}. {fix}; "
                "or set `signal_check: warn` to train anyway")


def _short(text: str, limit: int = 60) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pick_rows(n_rows: int, count: int) -> list[int]:
    """`count` row indices spread evenly over the dataset (deterministic, no RNG)."""
    count = max(0, min(count, n_rows))
    if count == 0:
        return []
    return sorted({int(i * n_rows / count) for i in range(count)})


def render_prompt_ids(tokenizer, prompt) -> list[int]:
    """Token ids of one prompt as TRL 1.16 renders it: chat messages through the chat template with
    the generation prompt, a string tokenized as it is (the tokenizer's own special tokens)."""
    if isinstance(prompt, list):
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(text=prompt)["input_ids"])


def sample_completions(model, tokenizer, prompts: list, generations: int, *, max_new_tokens: int,
                       temperature: float = 1.0, top_p: float = 1.0, top_k: int | None = 0,
                       min_p: float | None = None, repetition_penalty: float = 1.0,
                       batch_size: int = 4, seed: int = 0) -> tuple[list, list[list[int]]]:
    """`generations` samples per prompt (grouped, prompt-major as in TRL) from the one sampler
    (rl/signal/sampling.py: shared prefill, a forked RNG seeded with `seed`, so training draws the
    same samples with the check on or off); returns the completions in the form the trainer passes
    to rewards (`EntropyGRPOTrainer._generate`: for a plain-text prompt the text the completion adds
    after it; for chat prompts one assistant message decoded alone) and their ids, EOS included as
    in TRL's completion ids."""
    settings = SamplingSettings(samples=generations, max_new_tokens=max_new_tokens, temperature=temperature,
                                top_p=top_p, top_k=top_k, min_p=min_p, repetition_penalty=repetition_penalty,
                                batch_size=batch_size, seed=seed)
    drawn = sample(model, tokenizer, [render_prompt_ids(tokenizer, p) for p in prompts], settings)
    completion_ids = [s.ids + ([s.stop] if s.stop is not None else []) for s in drawn]
    alone = decode_alone(tokenizer, completion_ids)  # a chat completion is a message, decoded alone
    completions = [[{"role": "assistant", "content": alone[j]}] if isinstance(prompts[s.prompt], list) else s.text
                   for j, s in enumerate(drawn)]
    return completions, completion_ids


def score_completions(rows: list[dict], completions: list, completion_ids: list, reward_funcs) -> list[list]:
    """Each reward's values for completions sampled row-major (the same number per row), called as
    TRL 1.16 calls rewards: every dataset column as a keyword list, one entry per completion."""
    per_row = len(completions) // len(rows)
    repeated = [row for row in rows for _ in range(per_row)]
    keys = [k for k in rows[0] if k not in ("prompt", "completion", "completion_ids")]
    kwargs: dict[str, Any] = {key: [row.get(key) for row in repeated] for key in keys}
    kwargs.update(trainer_state=None, log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None)
    prompts = [row["prompt"] for row in repeated]
    return [list(func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs))
            for func in reward_funcs]


def _reward_name(func) -> str:
    return getattr(func, "__name__", type(func).__name__)


def run_signal_check(model, tokenizer, dataset, reward_funcs, reward_weights, *, generations: int,
                     max_new_tokens: int, prompts: int = 8, temperature: float = 1.0, top_p: float = 1.0,
                     top_k: int | None = 0, min_p: float | None = None, repetition_penalty: float = 1.0,
                     seed: int = 0) -> SignalReport:
    """Sample, score and summarise (see the module doc); `dataset` is a datasets.Dataset or list of rows."""
    import time

    from rewards.rpt import completion_text, extract_prediction

    started = time.perf_counter()
    n_rows = len(dataset)
    rows = [dict(dataset[i]) for i in pick_rows(n_rows, prompts)]
    if not rows:
        raise UserError("signal check: the training dataset has no rows")
    prompt_list = [row["prompt"] for row in rows]
    completions, completion_ids = sample_completions(
        model, tokenizer, prompt_list, generations, max_new_tokens=max_new_tokens, temperature=temperature,
        top_p=top_p, top_k=top_k, min_p=min_p, repetition_penalty=repetition_penalty, seed=seed)
    for func in reward_funcs:
        if inspect.iscoroutinefunction(func):
            raise UserError(f"signal check: reward `{_reward_name(func)}` is async; set `signal_check: off`")
    per_func = score_completions(rows, completions, completion_ids, reward_funcs)
    means = {}
    for func, values in zip(reward_funcs, per_func):
        applied = [float(v) for v in values if v is not None]
        means[_reward_name(func)] = sum(applied) / len(applied) if applied else float("nan")
    totals = combine_rewards(per_func, reward_weights)
    texts = [completion_text(c) or "" for c in completions]
    reads_boxes = any(getattr(spec_of(f), "boxed_answer", False) for f in reward_funcs)
    return SignalReport(
        prompts=len(rows), generations=generations, mean_reward=sum(totals) / len(totals),
        groups_with_signal=groups_with_signal(totals, generations), reward_means=means,
        boxed=sum(1 for t in texts if extract_prediction(t)) if reads_boxes else None,
        example=_short(texts[0]) if texts else "", seconds=time.perf_counter() - started)


def format_hint(reward_funcs) -> str:
    """What to change, by the rewards in use (their registered RPT format)."""
    formats = {getattr(spec_of(f), "rpt_format", None) for f in reward_funcs}
    if "reasoning" in formats:
        return ("for a small or non-reasoning model use the completion format (`rpt_format: completion`, "
                "reward_funcs: [rpt_completion]) or an instruction-following reasoning model")
    if "completion" in formats:
        return "raise num_generations or temperature, or lower rpt_min_entropy (easier positions)"
    return ""


def check_signal_before_training(trainer, script_args, training_args) -> SignalReport | None:
    """The check as `rl train` runs it on the built trainer (every rank the same work, so ranks agree).

    Skipped (with a log line) when `signal_check: off`, and under DeepSpeed ZeRO-3, where the
    weights are already sharded at this point (run `rl train --dry-run` on one process instead).
    """
    action = getattr(script_args, "signal_check", "stop")
    if action == "off":
        return None
    if getattr(trainer, "is_deepspeed_enabled", False):
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():
            logger.info("signal check skipped under ZeRO-3 (sharded weights); `rl train --dry-run` runs it")
            return None
    # a policy-scored reward (registered `needs_policy`, e.g. `rlp`) scores through the trainer's scorer
    scorer = getattr(trainer, "_rlp", None)
    bindings = {spec.bind_scorer for spec in map(spec_of, trainer.reward_funcs) if spec is not None and spec.needs_policy}
    with contextlib.ExitStack() as scope:
        for bind in bindings if scorer is not None else ():
            scope.enter_context(bind(scorer.quiet()))
        report = _run_for(trainer, script_args, training_args)
    if trainer.is_world_process_zero():
        print(report.format(), flush=True)
    if report.groups_with_signal == 0:
        message = report.no_signal_message(format_hint(trainer.reward_funcs))
        if action == "stop":
            raise UserError(message)
        logger.warning(message)
    return report


def _run_for(trainer, script_args, training_args) -> SignalReport:
    return run_signal_check(
        trainer.model, trainer.processing_class, trainer.train_dataset, trainer.reward_funcs,
        getattr(trainer, "reward_weights", None).tolist() if getattr(trainer, "reward_weights", None) is not None
        else None,
        generations=training_args.num_generations, max_new_tokens=training_args.max_completion_length,
        prompts=script_args.signal_check_prompts, temperature=training_args.temperature, top_p=training_args.top_p,
        top_k=training_args.top_k, min_p=training_args.min_p, repetition_penalty=training_args.repetition_penalty,
        seed=training_args.seed)
