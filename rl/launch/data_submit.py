"""`rl submit data rpt|rlp ...`: an `rl data rpt` build as a Slurm array job, one task per shard.

    rl submit data rpt --corpus web/ --proxy-model Qwen/Qwen3-1.7B --output runs/web-rpt --num-shards 64 \\
        --partition gpu --time 12:00:00 [--dry-run]

Every flag of `rl data rpt` (rl/data/cli.py, the settings of rl/data/settings.py) is accepted and passed
to each task unchanged, as typed; `--num-shards N` is the array size (tasks 0..N-1) and each task adds
`--shard-index $SLURM_ARRAY_TASK_ID`. The Slurm flags are `rl submit`'s own (rl/train/launch_section.py:
partition, time, account, cpus-per-task, signal-seconds, job-name, cpu, dry-run), plus `--gpus-per-task`
(default 1) and `--max-running` (the array's %K).

The rendered script is slurm/rpt_data.sbatch's body (USR1 stops the shard and requeues the task; the
shard resumes at its last recorded block) under a header rendered here, with the arguments fixed in it
(`set -- ...`, shell-quoted) and `RL_NUM_SHARDS=N`, so one failed task can be resubmitted alone with
`sbatch --array=I SCRIPT`. It is kept, with the per-task logs, in OUTPUT.slurm/ (next to OUTPUT, never
inside it: OUTPUT is replaced when the shards are merged).

The merge: the task that finishes last merges the shards into OUTPUT (rl/data/rpt.py, as every sharded
build does), not a dependent `afterok` job: it runs the moment the last shard is done, holds no second
allocation in the queue, and still happens when a failed shard is resubmitted as a new job, where an
`afterok:ARRAYID` job would stay pending forever (DependencyNeverSatisfied). `rl data merge --output
OUTPUT` merges by hand.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time as _time
from collections.abc import Mapping, Sequence
from pathlib import Path

from rl.errors import UserError
from rl.data.cli import _add_build_args
from rl.data.corpus import read_corpus
from rl.data.proxy import check_proxy
from rl.data.settings import config_from_args
from rl.data.shards import shard_counts, shards_root
from rl.launch.shipped import shipped_path
from rl.launch.slurm import check_no_secrets, fill_template
from rl.runtime.atomic_io import atomic_write_text
from rl.runtime.outputs import check_not_dangerous, check_outputs_spare_inputs
from rl.runtime.values import non_finite_options
from rl.runtime.wandb_secrets import SECRET_FLAG
from rl.train.launch_section import DEFAULT_SIGNAL_SECONDS, add_submit_arguments, launch_problem

COMMANDS = ("rpt", "rlp")
# rl submit's flags that an array job shares with training (rl/train/launch_section.py add_submit_arguments)
SHARED = ("partition", "time", "account", "cpus_per_task", "signal_seconds", "job_name", "cpu", "dry_run")
HELP = {"cpu": "no GPU per shard (CPU-only proxy forward; tests)",
        "cpus_per_task": "CPU cores per shard task (default: Slurm's)",
        "job_name": "Slurm job name (default: rl-rpt-data / rl-rlp-data)",
        "dry_run": "check everything, print the shard plan, the work per shard and the script; "
                   "write and submit nothing",
        "signal_seconds": None}
HEADER = """#!/bin/bash
# `rl data {{COMMAND}}` as a Slurm array job, rendered by `rl submit data {{COMMAND}}` (rl/launch/data_submit.py)
# from slurm/rpt_data.sbatch: one array task per shard; the task that finishes last merges into the output.
# Resubmit all unfinished shards: sbatch THIS_FILE; one shard I: sbatch --array=I THIS_FILE (finished shards
# are not rebuilt). Merge by hand: rl data merge --output OUTPUT.
#SBATCH --job-name={{JOB_NAME}}
#SBATCH --array={{ARRAY}}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={{CPUS_PER_TASK}}
#SBATCH --gpus-per-task={{GPUS_PER_TASK}}
#SBATCH --partition={{PARTITION}}
#SBATCH --account={{ACCOUNT}}
#SBATCH --time={{TIME}}
#SBATCH --output={{LOG_DIR}}/%x-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@{{SIGNAL_SECONDS}}
cd {{WORKDIR}}
export RL_PYTHON={{PYTHON}}
export RL_DATA_COMMAND={{COMMAND}}
export RL_NUM_SHARDS={{NUM_SHARDS}}
set -- {{ARGS}}
"""


EPILOG = """examples:
  rl submit data rpt --corpus web/ --proxy-model Qwen/Qwen3-1.7B --output runs/web-rpt --num-shards 64 \\
      --partition gpu --time 12:00:00 --max-running 16
  rl submit data rpt --corpus builtin:champ --output runs/champ-rpt --num-shards 4 --cpu --dry-run

Every `rl data rpt` flag passes to each task as typed. Files: OUTPUT.slurm/rpt-data-<timestamp>.sbatch
(the script), OUTPUT.slurm/<job name>-<job id>_<shard>.out (one log per shard, appended across requeues).
The task that finishes last merges the shards into OUTPUT (no dependent job: it would stay pending
forever if a failed shard were resubmitted as a new job); `rl data merge --output OUTPUT` by hand.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser(command: str) -> argparse.ArgumentParser:
    """`rl submit data rpt|rlp`: rl data's build flags (declared once, rl/data/cli.py) + rl submit's Slurm flags."""
    p = _Parser(prog=f"rl submit data {command}", allow_abbrev=False,
                description=f"Submit `rl data {command}` as a Slurm array job: one task per shard (--num-shards), "
                "requeued on SIGUSR1 and resumed at its last block, one log per task; the last task to finish "
                "merges the shards into OUTPUT.",
                epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_build_args(p, rlp=command == "rlp")
    train = add_submit_arguments(argparse.ArgumentParser(add_help=False))
    group = p.add_argument_group("Slurm (shared with rl submit)")
    for action in train._actions:
        if action.dest in SHARED:
            if action.dest == "dry_run":  # rl data rpt has its own --dry-run: the submit dry run replaces it
                p._remove_action(next(a for a in p._actions if a.dest == "dry_run"))
                p._option_string_actions.pop("--dry-run", None)
            kwargs = {"dest": action.dest, "help": HELP.get(action.dest) or action.help}
            if action.nargs == 0:
                kwargs["action"] = "store_true"
            else:
                kwargs["type"] = action.type
            group.add_argument(*action.option_strings, **kwargs)
    group.add_argument("--gpus-per-task", type=int, default=None, help="GPUs per shard task (default 1; 0 with --cpu)")
    group.add_argument("--max-running", type=int, default=None, help="run at most this many shards at once (%%K)")
    group.add_argument("--log-dir", help="where the script and the per-shard logs go (default: OUTPUT.slurm)")
    return p


def submit_only_dests(parser: argparse.ArgumentParser) -> set[str]:
    return set(SHARED) | {"gpus_per_task", "max_running", "log_dir", "num_shards", "shard_index", "help"}


def build_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """`argv` without the submit-only flags (and --num-shards, which the script adds per task), as typed."""
    drop = submit_only_dests(parser)
    out, i = [], 0
    argv = list(argv)
    while i < len(argv):
        tok = argv[i]
        name = tok.split("=", 1)[0] if tok.startswith("--") else tok
        action = parser._option_string_actions.get(name)
        if action is not None and action.dest in drop:
            i += 1 if (action.nargs == 0 or "=" in tok) else 2
            continue
        out.append(tok)
        i += 1
    return out


def render(command: str, args: argparse.Namespace, passed: Sequence[str], *, workdir: Path, log_dir: Path,
           python: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The array job's script: the header above, then slurm/rpt_data.sbatch from `set -euo pipefail` on."""
    body = shipped_path("slurm/rpt_data.sbatch").read_text(encoding="utf-8")
    start = body.find("\nset -euo pipefail")
    if start < 0:
        raise UserError("slurm/rpt_data.sbatch: no `set -euo pipefail` line to start the body at")
    n = args.num_shards
    gpus = args.gpus_per_task if args.gpus_per_task is not None else (0 if args.cpu else 1)
    values = {
        "COMMAND": command,
        "JOB_NAME": args.job_name or f"rl-{command}-data",
        "ARRAY": f"0-{n - 1}" + (f"%{args.max_running}" if args.max_running else ""),
        "CPUS_PER_TASK": args.cpus_per_task,
        "GPUS_PER_TASK": gpus or None,
        "PARTITION": args.partition,
        "ACCOUNT": args.account,
        "TIME": args.time,
        "LOG_DIR": log_dir,
        "SIGNAL_SECONDS": int(args.signal_seconds or DEFAULT_SIGNAL_SECONDS),
        "WORKDIR": workdir,
        "PYTHON": python or sys.executable,
        "NUM_SHARDS": n,
        "ARGS": list(passed),
    }
    text = fill_template(HEADER, values) + body[start + 1:]
    check_no_secrets(text, environ)
    return text


def check(command: str, args: argparse.Namespace, workdir: Path) -> tuple[Path, object]:
    """Everything a task would refuse, refused here in one line before anything is queued; returns (log dir, cfg)."""
    from rl.data.rpt import check_rpt_output

    if args.num_shards is None:
        raise UserError(f"rl submit data {command}: --num-shards N is required (the array's size: one task per shard)")
    if args.shard_index is not None:
        raise UserError("--shard-index: not used with rl submit (array task I builds shard I)")
    for name in ("cpus_per_task", "max_running", "signal_seconds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')}: must be at least 1 (or omit it), got {value}")
    if args.gpus_per_task is not None and args.gpus_per_task < 0:
        raise UserError(f"--gpus-per-task: must be 0 or more, got {args.gpus_per_task}")
    if args.cpu and args.gpus_per_task:
        raise UserError(f"--gpus-per-task {args.gpus_per_task}: not used with --cpu; drop one of them")
    problem = launch_problem({"time": args.time, "signal_seconds": args.signal_seconds})
    if problem:
        raise UserError(problem)
    cfg = config_from_args(args, corpus=args.corpus, proxy_model=args.proxy_model,
                           **({"format": "rlp"} if command == "rlp" else {}))
    cfg.validate()
    output = Path(args.output)
    check_rpt_output(cfg, output, overwrite=args.overwrite)
    counts = [c for c in shard_counts(shards_root(output)) if c != args.num_shards]
    if counts:
        raise UserError(f"--num-shards {args.num_shards}: {shards_root(output)} holds shards of a {counts[0]}-shard "
                        f"build; submit with --num-shards {counts[0]} to finish it, or remove that directory")
    next(read_corpus(cfg.corpus, text_field=cfg.text_field, id_field=cfg.id_field))  # UserError if unreadable
    check_proxy(cfg.proxy_model)
    log_dir = Path(args.log_dir) if args.log_dir else output.with_name(output.name + ".slurm")
    log_dir = (workdir / log_dir.expanduser()).resolve()
    flag = "--log-dir" if args.log_dir else "--output (its log dir OUTPUT.slurm)"
    check_not_dangerous(log_dir, flag, {"corpus": cfg.corpus, "proxy model": cfg.proxy_model},
                        containers={"corpus": cfg.corpus})
    out_abs = (workdir / output.expanduser()).resolve()
    for inside in (out_abs, shards_root(out_abs)):
        if log_dir == inside or inside in log_dir.parents:
            raise UserError(f"{flag}: {log_dir} is inside {inside}, which the build replaces or removes; "
                            "choose a directory outside it")
    if log_dir.exists() and not log_dir.is_dir():
        raise UserError(f"{flag}: {log_dir} is an existing file, not a directory")
    for tok in args.passed:
        if tok.startswith("--") and SECRET_FLAG.search(tok[2:].split("=", 1)[0]):
            raise UserError(f"refusing to write the sbatch script: {tok.split('=', 1)[0]} would put a secret in it")
    return log_dir, cfg


def submit_data(command: str, argv: Sequence[str], *, sbatch: str = "sbatch", env: Mapping[str, str] | None = None,
                out=None, workdir: str | os.PathLike | None = None, python: str | None = None) -> str | None:
    """Parse `rl submit data COMMAND ARGV`, check, render, and submit (or print, --dry-run); returns the job id."""
    out = out or sys.stdout
    if command not in COMMANDS:
        raise UserError(f"rl submit data {command}: unknown; expected one of {', '.join(COMMANDS)} "
                        "(e.g. rl submit data rpt --corpus ... --output ... --num-shards 8)")
    parser = build_parser(command)
    args = parser.parse_args(list(argv))
    bad = non_finite_options(args, parser)
    if bad:
        parser.error(f"{bad[0].split()[0]}: must be a finite number, got {bad[0].split()[1]}")
    workdir = Path(workdir or os.getcwd()).resolve()
    cwd = os.getcwd()
    os.chdir(workdir)  # relative paths mean what they mean to the job, which runs in workdir
    try:
        check_outputs_spare_inputs(args, parser)
        args.passed = build_args(parser, argv)
        log_dir, cfg = check(command, args, workdir)
        stamp, n = _time.strftime("%Y%m%d-%H%M%S"), 1
        script = log_dir / f"{command}-data-{stamp}.sbatch"
        while script.exists():
            script, n = log_dir / f"{command}-data-{stamp}-{n}.sbatch", n + 1
        text = render(command, args, args.passed, workdir=workdir, log_dir=log_dir, python=python, environ=env)
        if args.dry_run:
            from rl.data.estimate import estimate_build

            out.write(estimate_build(cfg, args.num_shards).format(args.output) + "\n")
            out.write(f"script ({script}, not written):\n")
            out.write(text)
            return None
    finally:
        os.chdir(cwd)
    exe = shutil.which(sbatch, path=(env or os.environ).get("PATH"))
    if exe is None:
        raise UserError(f"{sbatch}: not found on PATH; run `rl submit` on a Slurm login node "
                        "(or use --dry-run to only print the script)")

    try:
        atomic_write_text(script, text, exclusive=True, make_parents=True)
    except FileExistsError:
        raise UserError(f"{script} appeared meanwhile (another submission?); submit again") from None
    out.write(f"wrote {script}\n")
    proc = subprocess.run([exe, "--parsable", str(script)], capture_output=True, text=True, cwd=workdir,
                          env=None if env is None else dict(env))
    if proc.returncode != 0:
        raise UserError(f"sbatch {script} failed: {(proc.stderr or proc.stdout).strip()}")
    job_id = proc.stdout.strip().split(";")[0]
    name = re.search(r"^#SBATCH --job-name=(\S+)", text, re.MULTILINE).group(1)
    out.write(f"submitted array job {job_id} ({args.num_shards} shards)\nscript: {script}\n"
              f"logs:   {log_dir / f'{name}-{job_id}_<shard>.out'}\n"
              f"output: {args.output} (merged by the last shard to finish; by hand: rl data merge --output "
              f"{args.output})\n")
    return job_id
