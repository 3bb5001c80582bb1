"""The reward registry: every reward is registered once, together with what it needs from the data.

A reward is a plain TRL callable, `f(prompts=..., completions=..., completion_ids=..., **columns)
-> list[float | None]`, registered with `@register_reward(name, ...)` in its own module. The
registration is the one place that says which dataset columns it cannot work without, how to
check a whole dataset before any model loads, what the dry run probes on the first rows, and
which RPT prompt format it scores. `rl train` (rl/data/loading.py), `rl train --dry-run`
(rl/train/preflight/), the signal check (rl/train/signal_check.py) and the reward guards (rl/runtime/faults.py) read it
from here, never from attributes on the function or name lists of their own.

Pure Python, no torch: imported by the data tools and the trainer alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NON_COLUMN_PARAMS", "REGISTRY", "RewardSpec", "TRL_CALL_ARGS", "TRL_EXTRA_KWARGS", "column_params",
    "register_reward", "required_columns", "reward_name", "spec_of",
]

# What TRL 1.16's `GRPOTrainer._calculate_rewards` passes besides dataset columns
# (tests/test_trl_contract.py fails by name when TRL changes it).
TRL_CALL_ARGS = ("prompts", "completions", "completion_ids")
TRL_EXTRA_KWARGS = ("trainer_state", "log_extra", "log_metric", "environments")
NON_COLUMN_PARAMS = frozenset(TRL_CALL_ARGS + TRL_EXTRA_KWARGS)

#: A dry-run finding: ("problem" | "note", one line).
Finding = tuple[str, str]


@dataclass(frozen=True)
class RewardSpec:
    """One registered reward and its needs.

    required_columns: columns it cannot work without even though its parameters have defaults
        (so that None rows of a mixed dataset can pass); columns without a default in its
        signature are required anyway (`column_params`).
    check_dataset: `check(dataset, where)` over the whole `datasets.Dataset` before any model
        loads; raises `UserError` naming `where` and the row.
    probe: `probe(rows) -> [Finding]` for `--dry-run`, on the first rows of the data (no model),
        beyond the call with an empty completion every reward gets.
    rpt_format: the RPT prompt format it scores (`reasoning` | `completion`), None when not RPT.
    boxed_answer: it reads a `\\boxed{}` answer (the signal check counts boxed samples).
    example_row: a valid row of the columns it reads (documentation, and the registry contract
        test in tests/rewards/test_registry_contract.py runs every reward on it).
    needs_policy: it scores with the trainer's policy (bound by the trainer while it computes
        rewards) and returns None without it, so the dry run's model-free call says nothing of it.
    bind_scorer: for a `needs_policy` reward (required there), `bind_scorer(scorer)` is the context
        manager inside which the reward scores through `scorer`; the trainer, the signal check and
        the registry contract test (with a stub scorer) bind through it, never by the reward's name.
    configure: for a reward whose parameters are recipe fields, `configure(settings) -> callable`
        builds the callable a run trains with from the parsed recipe (`settings`: any object with
        the fields as attributes; UserError naming the field when they do not fit). The result
        carries `__wrapped__ = func`, so `spec_of` finds this registration through it; `func`
        itself is the reward at documented default settings (what the contract test runs).
    teacher: it scores the policy against a teacher model (recipe fields `rlp_teacher`,
        `rlp_ema_decay`; needs `needs_policy`): the trainer builds the teacher for it and the preflight
        checks that the teacher fits the launch (rl/train/preflight/checks.py), never by the reward's name.
    """

    name: str
    func: Callable[..., list]
    required_columns: tuple[str, ...] = ()
    check_dataset: Callable[[Any, str], None] | None = None
    probe: Callable[[list[dict]], list[Finding]] | None = None
    rpt_format: str | None = None
    boxed_answer: bool = False
    example_row: dict[str, Any] = field(default_factory=dict)
    needs_policy: bool = False
    bind_scorer: Callable[[Any], Any] | None = None
    configure: Callable[[Any], Callable[..., list]] | None = None
    teacher: bool = False


REGISTRY: dict[str, RewardSpec] = {}


def register_reward(name: str, *, required_columns: tuple[str, ...] = (), check_dataset=None, probe=None,
                    rpt_format: str | None = None, boxed_answer: bool = False,
                    example_row: dict[str, Any] | None = None, needs_policy: bool = False, bind_scorer=None,
                    configure=None, teacher: bool = False):
    """Decorator: register the function under `name` (the name recipes use in `reward_funcs`).

    The function is returned unchanged (TRL logs it under its `__name__`). A name registered
    twice is a programming error (ValueError at import).
    """

    def decorate(func):
        if name in REGISTRY:
            raise ValueError(f"reward {name!r} is registered twice ({REGISTRY[name].func.__module__} and {func.__module__})")
        if needs_policy and bind_scorer is None:
            raise ValueError(f"reward {name!r} needs the policy but registers no bind_scorer to receive it")
        if teacher and not needs_policy:
            raise ValueError(f"reward {name!r} scores against a teacher, so it needs the policy (needs_policy=True)")
        REGISTRY[name] = RewardSpec(name, func, tuple(required_columns), check_dataset, probe, rpt_format,
                                    boxed_answer, dict(example_row or {}), needs_policy, bind_scorer, configure, teacher)
        return func

    return decorate


def spec_of(func) -> RewardSpec | None:
    """The registration of a reward callable, looking through `functools.wraps` wrappers (the
    guards of rl/runtime/faults.py wrap every reward); None for unregistered (user) rewards."""
    seen = set()
    while func is not None and id(func) not in seen:
        seen.add(id(func))
        for spec in REGISTRY.values():
            if spec.func is func:
                return spec
        func = getattr(func, "__wrapped__", None)
    return None


def reward_name(func) -> str:
    """The name TRL logs a reward under (its `__name__`), as errors and reports name it."""
    return getattr(func, "__name__", repr(func))


def column_params(func) -> tuple[list[str], list[str]] | None:
    """(required, optional) dataset-column parameters of a reward's signature: named parameters
    that TRL does not fill itself, without and with a default. None without a signature."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    named = [p for p in params if p.name not in NON_COLUMN_PARAMS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return ([p.name for p in named if p.default is inspect.Parameter.empty],
            [p.name for p in named if p.default is not inspect.Parameter.empty])


def required_columns(reward_funcs) -> dict[str, list[str]]:
    """Dataset columns each reward needs, by reward name: its column parameters without a
    default, plus the columns its registration declares."""
    needed = {}
    for func in reward_funcs:
        params = column_params(func)
        if params is None:  # no signature: nothing to read from it
            continue
        cols = params[0]
        spec = spec_of(func)
        cols += [c for c in (spec.required_columns if spec else ()) if c not in cols]
        needed[reward_name(func)] = cols
    return needed
