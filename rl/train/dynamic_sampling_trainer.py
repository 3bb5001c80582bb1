"""Dynamic sampling in the trainer (`DynamicSamplingMixin`; the pure part is rl/train/dynamic_sampling.py).

Put before GRPOTrainer in the bases and after EntropyGRPOTrainer's own class: TRL's
`_generate_and_score_completions` (sampling, rewards, advantages) runs once per generation round
through `_generation_round` (a subclass extends a round there: EntropyGRPOTrainer moves the sampler's
entropies into the round's batch), and the forking selection then sees the kept samples only, so the
step-scope mask's population is the kept samples.

One training generation batch, when the recipe sets `dynamic_sampling` and the optimizer step has
reached `dynamic_sampling_start_step` (training only):

1. Round 0 is TRL's own batch from its sampler. Its rewards (`_calculate_rewards` returns them gathered
   over all ranks) say which groups vary in `dynamic_sampling_metric`; every rank computes the same
   flags from the same gathered tensor, so all ranks agree without another collective.
2. While fewer than the generation batch's number of groups are informative and fewer than
   `dynamic_sampling_max_batches` rounds ran, another round runs on fresh prompts (`refill_prompts`:
   a pure function of seed, step and round, laid out over the ranks as TRL's sampler lays out a batch).
3. Each round's batch is gathered from all ranks (padded to the widest row); `plan_batch` picks the
   samples (whole informative groups in round order, the same count on every rank, a multiple of
   `steps_per_generation`); each rank takes its rows, padding columns are trimmed, and
   `num_items_in_batch` is recounted over the kept samples. TRL then shuffles and splits the batch
   into its micro-batches as usual (gradient accumulation, `steps_per_generation`, `num_iterations`
   unchanged).
4. At the cap with too few informative groups it trains on what there is (warned once, metric
   `dynamic_sampling/short`). With none at all, the step trains on one advantage-0 sample per
   micro-batch (no policy gradient; a rare reward can leave one step empty); after `EMPTY_STEPS_STOP`
   such steps in a row the run stops in one line naming the reward(s) that never varied. (The count
   restarts on resume: it only decides when a run with no signal stops, never what a step trains on.)

Logs per step: dynamic_sampling/generation_batches, dynamic_sampling/dropped_share (dropped groups /
generated groups), dynamic_sampling/prompts (prompts consumed), dynamic_sampling/kept_groups,
dynamic_sampling/short. Not supported (refused in one line): iterable datasets (no fresh prompts by
index), multimodal batches.
"""

from __future__ import annotations

import logging

import torch
from datasets import IterableDataset

from rewards.registry import spec_of
from rl.errors import UserError
from rl.train.config import entropy_setting
from rl.train.dynamic_sampling import (
    enough,
    group_varies,
    metric_values,
    pad_cat,
    plan_batch,
    refill_prompts,
    resolve_metric,
    trim_columns,
)

__all__ = ["DynamicSamplingMixin", "REWARDS_FIELD"]

logger = logging.getLogger(__name__)

#: Input-row key under which a round's gathered rewards (N_global, F) leave `_calculate_rewards`.
REWARDS_FIELD = "_dynamic_sampling_rewards"
EMPTY_STEPS_STOP = 3  # consecutive generation batches without any informative group: the reward never varies
_LEFT = ("prompt_ids", "prompt_mask")  # TRL pads prompts on the left, everything else on the right
_RECOUNTED = ("num_items_in_batch",)
_MULTIMODAL = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
               "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


class DynamicSamplingMixin:
    """DAPO dynamic sampling for a GRPOTrainer subclass (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._dynamic_warned = False
        self._dynamic_empty_steps = 0  # consecutive generation batches without an informative group
        self._dynamic_metric = None
        if not entropy_setting(self.args, "dynamic_sampling"):
            return
        if isinstance(self.train_dataset, IterableDataset):
            raise UserError("dynamic_sampling: needs a dataset with rows by index (fresh prompts for extra "
                            "generation batches); this run streams an iterable dataset")
        names = []
        for func, trl_name in zip(self.reward_funcs, self.reward_func_names):
            spec = spec_of(func)
            names.append([n for n in (getattr(spec, "name", None), getattr(func, "__name__", None), trl_name) if n])
        try:
            self._dynamic_metric = resolve_metric(entropy_setting(self.args, "dynamic_sampling_metric"), names)
        except ValueError as exc:
            raise UserError(str(exc)) from None

    # ------------------------------------------------------------------ one round

    def _generation_round(self, inputs: list) -> dict:
        """TRL's sampling, rewards and advantages for one list of input rows (extended by subclasses)."""
        return super()._generate_and_score_completions(inputs)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        """TRL's reward call; the gathered rewards also ride on the round's input rows (`REWARDS_FIELD`)."""
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self._dynamic_active():
            for row in inputs:
                row[REWARDS_FIELD] = rewards
        return rewards

    def _dynamic_active(self) -> bool:
        return bool(entropy_setting(self.args, "dynamic_sampling") and self.model.training
                    and self.state.global_step >= entropy_setting(self.args, "dynamic_sampling_start_step"))

    # ------------------------------------------------------------------ the generation batch

    def _generate_and_score_completions(self, inputs):
        if not self._dynamic_active():
            return self._generation_round(inputs)
        if any(key in inputs[0] for key in ("image", "images")):
            raise UserError("dynamic_sampling: multimodal (image) datasets are not supported; set "
                            "dynamic_sampling: false")
        group = self.num_generations
        local = len(inputs)
        ranks = self.accelerator.num_processes
        target = local * ranks // group
        cap = entropy_setting(self.args, "dynamic_sampling_max_batches")
        rounds, flags, rewards = [], [], []
        rows = inputs
        while True:
            out = self._generation_round(rows)
            gathered = [row.pop(REWARDS_FIELD, None) for row in rows][0]
            if gathered is None:
                raise RuntimeError("dynamic sampling: the round's rewards did not come back from _calculate_rewards")
            values = metric_values(gathered, self.reward_weights, self._dynamic_metric)
            flags.append(group_varies(values.cpu(), group))
            rewards.append(gathered.cpu())
            rounds.append(self._gather_round(out))
            if enough(flags, target) or len(rounds) >= cap:
                break
            rows = self._refill_rows(len(rounds), local, target)
        empty = not any(bool(f.any()) for f in flags)
        self._dynamic_empty_steps = self._dynamic_empty_steps + 1 if empty else 0
        if self._dynamic_empty_steps >= EMPTY_STEPS_STOP:
            raise UserError(self._never_varies(rewards, len(rounds)))
        plan = plan_batch(flags, group, target, ranks, self.args.steps_per_generation, allow_empty=True)
        self._log_dynamic(plan, len(rounds), target)
        return self._take_rows(rounds, plan)

    def _refill_rows(self, round_index: int, local: int, target: int) -> list[dict]:
        """This rank's input rows of an extra round: fresh prompts, each repeated num_generations times,
        laid out over the ranks as TRL's RepeatSampler lays out a generation batch."""
        indices = refill_prompts(len(self.train_dataset), target, self.args.seed, self.state.global_step,
                                 round_index)
        start = self.accelerator.process_index * local
        repeated = [i for i in indices for _ in range(self.num_generations)][start:start + local]
        return [dict(self.train_dataset[i]) for i in repeated]

    def _gather_round(self, out: dict) -> dict:
        """The round's batch from every rank, rows in rank order, widths padded to the widest rank."""
        if any(key in out for key in _MULTIMODAL):
            raise UserError("dynamic_sampling: multimodal batches are not supported; set dynamic_sampling: false")
        rows = out["completion_ids"].shape[0]
        width = out["completion_ids"].shape[1]
        gathered = {}
        for key, value in out.items():
            if key in _RECOUNTED or not isinstance(value, torch.Tensor) or value.dim() == 0:
                continue
            if value.shape[0] != rows:
                raise UserError(f"dynamic_sampling: batch entry {key!r} is not per sample; set dynamic_sampling: false")
            left = key in _LEFT
            padded = value if value.dim() < 2 or not (left or value.shape[1] == width) else \
                self.accelerator.pad_across_processes(value, dim=1, pad_index=self._pad_value(key), pad_first=left)
            is_bool = padded.dtype == torch.bool
            full = self.accelerator.gather(padded.to(torch.uint8) if is_bool else padded.contiguous())
            gathered[key] = full.bool() if is_bool else full
        return gathered

    def _pad_value(self, key: str):
        if key in ("prompt_ids", "completion_ids"):
            return self._tokenizer.pad_token_id
        return 1 if key == "tool_mask" else 0

    def _take_rows(self, rounds: list[dict], plan) -> dict:
        """This rank's rows of the plan, joined over rounds, padding columns trimmed, counts recounted."""
        mine = plan.rank_rows(self.accelerator.process_index)
        filler_from = len(plan.samples) - plan.filler
        first = self.accelerator.process_index * plan.per_rank
        batch = {}
        for key in [k for k in rounds[0] if all(k in r for r in rounds)]:  # e.g. entropies some round lacks
            parts = []
            for r, gathered in enumerate(rounds):
                idx = [s for rr, s in mine if rr == r]
                if idx:
                    parts.append(gathered[key][torch.tensor(idx, device=gathered[key].device)])
            order = [i for r in range(len(rounds)) for i, (rr, _) in enumerate(mine) if rr == r]
            joined = pad_cat(parts, "left" if key in _LEFT else "right", self._pad_value(key))
            batch[key] = joined[torch.argsort(torch.tensor(order, device=joined.device))]
        filler = torch.tensor([first + i >= filler_from for i in range(len(mine))], device=batch["advantages"].device)
        batch["advantages"] = batch["advantages"].masked_fill(filler if batch["advantages"].dim() == 1
                                                               else filler.unsqueeze(1), 0.0)
        left = trim_columns(batch["prompt_mask"], "left")
        right = trim_columns(batch["completion_mask"], "right")
        width = batch["completion_ids"].shape[1]
        for key, value in batch.items():
            if value.dim() >= 2 and key in _LEFT:
                batch[key] = value[:, left]
            elif value.dim() >= 2 and value.shape[1] == width:
                batch[key] = value[:, right]
        loss_mask = batch["completion_mask"] if "tool_mask" not in batch else batch["completion_mask"] * batch["tool_mask"]
        batch["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        return batch

    # ------------------------------------------------------------------ reporting

    def _log_dynamic(self, plan, num_rounds: int, target: int) -> None:
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/generation_batches"].append(float(num_rounds))
        metrics["dynamic_sampling/dropped_share"].append(1.0 - plan.informative_groups / plan.generated_groups)
        metrics["dynamic_sampling/prompts"].append(float(num_rounds * target))
        metrics["dynamic_sampling/kept_groups"].append(float(plan.kept_groups))
        metrics["dynamic_sampling/short"].append(float(plan.short))
        if plan.short and not self._dynamic_warned and self.accelerator.is_main_process:
            self._dynamic_warned = True
            logger.warning("dynamic sampling: step %d: only %d of %d groups varied in %s after %d generation batches "
                           "(dynamic_sampling_max_batches); training on %d samples per rank this time (warned once; "
                           "metric dynamic_sampling/short)", self.state.global_step, plan.informative_groups, target,
                           entropy_setting(self.args, "dynamic_sampling_metric"), num_rounds, plan.per_rank)

    def _never_varies(self, rewards: list[torch.Tensor], num_rounds: int) -> str:
        """The one line for a run whose last steps had no informative group, naming the reward(s) that never varied."""
        allr = torch.cat(rewards, dim=0)
        flat = [name for i, name in enumerate(self.reward_func_names)
                if not bool(group_varies(allr[:, i], self.num_generations).any())]
        metric = entropy_setting(self.args, "dynamic_sampling_metric")
        which = (f"reward `{self.reward_func_names[self._dynamic_metric]}`" if self._dynamic_metric is not None
                 else f"the total reward (never varying: {', '.join(f'`{n}`' for n in flat) or 'none alone'})")
        return (f"dynamic_sampling: up to step {self.state.global_step}, {which} scored every completion of each "
                f"group the same in {EMPTY_STEPS_STOP} steps in a row ({num_rounds} generation batches each, "
                f"{allr.shape[0] // self.num_generations} groups in the last) (dynamic_sampling_metric: {metric}), so "
                "there is nothing to train on; check the reward on a few "
                "completions (rl train's signal check), or raise dynamic_sampling_max_batches")
