"""Rewards: every name resolves (`rewards.get_reward_func`), the dataset columns each one needs, and
each reward called once on the first rows of the data with an empty completion (cheap: no model),
which catches missing or malformed columns exactly as training would, plus the probe its
registration declares (rewards/registry.py).
"""

from __future__ import annotations

import inspect
import logging

from rl.train.preflight.report import Report, exc_summary
from rl.errors import UserError

PROBE_ROWS = 4  # rows each reward function is called on


def func_name(func) -> str:
    """A reward function's name, as TRL and rl.train.command name it."""
    return getattr(func, "__name__", repr(func))


def check_rewards(report: Report, view) -> list:
    from rewards import get_reward_func

    names = view.reward_funcs if isinstance(view.reward_funcs, list) else [view.reward_funcs]
    funcs, shown = [], []
    if not names:
        report.problem("reward_funcs: no reward functions given; use e.g. [rpt] or [math]")
    for name in names:
        try:
            func = get_reward_func(name, settings=view)  # a reward set by recipe fields is built from them
        except UserError as exc:
            report.problem(str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - an import error in the user's own module
            report.problem(f"reward_funcs: {name!r}: {exc_summary(exc)}")
            continue
        funcs.append(func)
        module = getattr(func, "__module__", "?")
        shown.append(f"{name} -> {module}.{func_name(func)}")
    if shown:
        report.add("rewards", ", ".join(shown))
    from rewards.overlong import overlong_summary

    report.add("overlong", overlong_summary(view, names))
    return funcs


def columns_needed(funcs) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(required, optional) dataset columns per reward function (required: as `rl train` checks them)."""
    from rewards.registry import column_params, required_columns

    required = required_columns(funcs)
    optional: dict[str, list[str]] = {}
    for func in funcs:
        params = column_params(func)
        if params is not None:
            name = func_name(func)
            optional[name] = [c for c in params[1] if c not in required.get(name, [])]
    return required, optional


def probe_rewards(report: Report, funcs, rows: list[dict]) -> None:
    """Call each reward on the first rows with an empty completion, as TRL would (no model needed)."""
    from rewards.registry import spec_of

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
            if getattr(spec_of(func), "needs_policy", False):  # scores with the trainer's policy: nothing to see here
                report.note(f"reward `{name}` scores with the policy during training; its columns were checked")
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


def run_reward_probes(report: Report, funcs, rows: list[dict]) -> None:
    """The dry-run probe each reward's registration declares (e.g. math: do the gold answers parse)."""
    from rewards.registry import spec_of

    for func in funcs:
        spec = spec_of(func)
        if spec is None or spec.probe is None:
            continue
        for kind, message in spec.probe(rows):
            (report.problem if kind == "problem" else report.note)(message)
