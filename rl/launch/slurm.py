"""`rl submit`: render slurm/train.sbatch for a recipe and submit it with sbatch.

Why a rendered file instead of sbatch flags: the exact script of every run is kept next to its
checkpoints (<run dir>/slurm/train-<timestamp>.sbatch), so a run can be inspected or resubmitted
as it was. The preemption protocol the script implements is described in slurm/train.sbatch and
rl/runtime/checkpoint.py.

Template syntax: `{{NAME}}` placeholders. On `#SBATCH` lines values go in raw (and must not hold
whitespace, quotes or `$`); a line whose value is None is dropped (optional partition, account,
time, GPUs). In the script body every value is shell-quoted with shlex.quote, so bash's own
`$VAR` syntax stays usable in the template. Secrets never enter the script: rendering fails if the
value of any secret-looking environment variable (WANDB_API_KEY, HF_TOKEN, ...) appears in it.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time as _time
from collections.abc import Mapping, Sequence
from pathlib import Path

from rl.errors import UserError
from rl.train.launch_section import (DEFAULT_SIGNAL_SECONDS, add_submit_arguments, apply_launch_section,
                                     check_launch_section, launch_problem, slurm_time_seconds)
from rl.runtime.strict_yaml import load_recipe_file
from rl.train.preflight.rules import override_value
from rl.launch.shipped import shipped_path
from rl.runtime.atomic_io import atomic_write_text
from rl.runtime.outputs import check_not_dangerous
from rl.runtime.wandb_secrets import SECRET_FLAG
from rl.train.vllm_serve import serve_args, serve_settings

PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
SECRET_NAMES = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HF_API_TOKEN",
                "HUGGINGFACE_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")
SECRET_PATTERN = re.compile(r"TOKEN|SECRET|API_KEY|PASSWORD|PASSWD|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)
HEADER_VALUE = re.compile(r"^[^\s'\"$`\\]+$")


def secret_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Secret-looking environment variables (by name) and their values, skipping trivial values."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items()
            if (k in SECRET_NAMES or SECRET_PATTERN.search(k)) and v and len(v) >= 8}


def check_no_secrets(text: str, environ: Mapping[str, str] | None = None) -> None:
    """UserError if the value of a secret environment variable occurs in `text` (names it, never the value)."""
    leaked = sorted(k for k, v in secret_values(environ).items() if v in text)
    if leaked:
        raise UserError(f"refusing to write the sbatch script: it would contain the value of ${', $'.join(leaked)}; "
                        "secrets reach the job from your environment (sbatch --export=ALL), "
                        "do not pass them as overrides")


def load_recipe(recipe_path: str | os.PathLike) -> dict:
    """The recipe YAML as a dict (UserError if missing, unreadable or not a mapping), read as `rl train` reads it."""
    return load_recipe_file(recipe_path, missing_hint="; pass --config path/to/recipe.yaml")


def _header(name: str, value: object) -> str:
    text = str(value)
    if not HEADER_VALUE.match(text):
        raise UserError(f"--{name.lower().replace('_', '-')}: {text!r} cannot go on an #SBATCH line "
                        "(no spaces, quotes, $ or backslashes)")
    return text


def fill_template(template: str, values: Mapping[str, object]) -> str:
    """Replace {{NAME}}: raw on #SBATCH lines (line dropped if the value is None), shell-quoted elsewhere.

    Raises KeyError for a placeholder with no value, so template and renderer cannot drift apart.
    """
    out = []
    for line in template.splitlines(keepends=True):
        names = PLACEHOLDER.findall(line)
        missing = [n for n in names if n not in values]
        if missing:
            raise KeyError(f"template placeholder(s) {missing} have no value")
        header = line.startswith("#SBATCH")
        if header and any(values[n] is None for n in names):
            continue
        if header:
            line = PLACEHOLDER.sub(lambda m: _header(m.group(1), values[m.group(1)]), line)
        else:
            line = PLACEHOLDER.sub(lambda m: _quote(values[m.group(1)]), line)
        out.append(line)
    return "".join(out)


def _quote(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(shlex.quote(str(v)) for v in value)
    return shlex.quote("" if value is None else str(value))


def render_sbatch(recipe_path: str | os.PathLike, nodes: int = 1, gpus_per_node: int | None = None, *,
                  partition: str | None = None, time: str | None = None, account: str | None = None,
                  accelerate_config: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                  run_dir: str | os.PathLike | None = None, cpu: bool = False, procs_per_node: int | None = None,
                  cpus_per_task: int | None = None, signal_seconds: int = DEFAULT_SIGNAL_SECONDS,
                  job_name: str | None = None, vllm_server_node: bool = False, vllm_model: str | None = None,
                  python: str | None = None, workdir: str | os.PathLike | None = None,
                  entry_module: str = "rl.cli", script_path: str | os.PathLike | None = None,
                  template: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The sbatch script text for training `recipe_path` on `nodes` nodes (see module docstring).

    run_dir defaults to the recipe's (or an `--output_dir` override's) output_dir; an explicit
    run_dir is also passed to the trainer as `--output_dir`, so checkpoints, logs and the script
    stay together. Relative paths are taken from `workdir` (default: the current directory),
    where the job also runs.
    """
    workdir = Path(workdir or os.getcwd()).resolve()
    recipe = (workdir / recipe_path).resolve()
    data = load_recipe(recipe)
    overrides = list(overrides)
    if run_dir is not None and override_value(overrides, "output_dir") is None:
        overrides += ["--output_dir", str((workdir / Path(str(run_dir)).expanduser()).resolve())]
    run_dir = run_dir_for(recipe, run_dir, overrides, workdir)
    if nodes < 1:
        raise UserError(f"--nodes: {nodes}; need at least 1")
    if vllm_server_node and nodes < 2:
        raise UserError("--vllm-server-node needs --nodes >= 2 (one serves generations, the rest train)")
    for name, value in (("--procs-per-node", procs_per_node), ("--cpus-per-task", cpus_per_task)):
        if value is not None and value < 1:
            raise UserError(f"{name}: must be at least 1 (or omit it for the default), got {value}")
    if cpu and gpus_per_node:
        raise UserError(launch_problem({"cpu": cpu, "gpus_per_node": gpus_per_node}))
    if cpu:
        procs_per_node = procs_per_node or 2
        cpus_per_task = cpus_per_task or procs_per_node
    else:
        if not gpus_per_node or gpus_per_node < 1:
            raise UserError("--gpus-per-node: pass the number of GPUs per node (at least 1), "
                            "or --cpu for a CPU-only run")
        procs_per_node = procs_per_node or gpus_per_node
    if time is not None:
        try:
            slurm_time_seconds(str(time))
        except ValueError as exc:
            raise UserError(f"--time: {exc}") from None
    if signal_seconds < 1:
        raise UserError(f"--signal-seconds: {signal_seconds}; need at least 1")
    problem = launch_problem({"time": time, "signal_seconds": signal_seconds})
    if problem:
        raise UserError(problem)
    if accelerate_config is not None:
        accelerate_config = (workdir / accelerate_config).resolve()
        if not accelerate_config.is_file():
            raise UserError(f"--accelerate-config: {accelerate_config} not found")
    serve = None
    if vllm_server_node:
        vllm_model = vllm_model or override_value(overrides, "model_name_or_path") or data.get("model_name_or_path")
        if not vllm_model:
            raise UserError(f"{recipe}: --vllm-server-node needs model_name_or_path in the recipe")

        try:  # the recipe's vLLM settings for `trl vllm-serve` (rl/train/vllm_serve.py)
            serve = serve_settings(lambda f: data.get(f) if override_value(overrides, f) is None else override_value(overrides, f),
                                   model=vllm_model, gpus=None if cpu else procs_per_node)
        except UserError as exc:
            raise UserError(f"{recipe}: {exc}") from None

    for tok in overrides:  # a secret passed as a flag would land in the kept script
        name = str(tok).split("=", 1)[0]
        if str(tok).startswith("--") and SECRET_FLAG.search(name[2:]):
            raise UserError(f"refusing to write the sbatch script: override {name} would put a secret in it; "
                            "export it in the submitting shell instead (e.g. $HF_TOKEN)")
    train_args = ["train", "--config", str(recipe), *overrides]
    if override_value(overrides, "resume_from_checkpoint") is None:
        train_args += ["--resume_from_checkpoint", "auto"]

    template_path = Path(template) if template else shipped_path("slurm/train.sbatch")  # checkout or wheel
    if not template_path.is_file():
        raise UserError(f"{template_path}: sbatch template not found")
    values = {
        "JOB_NAME": job_name or f"rl-{recipe.stem}",
        "NODES": nodes,
        "CPUS_PER_TASK": cpus_per_task,
        "GPUS_PER_NODE_SBATCH": gpus_per_node,
        "PARTITION": partition,
        "ACCOUNT": account,
        "TIME": time,
        "LOG_DIR": run_dir / "slurm",
        "SIGNAL_SECONDS": int(signal_seconds),
        "RUN_DIR": run_dir,
        "WORKDIR": workdir,
        "PYTHON": python or sys.executable,
        "ACCELERATE_CONFIG": accelerate_config or "",
        "PROCS_PER_NODE": procs_per_node,
        "CPU_MODE": int(bool(cpu)),
        "VLLM_SERVER_NODE": int(bool(vllm_server_node)),
        "VLLM_SERVE_ARGS": serve_args(serve) if serve else [],
        "VLLM_PORT": serve.served_port if serve else "",
        "VLLM_TIMEOUT": f"{serve.timeout:g}" if serve else "",
        "SCRIPT_PATH": script_path or run_dir / "slurm" / "train.sbatch",
        "ENTRY_MODULE": entry_module,
        "TRAIN_ARGS": train_args,
    }
    text = fill_template(template_path.read_text(encoding="utf-8"), values)
    check_no_secrets(text, environ)
    return text


def run_dir_for(recipe_path: str | os.PathLike, run_dir: str | os.PathLike | None = None,
                overrides: Sequence[str] = (), workdir: str | os.PathLike | None = None) -> Path:
    """Where a submission's files go: --run-dir, else an --output_dir override, else the recipe's output_dir."""
    workdir = Path(workdir or os.getcwd()).resolve()
    if run_dir is None:
        run_dir = override_value(overrides, "output_dir") or load_recipe(workdir / recipe_path).get("output_dir")
        if not run_dir:
            raise UserError(f"{recipe_path}: no output_dir in the recipe; set it or pass --run-dir")
    return (workdir / Path(str(run_dir)).expanduser()).resolve()


def check_run_dir(recipe_path, run_dir: Path, overrides: Sequence[str], workdir: Path, flag: str) -> None:
    """The run dir (where the trainer, its logs and the kept script go): refused when it is `.`/`..`/above
    the submitting directory, the recipe, the data, the corpus or a model (or contains one), or an
    existing file. An existing run dir is fine: submissions only add new files (resume needs it)."""
    recipe = (workdir / recipe_path).resolve()
    data = load_recipe(recipe)
    inputs = {"recipe": recipe}
    for name in ("dataset_path", "corpus", "model_name_or_path", "proxy_model"):
        value = override_value(overrides, name) or data.get(name)
        if value:
            inputs[name] = (workdir / Path(str(value)).expanduser()) if not str(value).startswith("builtin:") else value
    cwd = os.getcwd()
    try:
        os.chdir(workdir)  # `.` and `..` mean the job's working directory
        check_not_dangerous(run_dir, flag, inputs, containers={"corpus": inputs.get("corpus")})
    finally:
        os.chdir(cwd)
    for path in (run_dir, run_dir / "slurm"):
        if path.exists() and not path.is_dir():
            raise UserError(f"{flag}: {path} is an existing file, not a directory; choose another run directory")


def check_recipe_like_dry_run(args, overrides: Sequence[str]) -> None:
    """The checks of `rl train --config RECIPE --dry-run` at the submission's world size, before anything is
    rendered: a recipe the dry-run refuses is refused here (one line), not after queueing."""
    from rl.train.preflight.dryrun import dry_run

    # The signal check loads the model's weights: the job runs it when it starts, not the submit host.
    argv = ["--config", str(args.config), *overrides, "--signal_check", "off"]
    if args.run_dir is not None and override_value(overrides, "output_dir") is None:
        argv += ["--output_dir", str(args.run_dir)]
    if args.cpu:  # the server node (--vllm-server-node) runs no training rank
        train_nodes = args.nodes - 1 if args.vllm_server_node else args.nodes
        argv += ["--num_processes", str(max(train_nodes, 0) * (args.procs_per_node or 2))]
        if args.vllm_server_node:
            argv += ["--nodes", str(args.nodes)]
    else:
        argv += ["--nodes", str(args.nodes)] + (["--gpus-per-node", str(args.gpus_per_node)]
                                                if args.gpus_per_node else [])
    if args.accelerate_config:
        argv += ["--accelerate_config", str(args.accelerate_config)]
    if args.vllm_server_node:
        argv += ["--vllm-server-node"]
    problems = dry_run(argv).problems
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        first = " ".join(str(problems[0]).split())
        raise UserError(f"{args.config}: `rl train --dry-run` refuses this recipe: {first}{more}; run "
                        f"`rl train --config {args.config} --dry-run` for the full report")


def submit(recipe_path: str | os.PathLike, *, dry_run: bool = False, sbatch: str = "sbatch",
           env: Mapping[str, str] | None = None, out=None, **render_kwargs) -> str | None:
    """Render into <run dir>/slurm/train-<timestamp>.sbatch and submit it; returns the job id.

    dry_run: print the script and return None (nothing written, nothing submitted).
    """
    out = out or sys.stdout
    workdir = Path(render_kwargs.pop("workdir", None) or os.getcwd()).resolve()
    run_dir = run_dir_for(recipe_path, render_kwargs.get("run_dir"), render_kwargs.get("overrides", ()), workdir)
    check_run_dir(recipe_path, run_dir, render_kwargs.get("overrides", ()), workdir,
                  "--run-dir" if render_kwargs.get("run_dir") is not None else "output_dir")
    stamp, n = _time.strftime("%Y%m%d-%H%M%S"), 1
    script = run_dir / "slurm" / f"train-{stamp}.sbatch"
    while script.exists():  # two submissions in the same second keep both scripts
        script, n = run_dir / "slurm" / f"train-{stamp}-{n}.sbatch", n + 1
    text = render_sbatch(recipe_path, workdir=workdir, script_path=script, environ=env, **render_kwargs)
    if dry_run:
        out.write(text)
        return None
    exe = shutil.which(sbatch, path=(env or os.environ).get("PATH"))
    if exe is None:
        raise UserError(f"{sbatch}: not found on PATH; run `rl submit` on a Slurm login node "
                        "(or use --dry-run to only print the script)")

    try:
        atomic_write_text(script, text, exclusive=True, make_parents=True)  # a kept script is never replaced
    except FileExistsError:
        raise UserError(f"{script} appeared meanwhile (another submission?); submit again") from None
    out.write(f"wrote {script}\n")
    proc = subprocess.run([exe, "--parsable", str(script)], capture_output=True, text=True, cwd=workdir,
                          env=None if env is None else dict(env))
    if proc.returncode != 0:
        raise UserError(f"sbatch {script} failed: {(proc.stderr or proc.stdout).strip()}")
    job_id = proc.stdout.strip().split(";")[0]
    name = re.search(r"^#SBATCH --job-name=(\S+)", text, re.MULTILINE).group(1)
    out.write(f"submitted job {job_id}\nscript: {script}\nlog:    {run_dir / 'slurm' / f'{name}-{job_id}.out'}\n")
    return job_id


def _main(args: argparse.Namespace) -> int:
    overrides = list(args.overrides or [])
    if overrides[:1] == ["data"]:  # `rl submit data rpt ...`: an rl data build as an array job
        given = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
                 if k not in ("overrides", "func", "rl_parser", "extra", "command", "verbose") and v not in (None, False)]
        if given:
            raise UserError(f"rl submit data: {given[0]} goes after `rl submit data rpt` (a data build takes no "
                            "recipe; its Slurm flags follow the command)")
        if len(overrides) < 2:
            raise UserError("rl submit data: name the build, e.g. rl submit data rpt --corpus ... --output ... "
                            "--num-shards 8")
        from rl.launch.data_submit import submit_data  # it builds on this module: imported here, no cycle

        submit_data(overrides[1], overrides[2:])
        return 0
    if args.config is None:
        raise UserError("rl submit: --config RECIPE is required (or `rl submit data rpt ...` for a data build)")
    if overrides and overrides[0] == "--":
        overrides = overrides[1:]
    recipe = load_recipe(args.config)
    section = check_launch_section(str(args.config), recipe["launch"]) if "launch" in recipe else {}
    args = apply_launch_section(args, section)
    for name in ("nodes", "gpus_per_node", "procs_per_node", "cpus_per_task", "signal_seconds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')}: must be at least 1, got {value}")
    problem = launch_problem(vars(args))  # contradictions, before the dry run's checks (one line)
    if problem:
        raise UserError(problem)
    check_recipe_like_dry_run(args, overrides)
    submit(args.config, dry_run=args.dry_run, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
           partition=args.partition, time=args.time, account=args.account,
           accelerate_config=args.accelerate_config, overrides=overrides, run_dir=args.run_dir, cpu=args.cpu,
           procs_per_node=args.procs_per_node, cpus_per_task=args.cpus_per_task,
           signal_seconds=args.signal_seconds, job_name=args.job_name, vllm_server_node=args.vllm_server_node)
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add `rl submit` to the CLI."""
    p = subparsers.add_parser(
        "submit", help="render slurm/train.sbatch for a recipe and submit it with sbatch",
        description="Submit `rl train --config RECIPE` as a Slurm job (requeued on preemption, resumed "
                    "from the newest complete checkpoint). Trainer overrides go after `--`. "
                    "`rl submit data rpt|rlp ...` submits an `rl data` build as an array job, one task per "
                    "shard (rl submit data rpt --help).")
    add_submit_arguments(p)
    p.set_defaults(func=_main)
    return p
