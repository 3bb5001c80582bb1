"""`EntropyGRPOTrainer`: TRL's GRPOTrainer with the forking-token mask done carefully.

"Beyond the 80/20 Rule" (arXiv 2506.01939) trains on the top-rho highest-entropy completion
tokens only. TRL 1.16's `top_entropy_quantile` picks them per micro-batch from `torch.quantile`
and keeps its all-token loss denominators. Here (`top_entropy_quantile` keeps TRL's meaning,
the fraction kept; 1.0 turns everything below off):

* `entropy_mask_scope: step` (default): every completion token's entropy under the policy
  (temperature applied, as in TRL's loss) is known right after sampling, and
  `select_forking_tokens` keeps exactly ceil(rho x N) of them over all ranks, with ties broken by
  (global sample, position). The mask travels with the batch through TRL's shuffle/split, so the
  kept set and the update do not depend on the gradient-accumulation steps or micro-batch size
  (nor on the number of ranks, given the same samples and entropies). The population is TRL's
  generation batch: one optimizer step under TRL's defaults (steps_per_generation ==
  gradient_accumulation_steps); with num_iterations > 1 the same mask is reused for every pass.
  Where the entropies come from, cheapest first:
  1. TRL's transformers `generate` path: recorded WHILE SAMPLING by a logits processor placed
     first in generate's list (rl/train/sampling_entropy.py `GenerationEntropy`), i.e. of the raw logits /
     temperature before any penalty/top-k/top-p processing; one (B,) vector per step, no extra
     forward. They leave `_generate` with their rows in TRL's extra fields (`SAMPLING_ENTROPY_FIELD`,
     merged by TRL into the batch's input rows) and enter the scored batch as `forking_entropy`. They differ from a training-time forward only by KV-cache/batching numerics
     (bench/forking_mask.py measures it on SmolLM2-135M), and are computed once per sample, so
     every later use (all micro-batches, all passes) sees the same values.
  2. When TRL runs its own no-grad old-log-prob pass (vLLM importance sampling, num_iterations > 1,
     misaligned accumulation), that pass is replaced by ours, which returns both: still one pass (the
     entropies ride on the returned log-prob tensor, `OLD_LOGP_ENTROPY_ATTR`, into the batch).
  3. Otherwise (vLLM without that pass, continuous batching, tool loops, custom rollouts): one
     no-grad forward of the generation batch (LM head on completion tokens only, in row chunks,
     never a B x T x V logits tensor).
* `entropy_mask_side: bottom`: train on the complement of the top set (the paper's bottom-80%
  ablation), with the same scope, tie-break and normalisation.
* `entropy_mask_scope: micro_batch`: TRL's behaviour (loss-time entropies of one micro-batch,
  gathered over ranks) with `select_forking_tokens` instead of `torch.quantile` (no 2^24 limit;
  exact count ceil(rho x N) where quantile keeps every tie and floor(rho x N + 1 - rho) on
  tie-free data).
* `entropy_mask_normalize: kept` (default, Eq. 6): the policy loss is averaged over kept tokens.
  Done by handing TRL's `_compute_loss` float weights instead of its boolean mask
  (`forking_loss_weights`, behind TRL's hook name `get_high_entropy_mask`; rl/train/forking.py `loss_weights`), which keeps TRL's loss code untouched,
  the KL term on every token and TRL's metrics over every token. (The alternative, folding the
  mask into `tool_mask`, would also mask the KL term, change the logged metrics and leave
  dr_grpo's constant denominator alone.) With TRL's entropy bonus the bonus is a weighted mean
  with these weights (exactly the kept-token mean for all but the per-row losses grpo/sapo/luspo).
* Selective LM head: in scope `step`, when nothing needs every token's log-prob with gradient
  (beta == 0, no entropy bonus, token-level importance sampling, not vespo, no off-policy mask,
  no MoE aux loss, plain logits, text only), the loss forward runs the backbone on every position
  and the head only on kept positions (rl/train/forking.py), through the model's own forward (DDP,
  PEFT and ZeRO-3 hooks intact; under ZeRO-3 every rank makes the same number of head calls).
  Unkept positions get the old log-prob (or 0), i.e. ratio 1: their loss weight is 0, so loss and
  gradients are unchanged. Two logged numbers differ from the full head only when num_iterations
  > 1: TRL's clip ratios count unkept tokens as unclipped, and its `entropy` metric reports the
  generation-time entropies (the full head recomputes them on every pass).
* Logs per step: forking/threshold, forking/kept_fraction, forking/entropy_kept,
  forking/entropy_all; with wandb in report_to, every `forking_table_steps` steps a W&B table of
  the most frequent forking tokens since the previous table.
* Per-batch state travels with the batch: the step's selection (`ForkingStep`) and the entropies
  it came from are keys of TRL's batch dict. TRL's loss hooks (`_get_per_token_logps_and_entropies`,
  `get_high_entropy_mask`) receive no batch, so `compute_loss` shows them its micro-batch
  (`_forking_loss_inputs`) for the duration of that one call only.
* Settings are read from the recipe fields themselves (`entropy_setting`: EntropyGRPOConfig's
  default when the trainer gets a plain GRPOConfig). Also in the class: the fault guards
  (rl/runtime/faults.py `FaultGuardsMixin`), RLP (rl/train/rlp_trainer.py), the G/(G-1) advantage
  scaling for any reward (rl/train/advantages.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter

import torch
import torch.distributed as dist
from accelerate.utils import DistributedType, gather_object, is_peft_model
from trl import GRPOTrainer
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from trl.data_utils import is_conversational
from trl.models.utils import disable_gradient_checkpointing

from rl.signal.decoding import decode_alone, in_context_texts
from rl.signal.entropy import masked_stats, select_forking_tokens
from rl.runtime.faults import FaultGuardsMixin
from rl.train.advantages import GroupAdvantageScalingMixin
from rl.train.config import entropy_setting
from rl.train.dynamic_sampling_trainer import DynamicSamplingMixin
from rl.train.losses import LOSS_VARIANTS
from rl.train.forking import (
    ForkingRequest,
    ForkingStep,
    install_forking_forward,
    loss_weights,
    token_order_key,
    top_forking_tokens,
)
from rl.train.selective_head import has_plain_logits, head_chunk_rows
from rl.train.sampling_entropy import aligned_entropy_table, record_generation_entropy
from rl.train.rlp_trainer import RLPTrainerMixin

logger = logging.getLogger(__name__)

# Keyword arguments of `_get_per_token_logps_and_entropies` that carry multimodal inputs.
_MM_KEYS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
            "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")
TABLE_COLUMNS = ["token", "token_id", "count", "occurrences", "kept_rate", "mean_entropy"]
#: TRL extra field (one value per completion row) carrying what the sampler recorded: (entropies, sampled ids).
SAMPLING_ENTROPY_FIELD = "_forking_sampling_entropy"
#: Attribute of the old-log-prob tensor our scan returns to TRL: the entropies computed in the same pass.
OLD_LOGP_ENTROPY_ATTR = "forking_entropy"


def _plain_message(completion) -> bool:
    """TRL's chat completion decoded by `batch_decode`: one assistant message with text content only."""
    return (isinstance(completion, list) and len(completion) == 1 and isinstance(completion[0], dict)
            and set(completion[0]) == {"role", "content"} and completion[0]["role"] == "assistant"
            and isinstance(completion[0]["content"], str))


class EntropyGRPOTrainer(FaultGuardsMixin, RLPTrainerMixin, DynamicSamplingMixin, GroupAdvantageScalingMixin,
                         GRPOTrainer):
    """GRPOTrainer for entropy-rl recipes (accepts `EntropyGRPOConfig`; plain GRPOConfig gets its defaults).

    The fault guards come from `FaultGuardsMixin` (rl/runtime/faults.py), RLP (the `rlp` reward's
    policy scorer, teacher updates) from `RLPTrainerMixin` (rl/train/rlp_trainer.py), DAPO dynamic sampling
    from `DynamicSamplingMixin` (rl/train/dynamic_sampling_trainer.py: one or more generation rounds, the
    kept samples form the batch the step's selection sees), G/(G-1) advantage scaling from
    `GroupAdvantageScalingMixin` (rl/train/advantages.py)."""

    _tag_names = ["trl", "grpo", "entropy-rl"]
    #: Use the selective LM head when allowed (switch off to compare with the full head).
    forking_selective_head = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._forking_loss_inputs = None  # the micro-batch during compute_loss only (TRL's loss hooks get none)
        self._forking_table = (Counter(), Counter(), Counter())  # kept counts, valid counts, kept entropy sums
        self._forking_table_step = 0
        target = self.model.get_base_model() if is_peft_model(self.model) else self.model
        install_forking_forward(target)
        self.forking_selective_reason = self._why_not_selective(target)
        if self._forking_on:
            if self._setting("entropy_mask_scope") == "step" and self.args.steps_per_generation != self.args.gradient_accumulation_steps:
                logger.warning("entropy_mask_scope=step selects over each generation batch (steps_per_generation=%d "
                               "micro-batches), not exactly one optimizer step (gradient_accumulation_steps=%d)",
                               self.args.steps_per_generation, self.args.gradient_accumulation_steps)
            logger.info("forking mask: scope=%s normalize=%s side=%s ratio=%g selective LM head: %s",
                        self._setting("entropy_mask_scope"), self._setting("entropy_mask_normalize"),
                        self._setting("entropy_mask_side"), self.top_entropy_quantile,
                        self.forking_selective_reason or "on")

    # ------------------------------------------------------------------ configuration

    def _setting(self, name: str):
        """A recipe field of this run (its EntropyGRPOConfig default under a plain GRPOConfig)."""
        return entropy_setting(self.args, name)

    @property
    def _forking_on(self) -> bool:
        return self.top_entropy_quantile < 1.0

    @property
    def _step_scope(self) -> bool:
        """The step's selection is made at generation time (scope `step`, training)."""
        return bool(self._forking_on and self._setting("entropy_mask_scope") == "step" and self.model.training)

    def _forking_group(self):
        return dist.group.WORLD if self.accelerator.num_processes > 1 else None

    def _why_not_selective(self, target) -> str | None:
        """None when the selective head may replace the full one, else the reason (for the log)."""
        peft_config = getattr(self.model, "active_peft_config", None)
        variant = LOSS_VARIANTS.get(self.loss_type)
        checks = [
            (not self._forking_on, "mask off"),
            (self._setting("entropy_mask_scope") != "step", "scope micro_batch selects at loss time"),
            (self.beta != 0.0, "beta != 0: the KL term needs every token's log-prob"),
            (self._entropy_bonus_enabled, "the entropy bonus needs entropies with gradient"),
            (self.importance_sampling_level != "token", "sequence-level importance weights read every token"),
            (variant is None, f"loss_type {self.loss_type!r} has no entry in rl/train/losses.py"),
            (variant is not None and not variant.selective_head, variant and variant.why_not_selective),
            (self.off_policy_mask_threshold is not None, "the off-policy mask reads every token's log-ratio"),
            (self.aux_loss_enabled, "the MoE aux loss comes from the full forward"),
            (not has_plain_logits(target.config), "the model transforms its logits (softcap/scale)"),
            (peft_config is not None and getattr(peft_config, "is_prompt_learning", False), "prompt-learning PEFT"),
        ]
        return next((why for bad, why in checks if bad), None)

    def _head_calls(self, n_rows: int) -> int | None:
        """Under DeepSpeed ZeRO-3 each LM-head call gathers its weight collectively, so every rank
        must call the head equally often: the largest chunk count over the ranks. Otherwise None."""
        if self.accelerator.num_processes == 1 or not is_deepspeed_zero3_enabled():
            return None
        head = self.model.get_output_embeddings()
        vocab = getattr(head, "out_features", None) or self.model.config.get_text_config().vocab_size
        device = self.accelerator.device
        count = torch.tensor([math.ceil(n_rows / head_chunk_rows(vocab, device))], device=device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        return max(1, int(count))

    def _head_grad_into_param(self) -> bool:
        """Whether the selective head may add its weight gradient straight into `.grad`: one process
        and no wrapper that hooks gradient accumulation (DDP's reducer, DeepSpeed, FSDP each watch
        every parameter's gradient arrive). Saves a (vocab, hidden) tensor at the backward's peak."""
        return (self.accelerator.distributed_type == DistributedType.NO and not self.is_deepspeed_enabled
                and not self.is_fsdp_enabled)

    def _trl_computes_old_logps(self) -> bool:
        """TRL 1.16's condition for its no-grad old-log-prob pass in `_generate_and_score_completions`."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return bool(self.args.gradient_accumulation_steps % generate_every != 0
                    or (self.use_vllm and self.vllm_importance_sampling_correction))

    # ------------------------------------------------------------------ completion text

    def _generate(self, prompts: list):
        """TRL's sampling and decoding, with two changes.

        The completion text the rewards (and the completions log) get is the text the model wrote
        (rl/signal/decoding.py). TRL decodes each completion alone, which drops a SentencePiece-style
        first token's leading space and, with `clean_up_tokenization_spaces`, the space in " ." / " ," /
        " 's" (RPT rewards then pay 0 for a right guess):
        - a plain-text prompt's completion becomes the text it adds after its prompt;
        - a chat completion keeps TRL's message content (decoded alone, as a message is) without the
          clean-up. Completions TRL parsed with the tokenizer's response schema, and tool loops, stay TRL's.

        In scope `step` on TRL's plain `generate` path, each sampled token's entropy of softmax(raw logits /
        temperature) is recorded while sampling and leaves with the batch: one (entropies, sampled ids)
        pair per completion row in TRL's extra fields (`SAMPLING_ENTROPY_FIELD`)."""
        record = self._records_generation_entropy()
        target = self.model.get_base_model() if is_peft_model(self.model) else self.model
        recording = record_generation_entropy(target, self.temperature) if record else contextlib.nullcontext([])
        with recording as recorders:
            out = super()._generate(prompts)
        prompt_ids, completion_ids, _tool_mask, completions, logprobs, extra = out[:6]
        rows = self.sampling_entropies(recorders, completion_ids) if record else None
        if rows is not None:
            extra = {**(extra or {}), SAMPLING_ENTROPY_FIELD: rows}
        if prompts and not self.tools:
            if not is_conversational({"prompt": prompts[0]}):
                if all(isinstance(c, str) for c in completions):
                    completions = in_context_texts(self.processing_class, prompt_ids, completion_ids)
            elif (getattr(self._tokenizer, "clean_up_tokenization_spaces", False)
                  and getattr(self._tokenizer, "response_template", None) is None
                  and getattr(self._tokenizer, "response_schema", None) is None
                  and all(_plain_message(c) for c in completions)):
                completions = [[{"role": "assistant", "content": text}]
                               for text in decode_alone(self.processing_class, completion_ids)]
        return (*out[:3], completions, logprobs, extra, *out[6:])

    def sampling_entropies(self, recorders: list, completion_ids: list) -> list[tuple] | None:
        """Hook: per completion row, (the entropies recorded while sampling it, the tokens the sampler drew),
        or None to have them recomputed. Expects exactly one `generate` call per batch (`recorders` holds
        one recorder per call). The batch uses them only where its completions are the drawn tokens
        (`aligned_entropy_table`). A rollout that replays completions (bench/forking_mask.py) returns its own."""
        if len(recorders) != 1 or recorders[0].sampled is None or len(recorders[0].sampled) != len(completion_ids):
            return None
        recorder = recorders[0]
        rows = recorder.per_row([min(len(c), len(recorder.steps)) for c in completion_ids])
        return list(zip(rows, recorder.sampled))

    # ------------------------------------------------------------------ step scope: entropies and selection

    def _generation_round(self, inputs: list) -> dict:
        """One scored generation round (dynamic sampling may run several per batch): the entropies that
        came with it enter its batch as `forking_entropy`."""
        out = super()._generation_round(inputs)
        if self._step_scope:
            entropy = self._batch_entropy(inputs, out)
            if entropy is not None:
                out["forking_entropy"] = entropy
        return out

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if not self._step_scope:
            return out
        # Sampling-time entropies (no extra pass) > TRL's old-log-prob pass (shared) > one no-grad scan.
        entropy = out.pop("forking_entropy", None)
        if entropy is None:
            entropy = self._forking_scan_batch(out)
        out.update(self._select_step_tokens(out, entropy).to_batch())
        return out

    def _records_generation_entropy(self) -> bool:
        """Whether sampling can record the entropies: TRL's plain transformers `generate` path (vLLM,
        continuous batching, tool loops and custom rollouts fall back to TRL's old-log-prob pass or a scan)."""
        return bool(self._step_scope and not self.use_vllm
                    and not getattr(self, "use_transformers_continuous_batching", False) and not self.tools
                    and getattr(self, "rollout_func", None) is None)

    def _batch_entropy(self, inputs: list, out: dict) -> torch.Tensor | None:
        """The entropies that came with this scored batch, taken out of it: the sampler's (from the input
        rows, `SAMPLING_ENTROPY_FIELD`), else those of TRL's old-log-prob pass (`OLD_LOGP_ENTROPY_ATTR` on
        `out["old_per_token_logps"]`), else None."""
        recorded = [row.pop(SAMPLING_ENTROPY_FIELD, None) if isinstance(row, dict) else None for row in inputs]
        old = out.get("old_per_token_logps")
        from_old = getattr(old, OLD_LOGP_ENTROPY_ATTR, None)
        if from_old is not None:
            delattr(old, OLD_LOGP_ENTROPY_ATTR)
        if recorded and all(r is not None for r in recorded):
            dtype = torch.float64 if self.model.dtype == torch.float64 else torch.float32
            entropy = aligned_entropy_table(recorded, out["completion_ids"], out["completion_mask"], dtype)
            if entropy is not None:
                return entropy
        return from_old

    def _forking_scan(self, input_ids, attention_mask, completion_len: int, batch_size: int):
        """No-grad (log-prob, entropy) of every completion token, (B, T) each, zero on padding."""
        shape = (input_ids.shape[0], completion_len)
        dtype = torch.float64 if self.model.dtype == torch.float64 else torch.float32
        logps = torch.zeros(shape, dtype=dtype, device=input_ids.device)
        ents = torch.zeros_like(logps)
        completion_mask = attention_mask[:, -completion_len:].bool()
        with torch.no_grad():
            for start in range(0, shape[0], batch_size):
                rows, cols = completion_mask[start:start + batch_size].nonzero(as_tuple=True)
                request = ForkingRequest("scan", rows, cols, completion_len, self.temperature,
                                         fp32_head=bool(self.args.cast_lm_head_to_fp32),
                                         num_chunks=self._head_calls(rows.numel()))
                with self.accelerator.autocast():
                    out = self.model(input_ids=input_ids[start:start + batch_size],
                                     attention_mask=attention_mask[start:start + batch_size], forking=request)
                logps[rows + start, cols] = out.log_probs.to(dtype)
                ents[rows + start, cols] = out.entropy.to(dtype)
        return logps, ents

    def _forking_scan_batch(self, out: dict) -> torch.Tensor:
        input_ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attention_mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        completion_len = out["completion_ids"].shape[1]
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            mm = {k: out[k] for k in _MM_KEYS if k in out}
            if mm:  # multimodal: TRL's own forward knows how to slice the image inputs
                with torch.no_grad():
                    _, ents, _ = super()._get_per_token_logps_and_entropies(
                        self.model, input_ids, attention_mask, completion_len,
                        batch_size=self.args.per_device_train_batch_size, compute_entropy=True, **mm)
                return ents
            batch_size = self.args.per_device_train_batch_size
            return self._forking_scan(input_ids, attention_mask, completion_len, batch_size)[1]

    def _select_step_tokens(self, out: dict, entropy: torch.Tensor) -> ForkingStep:
        valid = out["completion_mask"].bool()
        if out.get("tool_mask") is not None:
            valid = valid & out["tool_mask"].bool()
        entropy = entropy if entropy.dtype == torch.float64 else entropy.float()
        rows, cols = valid.shape
        keys = token_order_key(rows, cols, self.accelerator.process_index * rows, device=valid.device)
        group = self._forking_group()
        kept, threshold = select_forking_tokens(entropy, valid, self.top_entropy_quantile, group, order_key=keys)
        kept = self._forking_side_mask(kept, valid)
        stats = masked_stats(entropy, valid, kept, group, threshold=threshold)
        self._forking_record(stats, out["completion_ids"], valid, kept, entropy)
        device = valid.device
        return ForkingStep(kept, entropy, torch.tensor(int(stats["valid_tokens"]), dtype=torch.int64, device=device),
                           torch.tensor(int(stats["kept_tokens"]), dtype=torch.int64, device=device))

    def _forking_side_mask(self, top: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """`entropy_mask_side: bottom` trains on the complement of the top set (the paper's bottom-80% ablation)."""
        return top if self._setting("entropy_mask_side") == "top" else valid & ~top

    # ------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._forking_loss_inputs = inputs
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self._forking_loss_inputs = None

    def get_high_entropy_mask(self, entropies: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
        """TRL's hook, by TRL's name: `_compute_loss` multiplies the per-token policy loss by what it returns.
        Ours returns float loss weights, not a mask: `forking_loss_weights` (`threshold` = 1 - ratio, unused)."""
        return self.forking_loss_weights(entropies, mask)

    def forking_loss_weights(self, entropies: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) float loss weights, zero off the kept tokens (rl/train/forking.py `loss_weights`).

        Scope step: the kept tokens chosen at generation time (the micro-batch's `ForkingStep`).
        Otherwise (scope micro_batch, or eval): selected here from this micro-batch's entropies over all
        ranks, as TRL does.
        """
        valid = mask.bool()
        inputs = self._forking_loss_inputs
        step = ForkingStep.from_batch(inputs)
        if step is not None:
            kept = step.mask & valid
            n_valid, n_kept = step.valid_total, step.kept_total
        else:
            group = self._forking_group()
            kept, thr = select_forking_tokens(entropies.detach(), valid, self.top_entropy_quantile, group)
            kept = self._forking_side_mask(kept, valid)
            stats = masked_stats(entropies, valid, kept, group, threshold=thr)
            n_valid, n_kept = stats["valid_tokens"], stats["kept_tokens"]
            if inputs is not None:
                self._forking_record(stats, inputs["completion_ids"], valid, kept, entropies.detach())
        return loss_weights(kept, valid, self.loss_type, self._setting("entropy_mask_normalize"),
                            population_valid=n_valid,
                            population_kept=n_kept, dtype=torch.promote_types(entropies.dtype, torch.float32))

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, compute_aux_loss=False, **mm):
        text_only = all(v is None for v in mm.values())
        if (model is self.model and not torch.is_grad_enabled() and self._step_scope
                and self._trl_computes_old_logps()):
            # TRL's old-log-prob pass: one scan gives log-probs and the step's entropies, which ride on the
            # returned tensor into TRL's batch (`_batch_entropy`). With PEFT and beta != 0 TRL's reference
            # pass comes here too (adapter disabled): its tensor carries its own entropies, never read.
            if text_only and not compute_aux_loss:
                logps, ents = self._forking_scan(input_ids, attention_mask, logits_to_keep,
                                                 batch_size or input_ids.shape[0])
                aux = None
            else:
                logps, ents, aux = super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, batch_size, True, compute_aux_loss, **mm)
            setattr(logps, OLD_LOGP_ENTROPY_ATTR, ents)
            return logps, (ents if compute_entropy else None), aux
        inputs = self._forking_loss_inputs
        step = ForkingStep.from_batch(inputs)
        if (step is not None and compute_entropy and not compute_aux_loss
                and text_only and torch.is_grad_enabled() and self.forking_selective_head
                and self.forking_selective_reason is None
                and tuple(step.mask.shape) == (input_ids.shape[0], logits_to_keep)):
            return self._selective_logps(model, input_ids, attention_mask, logits_to_keep, step,
                                         inputs.get("old_per_token_logps"))
        return super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss, **mm)

    def _selective_logps(self, model, input_ids, attention_mask, logits_to_keep, step: ForkingStep, old_logps):
        """(B, T) log-probs with gradient at kept positions only, plus the generation-time entropies."""
        rows, cols = step.mask.nonzero(as_tuple=True)
        request = ForkingRequest("select", rows, cols, logits_to_keep, self.temperature,
                                 fp32_head=bool(self.args.cast_lm_head_to_fp32),
                                 num_chunks=self._head_calls(rows.numel()),
                                 grad_into_param=self._head_grad_into_param())
        with self.accelerator.autocast():
            out = model(input_ids=input_ids, attention_mask=attention_mask, forking=request)
        kept_logps = out.log_probs
        base = (torch.zeros(step.mask.shape, dtype=kept_logps.dtype, device=input_ids.device)
                if old_logps is None else old_logps.detach().to(kept_logps.dtype))
        logps = base.index_put((rows, cols), kept_logps)
        return logps, step.entropy, None

    # ------------------------------------------------------------------ logging

    def _forking_table_on(self) -> bool:
        report_to = self.args.report_to or []
        steps = self._setting("forking_table_steps")
        return bool(steps and steps > 0 and "wandb" in report_to
                    and self.model.training)

    def _forking_record(self, stats: dict, completion_ids, valid, kept, entropy) -> None:
        """Per-step numbers into TRL's metrics; token counts (all ranks) for the W&B table."""
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        metrics["forking/threshold"].append(stats["threshold"])
        metrics["forking/kept_fraction"].append(stats["kept_fraction"])
        metrics["forking/entropy_kept"].append(stats["kept_entropy_mean"])
        metrics["forking/entropy_all"].append(stats["valid_entropy_mean"])
        if not self._forking_table_on():
            return
        kept_ids, kept_counts = completion_ids[kept].unique(return_counts=True)
        sums = torch.zeros(kept_ids.shape, dtype=torch.float64, device=kept_ids.device)
        sums.index_add_(0, torch.searchsorted(kept_ids, completion_ids[kept]), entropy[kept].double())
        valid_ids, valid_counts = completion_ids[valid].unique(return_counts=True)
        local = (kept_ids.tolist(), kept_counts.tolist(), sums.tolist(), valid_ids.tolist(), valid_counts.tolist())
        for k_ids, k_counts, k_sums, v_ids, v_counts in gather_object([local]):
            self._forking_table[0].update(dict(zip(k_ids, k_counts)))
            self._forking_table[1].update(dict(zip(v_ids, v_counts)))
            self._forking_table[2].update(dict(zip(k_ids, k_sums)))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        super().log(logs, start_time)
        step = self.state.global_step
        if not (self._forking_table_on() and self._forking_table[0]
                and step - self._forking_table_step >= self._setting("forking_table_steps")):
            return
        kept_counts, valid_counts, sums = self._forking_table
        self._forking_table, self._forking_table_step = (Counter(), Counter(), Counter()), step
        if not self.accelerator.is_main_process:
            return
        import wandb

        if wandb.run is None:
            return
        rows = top_forking_tokens(kept_counts, valid_counts, sums, lambda i: self._tokenizer.decode([i]))
        wandb.log({"forking_tokens": wandb.Table(columns=TABLE_COLUMNS, data=rows)})
