"""The run as the preflight checks see it, before any weights load: `RunPlan`.

Both doors build one and run the same checks on it (rl/train/preflight/checks.py): `rl train` from
its parsed recipe for the processes it runs in (`RunPlan.for_this_launch`), the dry run from the
recipe parsed for the target machines and the launch plan it resolved (world size from the
launch section or flags, ZeRO stage from the accelerate or DeepSpeed config). A check reads only
the plan, so it cannot tell the two doors apart.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

from rewards.registry import RewardSpec, spec_of
from rl.train.preflight.rules import GenerationBatch, generation_batch, launch_world_size


def recipe_view(parsed, raw: Any = None) -> SimpleNamespace:
    """Every recipe field as one namespace: the parsed dataclasses' fields (ScriptArguments,
    EntropyGRPOConfig, ModelConfig) over `raw` (argparse's namespace of the same fields, if any)."""
    merged = dict(vars(raw)) if raw is not None else {}
    for obj in parsed:
        merged.update({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    return SimpleNamespace(**merged)


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """A run resolved as far as it can be without weights.

    recipe: every recipe field as an attribute (`recipe_view`), or the raw values when TRL's own
        validation refused them (the dry run goes on to report everything else).
    world_size: the training processes the run has (or, for the dry run, will have).
    zero_stage: DeepSpeed's ZeRO stage, None without DeepSpeed.
    rewards: the reward callables the recipe's names resolved to (names that do not resolve are
        reported where they are resolved, not here).
    resolved: TRL derived `generation_batch_size` and `steps_per_generation` (its parse succeeded);
        False for raw values, where at most one of the two is the user's.
    """

    recipe: Any
    world_size: int = 1
    zero_stage: int | None = None
    rewards: tuple = ()
    resolved: bool = True

    @classmethod
    def for_this_launch(cls, script_args, training_args, model_args) -> "RunPlan":
        """`rl train`'s plan: the parsed recipe, this launch's processes and DeepSpeed (before the
        trainer exists, as transformers sees it from the accelerate/DeepSpeed config)."""
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        from rewards import get_reward_funcs

        rewards = get_reward_funcs(script_args.reward_funcs, settings=training_args)
        return cls(recipe=recipe_view((script_args, training_args, model_args)), world_size=launch_world_size(),
                   zero_stage=3 if is_deepspeed_zero3_enabled() else None, rewards=tuple(rewards))

    def field(self, name: str, default: Any = None) -> Any:
        """A recipe field, `default` when the recipe has no such field."""
        return getattr(self.recipe, name, default)

    @property
    def reward_specs(self) -> list[RewardSpec]:
        """The registrations of the plan's rewards (user rewards have none and are left out)."""
        return [spec for spec in map(spec_of, self.rewards) if spec is not None]

    def generation_batch(self) -> GenerationBatch | str:
        """TRL's generation batch at the plan's world size, or the batch rule the recipe breaks."""
        r = self.recipe
        spg = getattr(r, "steps_per_generation", None)
        size = getattr(r, "generation_batch_size", None)
        if self.resolved and spg is not None:
            size = None  # TRL derived it from steps_per_generation (or the reverse): either determines both
        return generation_batch(int(r.per_device_train_batch_size), int(r.gradient_accumulation_steps),
                                None if r.num_generations is None else int(r.num_generations),
                                None if size is None else int(size), None if spg is None else int(spg),
                                self.world_size)
