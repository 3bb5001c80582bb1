"""`CaftSFTTrainer`: a thin TRL SFTTrainer subclass adding CAFT's auxiliary heads' loss.

TRL computes the next-token loss exactly as it always does (its fused LM head); a pre-hook on the
trunk's last decoder layer records that layer's inputs during the same forward (rl/sft/heads.py),
and the heads' terms are added from them (rl/sft/losses.py). Nothing is patched globally.

Each head's term is its summed cross-entropy over the positions it can score divided by the same
token count as TRL's next-token loss (`num_items_in_batch`: every micro-batch of the optimizer step
on every rank), so the heads' loss accumulates across micro-batches and ranks exactly like CE_0 and a
2-rank run matches one process. Term k is therefore head k's mean CE times the share of positions it
can score (slightly under 1: the last k tokens of each sequence have no target).

The heads hang off the unwrapped model as `caft_heads` (DDP and DeepSpeed see them; they are
attached after PEFT, so they never get LoRA layers), but the policy checkpoint leaves them out
(`_save`): it stays a plain model or adapter that TRL, vLLM and `rl eval` load unchanged. Stage
`heads` also writes them into each checkpoint's `caft-heads/` and reloads that on resume (transformers first
lists the heads' keys as missing from the checkpoint's model.safetensors: expected, they load right after).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from trl import SFTTrainer

from rl.sft.heads import (
    ATTR,
    LastLayerInputs,
    attach,
    build_heads,
    find_trunk,
    head_hidden,
    heads_of,
    heads_state,
    load_heads_into,
    logit_softcap,
    model_identity,
    write_heads,
)
from rl.sft.losses import combine, head_ce_sum, head_targets, head_weights, sine_down

logger = logging.getLogger(__name__)

CHECKPOINT_HEADS = "caft-heads"


class CaftSFTTrainer(SFTTrainer):
    """SFTTrainer + CAFT heads when `args.aux_mtp == "caft"`; exactly SFTTrainer otherwise.

    `base_model_name`: the recipe's model name, written into saved heads and checked when loading.
    """

    def __init__(self, *args, base_model_name: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.caft = getattr(self.args, "aux_mtp", "none") == "caft"
        self._caft_eval = {}
        if not self.caft:
            return
        stage = self.args.caft_stage
        self.caft_identity = model_identity(self.model.config, base_model_name or self.model.config.name_or_path)
        heads = build_heads(self.model, self.args.caft_num_heads, self.args.caft_head_kind,
                            init_from_last=stage == "heads")
        if stage == "finetune":
            load_heads_into(heads, self.args.caft_heads_path)
        else:  # stage 1: only the heads learn
            for p in self.model.parameters():
                p.requires_grad_(False)
        attach(self.model, heads, trainable=stage == "heads")
        self._capture = LastLayerInputs(self.model)

    # --- the loss ---
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.caft:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        labels = inputs["labels"]
        position_ids = inputs.get("position_ids")
        with self._capture.capturing():
            result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                          num_items_in_batch=num_items_in_batch)
        loss, outputs = result if return_outputs else (result, None)
        hidden, layer_kwargs = self._capture.take()
        heads_stage = self.args.caft_stage == "heads"
        if heads_stage:
            scale = 1.0
        else:
            schedule = (sine_down(self.state.global_step, self.state.max_steps)
                        if self.args.caft_schedule == "sine_down" else 1.0)
            scale = float(self.args.caft_coefficient) * schedule
        if num_items_in_batch is not None:
            denominator = torch.as_tensor(num_items_in_batch, device=labels.device).clamp(min=1)
            factor = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
        else:
            denominator = (labels[:, 1:] != -100).sum().clamp(min=1)
            factor = 1
        terms = []
        grad = torch.is_grad_enabled() and scale != 0.0
        with torch.set_grad_enabled(grad):
            for k in range(1, heads_of(model).num_heads + 1):
                valid, target = head_targets(labels, k, position_ids)
                h = head_hidden(heads_of(model), model, k, hidden, layer_kwargs)
                ce, count, hits = head_ce_sum(h, find_trunk(model)[2], valid, target, logit_softcap(model))
                terms.append(ce / denominator * factor)
                self._record(k, ce.detach(), count, hits)
        loss = combine(loss, terms, head_weights(len(terms), self.args.caft_decay), scale, include_ce0=not heads_stage)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["caft/scale"].append(scale)
        return (loss, outputs) if return_outputs else loss

    def _record(self, k: int, ce_sum, count, hits) -> None:
        mode = "train" if self.model.training else "eval"
        # gather, not gather_for_metrics: that trims an eval's last batch by rows, and these are per-rank sums
        stats = self.accelerator.gather(torch.stack([ce_sum.float(), count.float(), hits.float()])
                                                    .reshape(1, 3)).reshape(-1, 3).sum(0)
        n = stats[1].item()
        self._metrics[mode][f"caft/ce_{k}"].append(stats[0].item() / n if n else 0.0)
        self._metrics[mode][f"caft/top1_{k}"].append(stats[2].item() / n if n else 0.0)
        if mode == "eval":  # exact held-out counts (the logged metric is a mean of batch ratios)
            hits_sum, n_sum = self._caft_eval.get(k, (0.0, 0.0))
            self._caft_eval[k] = (hits_sum + stats[2].item(), n_sum + n)

    def heldout_top1(self) -> dict[int, tuple[float, int]]:
        """Per head offset k: (top-1 over every held-out position it scores, positions) from evaluate()."""
        self._caft_eval = {}
        if self.eval_dataset is None:
            return {}
        self.evaluate()
        return {k: (hits / n if n else 0.0, int(n)) for k, (hits, n) in sorted(self._caft_eval.items())}

    # --- saving apart from the policy ---
    def _save(self, output_dir: str | None = None, state_dict=None):
        if self.caft:
            if state_dict is None:
                state_dict = self.model.state_dict()
            state_dict = {k: v for k, v in state_dict.items() if f"{ATTR}." not in k}
        super()._save(output_dir, state_dict=state_dict)

    def _save_checkpoint(self, model, trial):
        # Stage `heads`: the checkpoint carries the heads (every rank joins the ZeRO-3 gather), so a resume has them.
        if self.caft and self.args.caft_stage == "heads":
            step_dir = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            self.export_heads(step_dir / CHECKPOINT_HEADS)
        return super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        saved = Path(resume_from_checkpoint) / CHECKPOINT_HEADS
        if self.caft and self.args.caft_stage == "heads" and saved.is_dir() and not self.is_deepspeed_enabled:
            load_heads_into(heads_of(self.model), saved, field="resume_from_checkpoint")

    def export_heads(self, directory: str | Path, extra: dict | None = None) -> list[Path]:
        """Write the heads apart from the policy (all ranks call it; the main process writes)."""
        heads = heads_of(self.model)
        state = heads_state(heads)
        if not self.is_world_process_zero():
            return []
        info = {"stage": self.args.caft_stage, "decay": self.args.caft_decay, "global_step": self.state.global_step,
                **(extra or {})}
        return write_heads(directory, state, heads, self.caft_identity, info)
