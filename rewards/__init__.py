"""Reward functions by name, for recipes (`reward_funcs: [rpt]`) and the CLI.

Every reward is a plain TRL reward callable: `f(prompts, completions, completion_ids, **columns)
-> list[float | None]`. To add one, write it in its own module here with ONE registration,
`@register_reward("name", required_columns=..., check_dataset=..., probe=..., example_row=...)`
(rewards/registry.py); every module of this package is imported here, so nothing else changes
(tests/rewards/test_registry_contract.py then runs the new reward too). Users can also name their own
function by dotted import path (`my_pkg.rewards.my_reward`), like TRL's own CLI.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable

from rewards.registry import REGISTRY
from rl.errors import UserError

# Each reward module registers its rewards on import: import them all, in name order (the registry's order).
REWARD_MODULES = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "registry")
for _module in REWARD_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["REWARD_FUNCS", "get_reward_func", "get_reward_funcs"]

RewardFunc = Callable[..., list]

# name -> callable, one entry per registration (rewards/registry.py)
REWARD_FUNCS: dict[str, RewardFunc] = {name: spec.func for name, spec in REGISTRY.items()}


def _import_dotted(name: str) -> RewardFunc:
    """Import `package.module.function`; UserError when the module or function is missing."""
    if not all(part.isidentifier() for part in name.split(".")):
        raise UserError(f"reward_funcs: {name!r} is not a valid dotted path; use package.module.function")
    module_name, _, attr = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing module *named by the user* is their typo; a missing dependency inside
        # their module is a real ImportError and keeps its traceback.
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise
        raise UserError(
            f"reward_funcs: cannot import module {module_name!r} for reward {name!r}; "
            "check the dotted path and that the package is installed or on PYTHONPATH"
        ) from None
    func = getattr(module, attr, None)
    if func is None:
        raise UserError(f"reward_funcs: module {module_name!r} has no function {attr!r}; check the name")
    if not callable(func):
        raise UserError(f"reward_funcs: {name!r} is not callable; name a reward function")
    return func


def get_reward_func(name: str, settings=None) -> RewardFunc:
    """Return the reward callable registered as `name`, or imported from a dotted path.

    `settings` (the parsed recipe: any object with its fields as attributes): a reward registered with
    `configure` is built from it (its parameters are recipe fields); without settings, or for other
    rewards, the registered callable itself.
    """
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"reward_funcs: expected a reward name, got {name!r}; known: {', '.join(sorted(REWARD_FUNCS))}")
    name = name.strip()
    if name in REWARD_FUNCS:
        spec = REGISTRY.get(name)
        if settings is not None and spec is not None and spec.configure is not None:
            return spec.configure(settings)
        return REWARD_FUNCS[name]
    if "." in name:
        return _import_dotted(name)
    close = difflib.get_close_matches(name, list(REWARD_FUNCS), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(
        f"reward_funcs: unknown reward {name!r}; {hint}known: {', '.join(sorted(REWARD_FUNCS))}, "
        "or a dotted path like my_pkg.rewards.my_reward"
    )


def get_reward_funcs(names: list[str] | str, settings=None) -> list[RewardFunc]:
    """Resolve a list of reward names (a single string counts as a one-element list); `settings` as in
    `get_reward_func`."""
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)):
        raise UserError(f"reward_funcs: expected a list of reward names like [rpt], got {names!r}")
    if not names:
        known = ", ".join(sorted(REWARD_FUNCS))
        raise UserError(f"reward_funcs: no reward functions given; use e.g. [rpt] (known: {known})")
    return [get_reward_func(name, settings) for name in names]
