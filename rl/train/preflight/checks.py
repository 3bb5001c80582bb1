"""The preflight: the checks `rl train` and its dry run share, each over a `RunPlan`, before any weights load.

A check is a function `check(plan) -> str | None`, the problem in one line (what is wrong; how to
fix it) or None, listed once in `CHECKS`. `rl train` raises the first problem (`raise_first`);
`rl train --dry-run` reports them all beside its report (`problems`), and `rl submit` refuses a
recipe the dry run finds a problem in. Adding a check is writing the function and listing it;
tests/rl/train/preflight/test_checks.py runs every listed check on a clean plan.

TRL's batch rules are enforced while the recipe parses (rl/train/config.py), with these same
functions (rl/train/preflight/rules.py); they are listed here as well so that the dry run, which
checks raw values when the parse refuses them, reports them in the same words.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from rl.errors import UserError
from rl.runtime.checkpoint import generation_cycle_steps
from rl.train.preflight.plan import RunPlan
from rl.train.preflight.rules import eval_batch_problem
from rl.train.rlp_teacher import teacher_problem


def generation_batch(plan: RunPlan) -> str | None:
    """TRL's generation-batch rules at the plan's world size (whole prompt groups, and so on)."""
    found = plan.generation_batch()
    return found if isinstance(found, str) else None


def eval_batch(plan: RunPlan) -> str | None:
    """TRL's eval-batch rule, for a run that evaluates."""
    generations = plan.field("num_generations_eval") or plan.field("num_generations")
    return eval_batch_problem(plan.field("eval_strategy", "no"), plan.field("per_device_eval_batch_size", 8),
                              plan.world_size, None if generations is None else int(generations))


def save_steps_cycle(plan: RunPlan) -> str | None:
    """Checkpoints only at generation-cycle boundaries, where a resume replays the data exactly."""
    batch = plan.generation_batch()
    save_steps = plan.field("save_steps")
    strategy = plan.field("save_strategy", "no")
    if isinstance(batch, str) or str(getattr(strategy, "value", strategy)) != "steps" or not save_steps \
            or float(save_steps) < 1:  # a fraction of the run: transformers places it
        return None
    cycle = generation_cycle_steps(SimpleNamespace(
        steps_per_generation=batch.steps_per_generation, num_iterations=plan.field("num_iterations", 1),
        gradient_accumulation_steps=batch.accumulation))
    if int(save_steps) % cycle:
        return (f"save_steps: {save_steps} is not a multiple of the generation cycle ({cycle} optimizer steps); a "
                "resume is exact only at those boundaries (the cycle is lcm(steps_per_generation x num_iterations, "
                f"gradient_accumulation_steps) / gradient_accumulation_steps): use a multiple of {cycle}")
    return None


def reward_weights(plan: RunPlan) -> str | None:
    """One weight per reward: TRL refuses other counts too, but only once the model has loaded."""
    weights, names = plan.field("reward_weights"), plan.field("reward_funcs") or []
    names = [names] if isinstance(names, str) else names
    if weights is not None and len(weights) != len(names):
        return (f"reward_weights: {len(weights)} weight(s) for {len(names)} reward function(s); give one weight per "
                "entry of reward_funcs, or leave reward_weights unset")
    return None


def reward_teacher(plan: RunPlan) -> str | None:
    """A reward scored against a teacher (registry `teacher`): the teacher must fit the launch."""
    if not any(spec.teacher for spec in plan.reward_specs):
        return None
    return teacher_problem(plan.field("rlp_teacher", "ema"), bool(plan.field("use_peft", False)),
                           plan.zero_stage == 3)


CHECKS: list[Callable[[RunPlan], str | None]] = [
    generation_batch,
    eval_batch,
    save_steps_cycle,
    reward_weights,
    reward_teacher,
]


def problems(plan: RunPlan) -> list[str]:
    """Every listed check's problem, in list order."""
    return [problem for problem in (check(plan) for check in CHECKS) if problem]


def raise_first(plan: RunPlan) -> None:
    """`rl train`: the first problem as a one-line UserError."""
    found = problems(plan)
    if found:
        raise UserError(found[0])
