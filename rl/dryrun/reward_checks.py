"""Rewards: every name resolves (`rewards.get_reward_func`), the dataset columns each one needs, and
each reward called once on the first rows of the data with an empty completion (cheap: no model),
which catches missing or malformed columns exactly as training would.
"""

from __future__ import annotations

import inspect
import logging

from rl.dryrun.report import Report, exc_summary
from rl.errors import UserError

PROBE_ROWS = 4  # rows each reward function is called on

# Rewards whose column parameters have defaults but which fail without the column.
_NEEDS_OPTIONAL = {"rpt_reward": ("continuation", "boundaries")}


def func_name(func) -> str:
    """A reward function's name, as TRL and rl.train name it."""
    return getattr(func, "__name__", repr(func))


def check_rewards(report: Report, view) -> list:
    from rewards import get_reward_func

    names = view.reward_funcs if isinstance(view.reward_funcs, list) else [view.reward_funcs]
    funcs, shown = [], []
    if not names:
        report.problem("reward_funcs: no reward functions given; use e.g. [rpt] or [math]")
    for name in names:
        try:
            func = get_reward_func(name)
        except UserError as exc:
            report.problem(str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - an import error in the user's own module
            report.problem(f"reward_funcs: {name!r}: {exc_summary(exc)}")
            continue
        funcs.append(func)
        module = getattr(func, "__module__", "?")
        shown.append(f"{name} -> {module}.{func_name(func)}")
    weights = getattr(view, "reward_weights", None)
    if weights is not None and len(weights) != len(names):
        report.problem(f"reward_weights: {len(weights)} weight(s) for {len(names)} reward function(s)")
    if shown:
        report.add("rewards", ", ".join(shown))
    return funcs


def columns_needed(funcs) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(required, optional) dataset columns per reward function."""
    from rl.data.loading import _NON_COLUMN_PARAMS, required_columns

    required = required_columns(funcs)
    optional: dict[str, list[str]] = {}
    for func in funcs:
        name = func_name(func)
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            continue
        optional[name] = [p.name for p in params
                          if p.name not in _NON_COLUMN_PARAMS and p.default is not inspect.Parameter.empty
                          and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for col in _NEEDS_OPTIONAL.get(name, ()):
            if col not in required.setdefault(name, []):
                required[name].append(col)
    return required, optional


def probe_rewards(report: Report, funcs, rows: list[dict]) -> None:
    """Call each reward on the first rows with an empty completion, as TRL would (no model needed)."""
    rows = rows[:PROBE_ROWS]
    if not rows:
        return
    prompts = [row.get("prompt") for row in rows]
    completions = [[{"role": "assistant", "content": ""}] if isinstance(p, list) else "" for p in prompts]
    columns = {key: [row.get(key) for row in rows] for key in rows[0] if key not in ("prompt", "completion")}
    returned = []  # per reward that ran: did it return None for every row?
    quiet = logging.getLogger("rewards")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for func in funcs:
            name = func_name(func)
            if inspect.iscoroutinefunction(func):
                continue
            try:
                out = func(prompts=prompts, completions=completions, completion_ids=[[] for _ in rows],
                           trainer_state=None, log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None,
                           **columns)
            except UserError as exc:
                report.problem(f"reward `{name}` on the first {len(rows)} rows: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - the run would crash the same way
                report.problem(f"reward `{name}` fails on the first {len(rows)} rows: {exc_summary(exc)}")
                continue
            if not isinstance(out, (list, tuple)) or len(out) != len(rows):
                report.problem(f"reward `{name}` returned {type(out).__name__} of length "
                               f"{len(out) if hasattr(out, '__len__') else '?'} for {len(rows)} completions")
                continue
            returned.append(all(v is None for v in out))
            if returned[-1]:
                report.note(f"reward `{name}` returned None (does not apply) for all of the first {len(rows)} rows")
    finally:
        quiet.setLevel(level)
    if returned and len(returned) == len(funcs) and all(returned):
        report.problem(f"every reward returned None for the first {len(rows)} rows: the run would learn nothing "
                       "from them (check the answer/target columns)")


def check_math_gold(report: Report, funcs, rows: list[dict]) -> None:
    """math_reward: how many of the first rows have a gold answer math-verify can parse."""
    if not any(getattr(f, "__name__", "") == "math_reward" for f in funcs):
        return
    if not rows or "solution" not in rows[0]:
        return
    from rewards.math import _gold

    bad = [i for i, row in enumerate(rows) if _gold(row.get("solution"), 5) is None]
    if len(bad) == len(rows):
        report.problem(f"solution: none of the first {len(rows)} gold answers parses with math-verify "
                       f"(row 0: {str(rows[0].get('solution'))[:60]!r}); math_reward would skip every row")
    elif bad:
        report.note(f"solution: {len(bad)} of the first {len(rows)} gold answers do not parse (rows {bad[:5]}); "
                    "math_reward skips such rows")
