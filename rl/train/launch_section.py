"""A recipe's `launch:` section and the `rl submit` flags it mirrors, in a leaf module.

It sits beside the recipe parser because the section is part of the recipe: `rl train` checks it
with the other fields and its dry run plans the world size from it; `rl submit` (rl/launch/slurm.py)
builds its parser from here (launch imports train, never the reverse).

A recipe says how it is launched in a `launch:` mapping whose keys are `rl submit`'s flags
(underscores for dashes), e.g. `launch: {nodes: 8, gpus_per_node: 8, accelerate_config: ...}`.
`rl submit` takes each setting from its command line when given there, else from `launch:`; the
dry run plans the world size from the same section. `rl train` ignores it (it is not a training
field), so a recipe runs unchanged under `accelerate launch`.
"""

from __future__ import annotations

import argparse
import difflib
import re
from typing import Any

from rl.errors import UserError

DEFAULT_SIGNAL_SECONDS = 180
SLURM_MAX_SIGNAL_SECONDS = 65535  # Slurm's --signal=...@TIME limit
SLURM_TIME_FORMATS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED"
_TIME = re.compile(r"^(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
                   r"|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$")
DEFAULT_NODES = 1
# `rl submit` flags a recipe may not set: the recipe itself, where one submission writes, printing only.
NOT_LAUNCH_KEYS = ("config", "run_dir", "dry_run", "overrides")


def slurm_time_seconds(text: str) -> int | None:
    """Seconds of a Slurm time string (None for UNLIMITED/INFINITE); ValueError naming what is wrong.

    Slurm's formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS. Seconds and minutes after a colon
    must be below 60, hours after a day below 24; a limit of 0 (Slurm: no limit) must be written UNLIMITED.
    """
    value = str(text).strip()
    if value.upper() in ("UNLIMITED", "INFINITE"):
        return None
    m = _TIME.match(value)
    if not m:
        raise ValueError(f"{text!r} is not a Slurm time ({SLURM_TIME_FORMATS})")
    g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    if "days" in g:
        days, hours, minutes, seconds = g["days"], g["dh"], g.get("dm", 0), g.get("ds", 0)
        parts = [("hours", hours, 24), ("minutes", minutes, 60), ("seconds", seconds, 60)]
    elif "c" in g:
        days, hours, minutes, seconds = 0, g["a"], g["b"], g["c"]
        parts = [("minutes", minutes, 60), ("seconds", seconds, 60)]
    else:
        days, hours, minutes, seconds = 0, 0, g["a"], g.get("b", 0)
        parts = [("seconds", seconds, 60)] if "b" in g else []
    for name, v, limit in parts:
        if v >= limit:
            raise ValueError(f"{text!r}: {name} {v} must be below {limit} ({SLURM_TIME_FORMATS})")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total == 0:
        raise ValueError(f"{text!r} is no time at all (Slurm reads 0 as no limit); give a limit, or UNLIMITED")
    return total


def slurm_time(text: str) -> str:
    """argparse `type=` for --time: the string as given, once it parses (`slurm_time_seconds`)."""
    try:
        slurm_time_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return str(text).strip()


def launch_problem(settings: dict[str, Any]) -> str | None:
    """Settings that contradict each other (flags a run would silently ignore, a signal after the time limit),
    in one line; `settings`: rl submit's merged flags by dest (command line over the recipe's launch:)."""
    if settings.get("cpu") and settings.get("gpus_per_node"):
        return (f"--gpus-per-node {settings['gpus_per_node']}: not used with --cpu (a CPU run has no GPUs); "
                "drop one of them (a recipe's launch: section counts too)")
    signal = settings.get("signal_seconds")
    if signal is not None and signal > SLURM_MAX_SIGNAL_SECONDS:
        return f"--signal-seconds {signal}: Slurm allows at most {SLURM_MAX_SIGNAL_SECONDS}"
    limit = slurm_time_seconds(settings["time"]) if settings.get("time") else None
    if signal is not None and limit is not None and signal >= limit:
        return (f"--signal-seconds {signal}: the checkpoint signal would come at or before the job starts "
                f"(--time {settings['time']} is {limit} s); give a longer --time or fewer --signal-seconds")
    return None


def add_submit_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `rl submit`'s flags (and the trailing `-- overrides`) to `p`."""
    p.add_argument("--config", help="recipe YAML (required; `rl submit data rpt ...` submits a data build instead)")
    p.add_argument("--nodes", type=int, help="nodes to train on (default: the recipe's launch.nodes, else 1)")
    p.add_argument("--gpus-per-node", type=int, help="GPUs (= training ranks) per node; required unless --cpu")
    p.add_argument("--partition", help="Slurm partition (queue) to submit to (default: the cluster's default)")
    p.add_argument("--time", type=slurm_time, help=f"time limit ({SLURM_TIME_FORMATS})")
    p.add_argument("--account", help="Slurm account to charge (default: your default account)")
    p.add_argument("--accelerate-config", help="accelerate config file (e.g. a DeepSpeed one)")
    p.add_argument("--run-dir", help="output directory of this run: checkpoints, logs, the script "
                   "(default: the recipe's output_dir; passed to rl train as --output_dir)")
    p.add_argument("--cpu", action="store_true", help="no GPUs: gloo ranks (tests)")
    p.add_argument("--procs-per-node", type=int, help="training ranks per node (default: GPUs per node; 2 with --cpu)")
    p.add_argument("--cpus-per-task", type=int, help="CPU cores per training rank (default: Slurm's; with --cpu: "
                   "--procs-per-node)")
    p.add_argument("--signal-seconds", type=int,
                   help=f"send SIGUSR1 this long before the time limit (checkpoint + requeue; default "
                        f"{DEFAULT_SIGNAL_SECONDS})")
    p.add_argument("--job-name", help="Slurm job name (default: rl-<recipe file stem>)")
    p.add_argument("--vllm-server-node", action="store_true",
                   help="run `trl vllm-serve` on the first node; train on the others")
    p.add_argument("--dry-run", action="store_true", help="print the script; write and submit nothing")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="-- then `rl train` overrides")
    return p


def _launch_actions() -> dict[str, argparse.Action]:
    parser = add_submit_arguments(argparse.ArgumentParser(add_help=False))
    return {a.dest: a for a in parser._actions if a.dest not in NOT_LAUNCH_KEYS and a.option_strings}


def launch_keys() -> list[str]:
    """The keys a recipe's `launch:` section may hold (rl submit's flags, underscored)."""
    return sorted(_launch_actions())


def check_launch_section(where: str, section: Any) -> dict[str, Any]:
    """The `launch:` mapping, each value checked as `rl submit` would parse it: {key: value} or UserError."""
    if not isinstance(section, dict):
        raise UserError(f"{where}: 'launch' must be a mapping of rl submit settings (e.g. nodes: 2, gpus_per_node: 8), "
                        f"got {type(section).__name__}")
    actions = _launch_actions()
    out: dict[str, Any] = {}
    for key, value in section.items():
        action = actions.get(str(key))
        if action is None:
            close = difflib.get_close_matches(str(key), list(actions), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(actions))}"
            raise UserError(f"{where}: launch.{key}: not an rl submit setting{hint}")
        if action.nargs == 0:  # a switch (--cpu, --vllm-server-node)
            if not isinstance(value, bool):
                raise UserError(f"{where}: launch.{key}: expects true or false, got {value!r}")
        elif action.type is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{where}: launch.{key}: expects a positive integer, got {value!r}")
        elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"{where}: launch.{key}: expects a single value, got {value!r}")
        else:
            value = str(value)
            if callable(action.type):  # e.g. a Slurm time string
                try:
                    value = action.type(value)
                except argparse.ArgumentTypeError as exc:
                    raise UserError(f"{where}: launch.{key}: {exc}") from None
        out[key] = value
    problem = launch_problem(out)
    if problem:
        raise UserError(f"{where}: launch: {problem}")
    return out


def apply_launch_section(args: argparse.Namespace, section: dict[str, Any]) -> argparse.Namespace:
    """`rl submit`'s settings: each flag given on the command line wins, else the recipe's `launch:`
    value, else the default (nodes 1, signal 180 s)."""
    merged = argparse.Namespace(**vars(args))
    for key, value in section.items():
        if getattr(merged, key, None) in (None, False):
            setattr(merged, key, value)
    if merged.nodes is None:
        merged.nodes = DEFAULT_NODES
    if merged.signal_seconds is None:
        merged.signal_seconds = DEFAULT_SIGNAL_SECONDS
    return merged
