"""`rl train --config RECIPE --dry-run`: check a recipe as a real run would see it, without loading weights.

What a run resolves, and what the dry-run checks instead (nothing is downloaded, no weights loaded):

* the recipe: every field known and well typed (all bad fields reported, not only the first), the
  command-line overrides, and TRL's own validation (`rl.config.parse_recipe`), evaluated for the
  machines the run will use: the world size below, and GPUs unless the recipe says `use_cpu`
  (so a bf16 GPU recipe can be checked on a CPU login node);
* the launch: world size (= training processes) from, in this order, `--num_processes N`,
  `--nodes N --gpus-per-node G` [`--vllm-server-node`], the recipe header's launch line (the first
  `rl submit ...` in the recipe's opening comment, else its first `accelerate launch ...`), the
  accelerate config's `num_processes`, else 1. The accelerate config comes from
  `--accelerate_config PATH`, else a recipe field `accelerate_config` (when ScriptArguments has
  one), else the launch line. Overrides after `--` on the launch line apply as in the real run;
* the batch arithmetic TRL does at that world size (completions per optimizer step, generation
  batch, optimizer steps per generation batch) and its divisibility rules: the generation batch
  holds whole groups of `num_generations`, `generation_batch_size` splits into global batches,
  vLLM's tensor-parallel size divides the processes, the dataset holds at least one generation
  batch of prompts;
* DeepSpeed: the accelerate YAML (its inline `deepspeed_config`, or the JSON it names) and TRL's
  own `deepspeed` field (a JSON path or a dict): ZeRO stage, offload devices, explicit values
  that contradict the recipe (micro-batch, accumulation, train batch, bf16/fp16);
* rewards: every name resolves (`rewards.get_reward_funcs`), and each reward is called once on the
  first rows of the data with an empty completion (cheap: no model), which catches missing or
  malformed columns exactly as training would;
* data: `dataset_path` (only its features and first rows are read), or the `corpus` spec (its
  first document) plus the RPT build settings when the data is built at the start of the run;
* models (policy and RPT proxy): a local directory or an already converted `builtin:` model has its
  config (and tokenizer) read; a hub id is read only from the local Hugging Face cache, else it
  is listed under "not checked offline" (never an error: the hub may simply be unreachable here);
  lengths (prompt bound + `max_completion_length`) against the model's positions and vLLM's
  `vllm_max_model_length`;
* vLLM: server mode needs a host (or `rl submit --vllm-server-node`), colocate tensor parallelism
  fits the processes and one node.

Output: a resolved summary, then "not checked offline" items, notes, and a numbered list of
problems. Exit status 0 with no problems, 2 otherwise (like any user error of `rl`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import inspect
import json
import logging
import math
import os
import shlex
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rl.errors import UserError

EXIT_OK = 0
EXIT_PROBLEMS = 2
PEEK_ROWS = 32  # rows read from the dataset for column/type/length checks
PROBE_ROWS = 4  # rows each reward function is called on

# Columns of the rows `rl data rpt` builds (rl/data/rpt.py).
RPT_COLUMNS = ("prompt", "context", "continuation", "boundaries", "entropy", "doc_id", "position")
# Rewards whose column parameters have defaults but which fail without the column.
_NEEDS_OPTIONAL = {"rpt_reward": ("continuation", "boundaries")}
_DISTRIBUTED_TYPES = ("NO", "MULTI_GPU", "MULTI_CPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU", "MULTI_MUSA",
                      "MULTI_HPU", "DEEPSPEED", "FSDP", "XLA", "MEGATRON_LM")
_OFFLOAD_DEVICES = ("none", "cpu", "nvme")
_MIXED = ("no", "fp16", "bf16", "fp8")
# TRL's GRPOConfig batch-size errors: the dry-run's own batch check reports these with more context.
_TRL_BATCH_ERRORS = ("must be divisible by num_generations", "must be divisible by the global batch size",
                     "global eval batch size", "can not be both configured")

DRY_RUN_EXAMPLES = """examples:
  rl train --config recipes/forking/qwen3-8b-dapo.yaml --dry-run
  rl train --config recipes/rpt/r1-distill-qwen-14b.yaml --dry-run --nodes 8 --gpus-per-node 8
  rl train --config R.yaml --dry-run --accelerate_config recipes/accelerate/zero2.yaml --num_processes 8
"""


# ---------------------------------------------------------------------------------------------
# report


@dataclasses.dataclass
class Report:
    recipe: str
    summary: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    offline: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    def add(self, label: str, text: str) -> None:
        self.summary.append((label, text))

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    @property
    def exit_code(self) -> int:
        return EXIT_PROBLEMS if self.problems else EXIT_OK

    def format(self) -> str:
        out = [f"dry run of {self.recipe} (no weights loaded, nothing downloaded)"]
        width = max([len(label) for label, _ in self.summary] + [8])
        for label, text in self.summary:
            lines = text.split("\n")
            out.append(f"  {label:<{width}}  {lines[0]}")
            out.extend(f"  {'':<{width}}  {line}" for line in lines[1:])
        if self.offline:
            out.append(f"not checked offline ({len(self.offline)}):")
            out.extend(f"  - {item}" for item in self.offline)
        if self.notes:
            out.append(f"notes ({len(self.notes)}):")
            out.extend(f"  - {item}" for item in self.notes)
        if self.problems:
            out.append(f"problems ({len(self.problems)}):")
            out.extend(f"  {i}. {item}" for i, item in enumerate(self.problems, 1))
        else:
            out.append("problems: none")
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# launch plan: world size and accelerate config


@dataclasses.dataclass
class LaunchPlan:
    world_size: int = 1
    source: str = "single process (no launch line, no --nodes/--num_processes)"
    nodes: int | None = None  # training nodes
    job_nodes: int | None = None  # nodes of the job (one more than `nodes` with a vLLM server node)
    gpus_per_node: int | None = None  # training processes per node
    accelerate_config: str | None = None
    accelerate_source: str | None = None
    vllm_server_node: bool = False
    cpu: bool = False
    command: str | None = None  # the header launch line used, if any
    overrides: list[str] = dataclasses.field(default_factory=list)  # from the launch line, applied first


def header_commands(text: str) -> list[str]:
    """The commands in a recipe's opening comment block (one per line, `\\` continuations joined)."""
    lines: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped:
            if lines:
                lines.append("")
            continue
        if not stripped.startswith("#"):
            break
        lines.append(stripped[1:].strip())
    commands, current = [], ""
    for line in lines:
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        commands.append((current + line).strip())
        current = ""
    if current:
        commands.append(current.strip())
    return [c for c in commands if c]


class _ArgError(Exception):
    pass


def _raise_error(message: str):
    raise _ArgError(message)


def _submit_parser() -> argparse.ArgumentParser:
    from rl import slurm

    sub = argparse.ArgumentParser(add_help=False).add_subparsers()
    parser = slurm.register(sub)
    parser.error = _raise_error  # type: ignore[method-assign]
    return parser


def plan_from_header(text: str, where: str, report: Report) -> LaunchPlan | None:
    """The launch plan of the recipe's header: its first `rl submit` line, else its first `accelerate launch`."""
    commands = header_commands(text)
    for command in commands:
        if not command.startswith("rl submit "):
            continue
        try:
            tokens = shlex.split(command, comments=True)
            args = _submit_parser().parse_args(tokens[2:])
        except (ValueError, _ArgError) as exc:
            report.problem(f"{where}: header launch line `{command}` does not parse ({exc})")
            return None
        overrides = list(args.overrides or [])
        if overrides[:1] == ["--"]:
            overrides = overrides[1:]
        train_nodes = args.nodes - 1 if args.vllm_server_node else args.nodes
        per_node = args.procs_per_node or (2 if args.cpu else args.gpus_per_node)
        if not per_node or args.nodes < 1 or train_nodes < 1:
            report.problem(f"{where}: header launch line `{command}` needs --nodes >= 1 (>= 2 with "
                           "--vllm-server-node) and --gpus-per-node")
            return None
        return LaunchPlan(world_size=train_nodes * per_node, nodes=train_nodes, job_nodes=args.nodes,
                          gpus_per_node=per_node,
                          accelerate_config=args.accelerate_config, vllm_server_node=args.vllm_server_node,
                          cpu=args.cpu, command=shlex.join(tokens), overrides=overrides,
                          source="recipe header: " + _describe_nodes(train_nodes, per_node, args.cpu,
                                                                    args.vllm_server_node))
    for command in commands:
        if not command.startswith("accelerate launch "):
            continue
        try:
            tokens = shlex.split(command, comments=True)
        except ValueError as exc:
            report.problem(f"{where}: header launch line `{command}` does not parse ({exc})")
            return None
        plan = LaunchPlan(command=shlex.join(tokens), source="recipe header: accelerate launch")
        num_processes = None
        for i, tok in enumerate(tokens[:-1]):
            if tok in ("--config_file", "--config-file"):
                plan.accelerate_config = tokens[i + 1]
            elif tok in ("--num_processes", "--num-processes"):
                num_processes = tokens[i + 1]
        if "--config" in tokens:
            plan.overrides = [t for t in tokens[tokens.index("--config") + 2:]]
        if num_processes is not None:
            try:
                plan.world_size = int(num_processes)
            except ValueError:
                report.problem(f"{where}: header launch line: --num_processes {num_processes!r} is not a number")
            plan.source = f"recipe header: accelerate launch --num_processes {num_processes}"
        else:
            plan.world_size = 0  # from the accelerate config, resolved later
        return plan
    return None


def _describe_nodes(nodes: int, per_node: int, cpu: bool, server: bool) -> str:
    unit = "CPU processes" if cpu else "GPUs"
    text = f"{nodes} node{'s' if nodes != 1 else ''} x {per_node} {unit}"
    return text + (" (+1 node serving vLLM)" if server else "")


# ---------------------------------------------------------------------------------------------
# argument handling


def _own_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rl train --dry-run", add_help=False, allow_abbrev=False)
    p.add_argument("--config")
    p.add_argument("--dry-run", "--dry_run", action="store_true")
    p.add_argument("--nodes", type=int)
    p.add_argument("--gpus-per-node", "--gpus_per_node", type=int, dest="gpus_per_node")
    p.add_argument("--num_processes", "--num-processes", type=int, dest="num_processes")
    p.add_argument("--accelerate_config", "--accelerate-config", dest="accelerate_config")
    p.add_argument("--vllm-server-node", "--vllm_server_node", action="store_true", dest="vllm_server_node")
    p.error = _raise_error  # type: ignore[method-assign]
    return p


def _script_has_field(name: str) -> bool:
    from rl.config import ScriptArguments

    return name in {f.name for f in dataclasses.fields(ScriptArguments)}


def resolve_plan(opts, header: LaunchPlan | None, recipe_accelerate: str | None, report: Report) -> LaunchPlan:
    """Merge the flags, the recipe field and the header launch line into one plan (flags win)."""
    plan = LaunchPlan()
    if header is not None:
        plan = dataclasses.replace(header)
        if header.accelerate_config:
            plan.accelerate_source = "recipe header"
    if recipe_accelerate:
        plan.accelerate_config, plan.accelerate_source = recipe_accelerate, "recipe field accelerate_config"
    if opts.accelerate_config:
        plan.accelerate_config, plan.accelerate_source = opts.accelerate_config, "--accelerate_config"
    if opts.nodes is not None or opts.gpus_per_node is not None or opts.vllm_server_node:
        nodes = opts.nodes if opts.nodes is not None else (plan.job_nodes or 1)
        per_node = opts.gpus_per_node if opts.gpus_per_node is not None else (plan.gpus_per_node or 1)
        server = opts.vllm_server_node or plan.vllm_server_node
        train_nodes = nodes - 1 if server else nodes
        if nodes < 1 or per_node < 1 or train_nodes < 1:
            report.problem(f"--nodes {nodes} --gpus-per-node {per_node}: need at least one training node and GPU"
                           + (" (--vllm-server-node takes one node)" if server else ""))
            train_nodes = max(train_nodes, 1)
            per_node = max(per_node, 1)
        plan.nodes, plan.job_nodes, plan.gpus_per_node, plan.vllm_server_node = train_nodes, nodes, per_node, server
        plan.world_size = train_nodes * per_node
        plan.source = "--nodes/--gpus-per-node: " + _describe_nodes(train_nodes, per_node, False, server)
    if opts.num_processes is not None:
        if opts.num_processes < 1:
            report.problem(f"--num_processes {opts.num_processes}: need at least 1")
        plan.world_size = max(opts.num_processes, 1)
        plan.source = f"--num_processes {opts.num_processes}"
    return plan


# ---------------------------------------------------------------------------------------------
# recipe parsing for the target machines


@contextlib.contextmanager
def target_machines(world_size: int):
    """Evaluate TRL/transformers config validation as on the run's machines, not this one.

    * `world_size`: GRPOConfig derives and checks its batch sizes from `TrainingArguments.world_size`,
      which is 1 in this process; here it is the run's number of processes.
    * bf16: transformers refuses `bf16: true` on a machine without a bf16 GPU; the run has GPUs
      (unless the recipe sets `use_cpu`, in which case the check is not reached anyway).
    * the recipe's `env:` is applied by TRL's parser to os.environ; it is restored afterwards.
    """
    import transformers.training_args as training_args_module

    from rl.config import EntropyGRPOConfig

    saved_env = dict(os.environ)
    saved_bf16 = training_args_module.is_torch_bf16_gpu_available
    training_args_module.is_torch_bf16_gpu_available = lambda: True
    EntropyGRPOConfig.world_size = property(lambda self: world_size)  # type: ignore[assignment]
    try:
        yield
    finally:
        del EntropyGRPOConfig.world_size
        training_args_module.is_torch_bf16_gpu_available = saved_bf16
        os.environ.clear()
        os.environ.update(saved_env)


def parse_for_target(argv: list[str], world_size: int = 1):
    """`rl.config.parse_recipe(argv)` as on the run's machines (see `target_machines`), without
    initialising DeepSpeed (the `deepspeed` field is checked separately and restored on the result)."""
    from rl.config import parse_recipe

    raw_ds = _raw_value(argv, "deepspeed")
    import warnings

    import io

    with target_machines(world_size), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", FutureWarning)  # TRL's own gradient_checkpointing default warns
        script_args, training_args, model_args = parse_recipe(list(argv) + ["--deepspeed", ""])
    training_args.deepspeed = raw_ds
    return script_args, training_args, model_args


def _raw_value(argv: list[str], name: str):
    """The value of one recipe field after file + overrides, without building the dataclasses."""
    from rl.config import load_recipe_file, make_parser

    argv = list(argv)
    parser = make_parser()
    parser.error = _raise_error  # type: ignore[method-assign]
    if "--config" in argv:
        i = argv.index("--config")
        data = load_recipe_file(argv[i + 1])
        data.pop("env", None)
        del argv[i:i + 2]
        parser.set_defaults_with_config(**data)
    ns, _ = parser.parse_known_args(argv)
    return getattr(ns, name, None)


def _value(x) -> str:
    """An enum's value (TrainingArguments turns strategies into enums), else str(x)."""
    return str(getattr(x, "value", x))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


# ---------------------------------------------------------------------------------------------
# the dry run


def dry_run(argv: list[str]) -> Report:
    """Check the recipe given by `--config` (plus overrides and the dry-run's own flags); returns the report."""
    saved_env = dict(os.environ)
    try:
        return _dry_run(list(argv))
    finally:
        os.environ.clear()
        os.environ.update(saved_env)


def _dry_run(argv: list[str]) -> Report:
    from rl.config import _check_fields, load_recipe_file, make_parser

    try:
        opts, overrides = _own_parser().parse_known_args(argv)
    except _ArgError as exc:
        report = Report(recipe="(recipe)")
        report.problem(f"dry-run flags: {exc}")
        return report
    report = Report(recipe=opts.config or "(no --config)")
    if not opts.config:
        report.problem("--config: pass the recipe to check (rl train --config RECIPE.yaml --dry-run)")
        return report
    path = Path(opts.config)
    try:
        data = load_recipe_file(path)
    except UserError as exc:
        report.problem(str(exc))
        return report
    text = path.read_text(encoding="utf-8")

    # 1. fields of the file, each checked on its own so that every bad one is reported
    parser = make_parser()
    bad_keys = []
    for key, value in data.items():
        try:
            _check_fields(path, {key: value}, parser)
        except UserError as exc:
            report.problem(str(exc))
            bad_keys.append(key)
    clean = {k: v for k, v in data.items() if k not in bad_keys}

    # 2. the launch plan
    header = plan_from_header(text, str(path), report)
    recipe_accel = None
    if _script_has_field("accelerate_config"):
        recipe_accel = _raw_field(clean, overrides, "accelerate_config")
    plan = resolve_plan(opts, header, recipe_accel, report)
    if plan.accelerate_config and _script_has_field("accelerate_config") and "--accelerate_config" not in overrides:
        overrides = overrides + ["--accelerate_config", plan.accelerate_config]
    all_overrides = plan.overrides + overrides
    if plan.vllm_server_node:  # what `rl submit --vllm-server-node` adds to the trainer's arguments
        all_overrides += ["--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_host", "<vLLM node>"]

    # 3. raw values (no dataclass validation) and the full TRL parse for the target machines
    ns = _raw_namespace(clean, all_overrides, report)
    accel = _read_accelerate_config(plan, report) if plan.accelerate_config else None
    if plan.world_size == 0:  # `accelerate launch --config_file X` without --num_processes
        try:
            plan.world_size = max(int((accel or {}).get("num_processes") or 1), 1)
        except (TypeError, ValueError):
            report.problem(f"accelerate config {plan.accelerate_config}: num_processes "
                           f"{(accel or {}).get('num_processes')!r} is not a number")
            plan.world_size = 1
        plan.source = f"accelerate config {plan.accelerate_config}: num_processes {plan.world_size}"
    world = plan.world_size
    view, parsed = ns, None
    trl_batch_error = None
    if ns is not None:
        recipe_path = path
        tmp = None
        if bad_keys:
            tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8")
            import yaml

            yaml.safe_dump(clean, tmp)
            tmp.close()
            recipe_path = Path(tmp.name)
        try:
            parsed = parse_for_target(["--config", str(recipe_path), *all_overrides], world)
        except UserError as exc:
            msg = str(exc).replace(str(recipe_path), str(path))
            msg = msg if msg.startswith(str(path)) else f"{path}: {msg}"
            if any(k in msg for k in _TRL_BATCH_ERRORS):
                trl_batch_error = msg  # reported only if the dry-run's own batch check finds nothing
            else:
                report.problem(msg)
        except Exception as exc:  # noqa: BLE001 - any other failure of TRL's validation is a finding
            report.problem(f"{path}: {exc.__class__.__name__}: {_first_line(exc)}")
        finally:
            if tmp is not None:
                os.unlink(tmp.name)
        if parsed is not None:
            training_args = parsed[1]
            merged = {**vars(ns)}
            for obj in parsed:
                merged.update({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
            view = SimpleNamespace(**merged)
            # what TRL derived for the run's world size
            view._trl_generation_batch_size = training_args.generation_batch_size
    if view is None:
        return report
    env = clean.get("env") if isinstance(clean.get("env"), dict) else {}
    if env:
        os.environ.update({k: str(v) for k, v in env.items()})

    _summarise_launch(report, plan, world)
    ds_info = _check_deepspeed(report, view, plan, accel, world)
    reward_funcs = _check_rewards(report, view)
    policy = _check_model(report, "model", view.model_name_or_path, view)
    data = _check_data(report, view, reward_funcs, policy)
    before = len(report.problems)
    _check_batch(report, view, world, plan, data)
    if trl_batch_error and len(report.problems) == before:
        report.problem(trl_batch_error)
    _check_vllm(report, view, world, plan, ds_info)
    _check_lengths(report, view, policy, data)
    _check_output(report, view)
    return report


def _raw_field(clean: dict, overrides: list[str], name: str):
    from rl.slurm import _override_value

    value = _override_value(overrides, name)
    return value if value is not None else clean.get(name)


def _raw_namespace(clean: dict, overrides: list[str], report: Report):
    """Every field after file + overrides, as argparse sees them (no dataclass __post_init__)."""
    from rl.config import make_parser

    parser = make_parser()
    parser.error = _raise_error  # type: ignore[method-assign]
    values = {k: v for k, v in clean.items() if k != "env"}
    parser.set_defaults_with_config(**values)
    try:
        ns, unknown = parser.parse_known_args(overrides)
    except _ArgError as exc:
        report.problem(f"command-line override: {exc}")
        return None
    if unknown:
        report.problem(f"command-line override: unknown argument(s) {' '.join(unknown)} (see rl train --help-fields)")
    return ns


# ---------------------------------------------------------------------------------------------
# launch / DeepSpeed


def _summarise_launch(report: Report, plan: LaunchPlan, world: int) -> None:
    if plan.command:
        report.add("launch", plan.command)
    report.add("world size", f"{world} training process{'es' if world != 1 else ''} ({plan.source})")


def _read_accelerate_config(plan: LaunchPlan, report: Report) -> dict | None:
    """The accelerate config file as a dict (YAML or JSON), or None after reporting why not."""
    import yaml

    where = f"accelerate config {plan.accelerate_config}"
    path = Path(plan.accelerate_config)
    if not path.is_file():
        report.problem(f"{where} ({plan.accelerate_source}): file not found")
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except yaml.YAMLError as exc:
        report.problem(f"{where}: not valid YAML/JSON ({_first_line(exc)})")
        return None
    if not isinstance(data, dict):
        report.problem(f"{where}: must be a mapping of accelerate settings")
        return None
    return data


def _check_deepspeed(report: Report, view, plan: LaunchPlan, accel: dict | None, world: int) -> dict:
    """DeepSpeed from the accelerate config and/or TRL's `deepspeed` field; returns {'stage': ...}."""
    info: dict[str, Any] = {"stage": None}
    mixed = None
    parts = []
    if accel is not None:
        where = f"accelerate config {plan.accelerate_config}"
        dist = str(accel.get("distributed_type", "NO")).upper()
        if dist not in _DISTRIBUTED_TYPES:
            report.problem(f"{where}: distributed_type {dist!r} is not one of {', '.join(_DISTRIBUTED_TYPES)}")
        mixed = str(accel.get("mixed_precision", "no")).lower()
        if mixed not in _MIXED:
            report.problem(f"{where}: mixed_precision {mixed!r} is not one of {', '.join(_MIXED)}")
        num = accel.get("num_processes")
        if num is not None and plan.command and plan.command.startswith("rl submit") and str(num) != str(world):
            report.note(f"{where}: num_processes {num} is overridden by `rl submit` ({world} processes)")
        if dist == "DEEPSPEED":
            ds = accel.get("deepspeed_config")
            if not isinstance(ds, dict):
                report.problem(f"{where}: distributed_type DEEPSPEED needs a `deepspeed_config` mapping")
                ds = {}
            info.update(_check_accelerate_ds(report, where, ds, view, world))
            parts.append(f"{plan.accelerate_config}: DeepSpeed {_describe_ds(info)}")
        else:
            if accel.get("deepspeed_config"):
                report.note(f"{where}: has a deepspeed_config but distributed_type is {dist}; it is ignored")
            parts.append(f"{plan.accelerate_config}: {dist}" + (" (DDP)" if dist == "MULTI_GPU" else ""))
    elif world > 1:
        parts.append("accelerate defaults (DDP, no DeepSpeed): no accelerate config given")
    raw = getattr(view, "deepspeed", None)
    if raw:
        where = f"deepspeed {raw if isinstance(raw, str) else '(inline dict)'}"
        obj = _load_ds_json(report, raw, where)
        if obj is not None:
            if info.get("stage") is not None:
                report.problem(f"{where}: the accelerate config {plan.accelerate_config} already configures DeepSpeed; "
                               "keep one of the two")
            info.update(_check_ds_json(report, where, obj, view, world))
            parts.append(f"TrainingArguments.deepspeed: {_describe_ds(info)}")
    if info.get("stage") is not None and importlib.util.find_spec("deepspeed") is None:
        report.note("deepspeed is not installed in this environment; the run needs it "
                    "(pip install 'entropy-rl[deepspeed]')")
    precision = "bf16" if getattr(view, "bf16", False) else "fp16" if getattr(view, "fp16", False) else None
    if precision is None and mixed in ("bf16", "fp16"):
        precision = f"{mixed} (from the accelerate config)"
    elif precision and mixed and mixed not in ("no", precision):
        report.note(f"accelerate config mixed_precision {mixed} differs from the recipe ({precision}); the recipe's wins")
    dtype = getattr(view, "dtype", None)
    parts.append(f"mixed precision {precision or 'off (fp32)'}" + (f", weights loaded as {dtype}" if dtype else ""))
    report.add("distributed", "\n".join(parts))
    return info


def _describe_ds(info: dict) -> str:
    stage = info.get("stage")
    text = f"ZeRO-{stage if stage is not None else '?'}"
    off = [f"{k} -> {v}" for k, v in (("optimizer", info.get("offload_optimizer")),
                                       ("params", info.get("offload_param"))) if v and v != "none"]
    return text + (f", offload {', '.join(off)}" if off else ", no offload")


def _check_accelerate_ds(report: Report, where: str, ds: dict, view, world: int) -> dict:
    info: dict[str, Any] = {"stage": None}
    if ds.get("deepspeed_config_file"):
        file_where = f"{where}: deepspeed_config_file {ds['deepspeed_config_file']}"
        obj = _load_ds_json(report, ds["deepspeed_config_file"], file_where)
        if obj is not None:
            info.update(_check_ds_json(report, file_where, obj, view, world))
        return info
    stage = ds.get("zero_stage")
    try:
        stage = int(stage)
        if stage not in (0, 1, 2, 3):
            raise ValueError
    except (TypeError, ValueError):
        report.problem(f"{where}: deepspeed_config.zero_stage must be 0, 1, 2 or 3, got {stage!r}")
        stage = None
    info["stage"] = stage
    for key, short in (("offload_optimizer_device", "offload_optimizer"), ("offload_param_device", "offload_param")):
        value = str(ds.get(key, "none")).lower()
        if value not in _OFFLOAD_DEVICES:
            report.problem(f"{where}: deepspeed_config.{key} must be one of {', '.join(_OFFLOAD_DEVICES)}, got {value!r}")
        elif value == "nvme" and not ds.get(key.replace("_device", "_nvme_path")):
            report.problem(f"{where}: deepspeed_config.{key} nvme needs {key.replace('_device', '_nvme_path')}")
        info[short] = value
    if info.get("offload_param") not in (None, "none") and stage != 3:
        report.problem(f"{where}: offload_param_device needs zero_stage 3 (got {stage})")
    accum = ds.get("gradient_accumulation_steps")
    if accum not in (None, "auto") and str(accum) != str(getattr(view, "gradient_accumulation_steps", None)):
        report.problem(f"{where}: deepspeed_config.gradient_accumulation_steps is {accum} but the recipe's is "
                       f"{getattr(view, 'gradient_accumulation_steps', None)}; set it to auto")
    clip = ds.get("gradient_clipping")
    if clip not in (None, "auto") and _num(clip) != _num(getattr(view, "max_grad_norm", None)):
        report.problem(f"{where}: deepspeed_config.gradient_clipping {clip} differs from max_grad_norm "
                       f"{getattr(view, 'max_grad_norm', None)}")
    return info


def _load_ds_json(report: Report, raw, where: str) -> dict | None:
    if isinstance(raw, dict):
        return raw
    text = str(raw).strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            report.problem(f"{where}: not valid JSON ({exc})")
            return None
    else:
        path = Path(text)
        if not path.is_file():
            report.problem(f"{where}: file not found")
            return None
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            report.problem(f"{where}: not valid JSON ({_first_line(exc)})")
            return None
    if not isinstance(obj, dict):
        report.problem(f"{where}: a DeepSpeed config must be a JSON object")
        return None
    return obj


def _num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _check_ds_json(report: Report, where: str, obj: dict, view, world: int) -> dict:
    """A DeepSpeed JSON config: ZeRO stage and explicit values that contradict the recipe (HF raises on those)."""
    info: dict[str, Any] = {"stage": 0}
    zero = obj.get("zero_optimization") or {}
    if not isinstance(zero, dict):
        report.problem(f"{where}: zero_optimization must be an object")
        zero = {}
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        report.problem(f"{where}: zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
        stage = None
    info["stage"] = stage
    for key, short in (("offload_optimizer", "offload_optimizer"), ("offload_param", "offload_param")):
        block = zero.get(key) or {}
        device = str(block.get("device", "none")).lower() if isinstance(block, dict) else "none"
        if device not in _OFFLOAD_DEVICES:
            report.problem(f"{where}: zero_optimization.{key}.device must be one of {', '.join(_OFFLOAD_DEVICES)}")
        info[short] = device
    per_device = getattr(view, "per_device_train_batch_size", None)
    accum = getattr(view, "gradient_accumulation_steps", None)
    expected = {
        "train_micro_batch_size_per_gpu": per_device,
        "gradient_accumulation_steps": accum,
        "train_batch_size": (per_device * accum * world) if per_device and accum else None,
        "gradient_clipping": getattr(view, "max_grad_norm", None),
    }
    for key, want in expected.items():
        value = obj.get(key)
        if value in (None, "auto") or want is None:
            continue
        if _num(value) != _num(want):
            report.problem(f"{where}: {key} is {value} but the recipe implies {want} at {world} processes; "
                           "set it to \"auto\"")
    for key in ("bf16", "fp16"):
        block = obj.get(key)
        if isinstance(block, dict) and block.get("enabled") not in (None, "auto"):
            enabled = bool(block.get("enabled"))
            if enabled != bool(getattr(view, key, False)):
                report.problem(f"{where}: {key}.enabled is {block.get('enabled')} but the recipe has {key}: "
                               f"{bool(getattr(view, key, False))}; set it to \"auto\"")
    return info


# ---------------------------------------------------------------------------------------------
# rewards


def _check_rewards(report: Report, view) -> list:
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
            report.problem(f"reward_funcs: {name!r}: {exc.__class__.__name__}: {_first_line(exc)}")
            continue
        funcs.append(func)
        module = getattr(func, "__module__", "?")
        shown.append(f"{name} -> {module}.{getattr(func, '__name__', repr(func))}")
    weights = getattr(view, "reward_weights", None)
    if weights is not None and len(weights) != len(names):
        report.problem(f"reward_weights: {len(weights)} weight(s) for {len(names)} reward function(s)")
    if shown:
        report.add("rewards", ", ".join(shown))
    return funcs


def _columns_needed(funcs) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(required, optional) dataset columns per reward function."""
    from rl.train import _NON_COLUMN_PARAMS, required_columns

    required = required_columns(funcs)
    optional: dict[str, list[str]] = {}
    for func in funcs:
        name = getattr(func, "__name__", repr(func))
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


def _probe_rewards(report: Report, funcs, rows: list[dict]) -> None:
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
            name = getattr(func, "__name__", repr(func))
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
                report.problem(f"reward `{name}` fails on the first {len(rows)} rows: "
                               f"{exc.__class__.__name__}: {_first_line(exc)}")
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


def _check_math_gold(report: Report, funcs, rows: list[dict]) -> None:
    """math_reward: how many of the first rows have a gold answer math-verify can parse."""
    if not any(getattr(f, "__name__", "") == "math_reward" for f in funcs) or not rows:
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


# ---------------------------------------------------------------------------------------------
# models


@dataclasses.dataclass
class ModelInfo:
    name: str
    kind: str  # builtin | local | hub
    config: Any = None
    tokenizer: Any = None
    max_positions: int | None = None
    path: str | None = None  # what `rl train` passes to from_pretrained (resolved builtin dir, local dir, hub id)


def _check_model(report: Report, label: str, name: str | None, view) -> ModelInfo | None:
    from rl.assets import BUILTIN_MODELS, BUILTIN_PREFIX, _looks_local, cache_dir

    if not name:
        report.problem(f"{label}: set `model_name_or_path` (a hub id, a local dir or builtin:smollm2-135m-instruct)")
        return None
    name = str(name).strip()
    revision = getattr(view, "model_revision", None)
    trust = bool(getattr(view, "trust_remote_code", False))
    info = ModelInfo(name=name, kind="hub")
    path: str | None = None
    if name.lower().startswith(BUILTIN_PREFIX):
        key = name[len(BUILTIN_PREFIX):].strip().lower()
        info.kind = "builtin"
        if key not in BUILTIN_MODELS:
            report.problem(f"{label} {name!r}: unknown builtin model; known: "
                           + ", ".join(BUILTIN_PREFIX + k for k in sorted(BUILTIN_MODELS)))
            return None
        built = cache_dir() / "models" / key
        if (built / "entropy-rl-builtin.json").is_file():
            path = str(built)
        else:
            report.add(label, f"{name} (builtin; converted into {built} on first use)")
            report.note(f"{label} {name}: not converted yet; the first run fetches it from PyPI and converts it "
                        "(20-40 s)")
            return info
    elif _looks_local(name) or Path(name).expanduser().exists():
        info.kind = "local"
        path = str(Path(name).expanduser()) if name.startswith("~") else name  # as rl.assets.resolve_model
        if not Path(path).exists():
            report.problem(f"{label} {name!r}: no such directory; give an existing checkpoint directory, a hub id "
                           "like 'org/model', or builtin:smollm2-135m-instruct")
            return None
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json", revision=revision)
        except Exception:  # noqa: BLE001 - an invalid repo id, an unreadable cache
            cached = None
        if not isinstance(cached, str):
            report.add(label, f"{name} (hub id)")
            report.offline.append(f"{label} {name}: hub id not in the local Hugging Face cache; its config, "
                                  "tokenizer and maximum length were not checked (the dry-run never downloads)")
            return info
        path = name
    info.path = path
    info = _load_config_and_tokenizer(report, label, info, path, revision, trust)
    return info


def _load_config_and_tokenizer(report: Report, label: str, info: ModelInfo, path: str, revision, trust) -> ModelInfo:
    from transformers import AutoConfig, AutoTokenizer

    kw = {"local_files_only": True, "trust_remote_code": trust}
    if info.kind == "hub" and revision:
        kw["revision"] = revision
    try:
        info.config = AutoConfig.from_pretrained(path, **kw)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError here
        report.problem(f"{label} {info.name!r}: cannot read its config ({exc.__class__.__name__}: {_first_line(exc)})")
        return info
    text_config = info.config.get_text_config() if hasattr(info.config, "get_text_config") else info.config
    info.max_positions = getattr(text_config, "max_position_embeddings", None)
    try:
        info.tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    except Exception as exc:  # noqa: BLE001
        report.problem(f"{label} {info.name!r}: cannot load its tokenizer ({exc.__class__.__name__}: {_first_line(exc)})")
    kind = {"hub": "hub id, read from the local cache", "local": "local", "builtin": "builtin, converted"}[info.kind]
    arch = ", ".join(getattr(info.config, "architectures", None) or [info.config.model_type])
    pos = f", {info.max_positions:,} positions" if info.max_positions else ""
    report.add(label, f"{info.name} ({kind}; {arch}{pos})")
    return info


# ---------------------------------------------------------------------------------------------
# data


@dataclasses.dataclass
class DataInfo:
    source: str
    columns: list[str]
    num_rows: int | None = None
    rows: list[dict] = dataclasses.field(default_factory=list)
    max_prompt_tokens: int | None = None  # over the peeked rows, or the RPT bound
    prompt_bound_note: str = ""


def _check_data(report: Report, view, funcs, policy: ModelInfo | None) -> DataInfo | None:
    dataset_path = getattr(view, "dataset_path", None)
    corpus = getattr(view, "corpus", None)
    if dataset_path:
        if corpus:
            report.note("both dataset_path and corpus are set: dataset_path is used, corpus is ignored")
        data = _peek_dataset(report, str(dataset_path))
    elif corpus:
        data = _check_corpus(report, view, str(corpus), policy)
    else:
        report.problem("recipe: set `dataset_path` (a prepared dataset) or `corpus` (to build RPT data)")
        return None
    if data is None:
        return None
    where = data.source
    cols = set(data.columns)
    if "prompt" not in cols:
        report.problem(f"{where}: no `prompt` column (columns: {sorted(cols)})")
    required, optional = _columns_needed(funcs)
    lacking = set()
    for name, needed in required.items():
        missing = [c for c in needed if c not in cols]
        if missing:
            lacking.add(name)
            report.problem(f"{where}: reward `{name}` needs column(s) {missing}; the dataset has {sorted(cols)}")
    for name, maybe in optional.items():
        missing = [c for c in maybe if c not in cols and c not in required.get(name, [])]
        if missing:
            report.note(f"reward `{name}` reads optional column(s) {missing}, which the dataset lacks")
    if data.rows:
        _check_prompts(report, data, policy)
        _check_math_gold(report, funcs, data.rows)
        _probe_rewards(report, [f for f in funcs if getattr(f, "__name__", repr(f)) not in lacking], data.rows)
    rows = f"{data.num_rows:,} rows" if data.num_rows is not None else "rows counted when built"
    report.add("data", f"{where}: {rows}; columns {', '.join(data.columns)}")
    return data


def _peek_dataset(report: Report, path: str, label: str = "dataset_path") -> DataInfo | None:
    """Features, row count and first rows of a dataset_path, without reading it whole."""
    p = Path(path).expanduser()
    where = f"{label} {path}"
    if not p.exists():
        report.problem(f"{where}: does not exist (prepare it as the recipe header says; RPT data comes from "
                       "`rl data rpt`)")
        return None
    try:
        if p.is_dir():
            from rl.train import load_dataset_path  # save_to_disk dirs are memory-mapped: cheap

            train, _ = load_dataset_path(str(p))
            rows = [train[i] for i in range(min(PEEK_ROWS, len(train)))]
            return DataInfo(where, list(train.column_names), len(train), rows)
        if p.suffix in (".jsonl", ".json"):
            return _peek_jsonl(report, p, where)
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(str(p))
            rows = []
            for batch in pf.iter_batches(batch_size=PEEK_ROWS):
                rows = batch.to_pylist()
                break
            return DataInfo(where, list(pf.schema_arrow.names), pf.metadata.num_rows, rows)
    except UserError as exc:
        report.problem(str(exc))
        return None
    except Exception as exc:  # noqa: BLE001
        report.problem(f"{where}: cannot be read ({exc.__class__.__name__}: {_first_line(exc)})")
        return None
    report.problem(f"{where}: expected a save_to_disk dir, .jsonl or .parquet file")
    return None


def _peek_jsonl(report: Report, p: Path, where: str) -> DataInfo | None:
    rows: list[dict] = []
    count = 0
    with open(p, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            count += 1
            if len(rows) < PEEK_ROWS:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    if number == 1 and line.lstrip()[:1] == b"[":  # one JSON array, not JSON lines
                        return _peek_json_array(report, p, where)
                    report.problem(f"{where}:{number}: not valid JSON ({exc.msg})")
                    return None
                if not isinstance(row, dict):
                    report.problem(f"{where}:{number}: each line must be a JSON object, got {type(row).__name__}")
                    return None
                rows.append(row)
    if not rows:
        report.problem(f"{where}: no rows")
        return None
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return DataInfo(where, columns, count, rows)


def _peek_json_array(report: Report, p: Path, where: str) -> DataInfo | None:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        report.problem(f"{where}: not valid JSON ({_first_line(exc)})")
        return None
    if not isinstance(data, list) or not data or not all(isinstance(r, dict) for r in data[:PEEK_ROWS]):
        report.problem(f"{where}: expected JSON lines or a JSON array of objects")
        return None
    rows = data[:PEEK_ROWS]
    return DataInfo(where, list(dict.fromkeys(k for row in rows for k in row)), len(data), rows)


def _rpt_build_config(view, policy: ModelInfo | None, chat: str):
    """The RPTBuildConfig `rl train` would build from this recipe (rl/train.py prepare_dataset)."""
    from rl.data.rpt import RPTBuildConfig

    model_path = view.model_name_or_path
    if policy is not None and policy.path:
        model_path = policy.path
    return RPTBuildConfig(
        corpus=view.corpus, proxy_model=view.proxy_model or model_path, entropy=view.rpt_entropy,
        top_k=view.rpt_top_k, min_entropy=view.rpt_min_entropy, max_per_doc=view.rpt_max_per_doc,
        continuation_tokens=view.rpt_continuation_tokens, max_context_tokens=view.rpt_max_context_tokens,
        min_context_tokens=view.rpt_min_context_tokens, window_tokens=view.rpt_window_tokens,
        batch_size=view.rpt_proxy_batch_size, max_documents=view.rpt_max_documents,
        prompt_template=view.rpt_prompt_template, seed=view.rpt_seed, chat=chat)


def _check_corpus(report: Report, view, corpus: str, policy: ModelInfo | None) -> DataInfo | None:
    """RPT data built from `corpus` at the start of the run (or reused from <output_dir>/rpt-data)."""
    from rl.data.corpus import read_corpus
    from rl.data.rpt import saved_build_config

    tok = policy.tokenizer if policy is not None else None
    built = Path(str(view.output_dir)) / "rpt-data"
    saved = saved_build_config(built)
    if saved is not None:
        chat = ("yes" if getattr(tok, "chat_template", None) else "no") if tok is not None else saved.get("chat")
        cfg = _rpt_build_config(view, policy, chat)
        if saved == cfg.fingerprint():
            report.note(f"RPT data already built in {built} with these settings; the run reuses it")
            return _peek_dataset(report, str(built), "RPT data (built from the corpus)")
        changed = sorted(k for k in set(saved) | set(cfg.fingerprint()) if saved.get(k) != cfg.fingerprint().get(k))
        report.note(f"RPT data in {built} was built with other settings ({', '.join(changed)}); the run rebuilds it")
    try:
        _rpt_build_config(view, policy, "auto").validate()
    except UserError as exc:
        report.problem(f"RPT build settings: {exc}")
    proxy = policy
    if view.proxy_model:
        proxy = _check_model(report, "proxy model", str(view.proxy_model), view)
    elif policy is not None:
        report.add("proxy model", "the policy model itself (proxy_model: null)")
    if proxy is not None and proxy.max_positions and view.rpt_window_tokens > proxy.max_positions:
        report.problem(f"rpt_window_tokens {view.rpt_window_tokens} exceeds the proxy model's "
                       f"{proxy.max_positions} positions")
    data = DataInfo(f"corpus {corpus}", list(RPT_COLUMNS), None, [])  # built when the run starts
    template = str(view.rpt_prompt_template).replace("{context}", "")
    if tok is not None:
        overhead = len(tok(template, add_special_tokens=True)["input_ids"]) + _chat_overhead(tok)
        how = "instruction and chat template, tokenized"
    else:
        overhead = math.ceil(len(template) / 3) + 32
        how = "instruction at 3 characters/token + 32 for the chat template, estimated"
    data.max_prompt_tokens = view.rpt_max_context_tokens + overhead
    data.prompt_bound_note = f"rpt_max_context_tokens {view.rpt_max_context_tokens} + {overhead}: {how}"
    try:
        first = next(iter(read_corpus(corpus)), None)
    except UserError as exc:
        report.problem(f"{exc} (prepare it as the recipe header says)")
        return data  # the columns RPT rows will have are known anyway
    except Exception as exc:  # noqa: BLE001
        report.problem(f"corpus {corpus!r}: cannot be read ({exc.__class__.__name__}: {_first_line(exc)})")
        return data
    if first is None:
        report.problem(f"corpus {corpus!r}: no documents")
        return data
    report.add("corpus", f"{corpus}: first document {first.doc_id!r} ({len(first.text):,} characters); RPT data "
               f"is built into {built} when the run starts (proxy entropy {view.rpt_entropy}"
               + (f" top-{view.rpt_top_k}" if view.rpt_entropy == "topk" else "")
               + f" >= {view.rpt_min_entropy} nats, at most {view.rpt_max_per_doc} positions/document)")
    return data


def _ids(encoded) -> list:
    """Token ids from apply_chat_template (a list, or a BatchEncoding in transformers 5)."""
    if hasattr(encoded, "keys") and "input_ids" in encoded:
        encoded = encoded["input_ids"]
    return list(encoded)


def _chat_overhead(tok) -> int:
    if not getattr(tok, "chat_template", None):
        return 0
    try:
        ids = _ids(tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=True,
                                           add_generation_prompt=True))
        return max(len(ids) - 1, 0)
    except Exception:  # noqa: BLE001 - odd templates: no estimate
        return 32


def _check_prompts(report: Report, data: DataInfo, policy: ModelInfo | None) -> None:
    tok = policy.tokenizer if policy is not None else None
    lengths = []
    for i, row in enumerate(data.rows):
        prompt = row.get("prompt")
        is_chat = isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt)
        if not isinstance(prompt, str) and not is_chat:
            report.problem(f"{data.source}: row {i}: `prompt` must be text or a list of chat messages "
                           f"({{role, content}}), got {type(prompt).__name__}")
            return
        if tok is None:  # no tokenizer offline: estimate (3 characters/token, + 32 for a chat template)
            text = prompt if isinstance(prompt, str) else "".join(str(m.get("content", "")) for m in prompt)
            lengths.append(math.ceil(len(text) / 3) + (32 if is_chat else 0))
            continue
        if is_chat:
            if not getattr(tok, "chat_template", None):
                report.note(f"{data.source}: prompts are chat messages but the tokenizer has no chat template; "
                            "the run uses the message text as a plain prompt")
                return
            try:
                lengths.append(len(_ids(tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True))))
            except Exception as exc:  # noqa: BLE001
                report.problem(f"{data.source}: row {i}: the chat template fails on this prompt ({_first_line(exc)})")
                return
        else:
            lengths.append(len(tok(prompt)["input_ids"]))
    if lengths:
        data.max_prompt_tokens = max(lengths)
        data.prompt_bound_note = f"longest of the first {len(lengths)} prompts" + (
            "" if tok is not None else ", estimated at 3 characters/token without the tokenizer")


# ---------------------------------------------------------------------------------------------
# batch, vLLM, lengths


def _check_batch(report: Report, view, world: int, plan: LaunchPlan, data: DataInfo | None) -> None:
    per_device = int(view.per_device_train_batch_size)
    accum = int(view.gradient_accumulation_steps)
    G = int(view.num_generations) if view.num_generations is not None else None
    iters = int(getattr(view, "num_iterations", 1) or 1)
    gen_batch, spg = view.generation_batch_size, view.steps_per_generation
    global_batch = per_device * world
    if G is None or G < 2:
        report.problem(f"num_generations: GRPO needs at least 2 generations per prompt, got {G}")
        return
    if gen_batch is not None and spg is not None and not hasattr(view, "_trl_generation_batch_size"):
        report.problem("generation_batch_size and steps_per_generation can not both be set; keep one")
        return
    if gen_batch is None:
        spg = int(spg if spg is not None else accum)
        gen_batch = global_batch * spg
    else:
        gen_batch = int(gen_batch)
        if gen_batch % global_batch:
            report.problem(f"generation_batch_size {gen_batch} must be a multiple of the global batch "
                           f"(per_device_train_batch_size {per_device} x {world} processes = {global_batch})")
            return
        spg = gen_batch // global_batch
    per_step = global_batch * accum
    lines = [f"{per_device} completion(s)/device x {world} process(es) x {accum} accumulation = "
             f"{per_step} completions per optimizer step"
             + (f" = {per_step // G} prompts x {G}" if per_step % G == 0 else f" ({per_step / G:g} prompts x {G})")]
    if gen_batch % G:
        mult = G // math.gcd(G, per_device * spg)
        report.problem(
            f"batch: the generation batch ({per_device} per device x {world} processes x {spg} steps_per_generation "
            f"= {gen_batch} completions) is not a multiple of num_generations {G}: TRL needs whole prompt groups. "
            f"At {world} processes use e.g. per_device_train_batch_size x steps_per_generation divisible by "
            f"{G // math.gcd(G, world)}; with these batch settings the world size must be a multiple of {mult}")
        report.add("batch", "\n".join(lines))
        return
    prompts = gen_batch // G
    if spg % accum == 0:
        opt_steps = spg * iters // accum
        lines.append(f"generation batch: {gen_batch} completions = {prompts} prompts x {G}, used for {opt_steps} "
                     f"optimizer step(s) (steps_per_generation {spg} / accumulation {accum}"
                     + (f" x num_iterations {iters}" if iters != 1 else "") + ")")
    else:
        opt_steps = spg * iters / accum
        lines.append(f"generation batch: {gen_batch} completions = {prompts} prompts x {G} every {spg} micro-steps")
        report.note(f"steps_per_generation {spg} is not a multiple of gradient_accumulation_steps {accum}: "
                    "generation batches straddle optimizer steps")
    if per_step % G and spg == accum:
        report.note(f"an optimizer step holds {per_step} completions, not whole groups of {G}")
    if getattr(view, "top_entropy_quantile", 1.0) < 1.0:
        scope = getattr(view, "entropy_mask_scope", "step")
        population = (f"each generation batch ({gen_batch} completions)" if scope == "step"
                      else f"each micro-batch ({per_device} completions/device, gathered over {world} processes)")
        lines.append(f"forking mask: top {view.top_entropy_quantile:g} of completion tokens by entropy over "
                     f"{population}; loss normalised over {getattr(view, 'entropy_mask_normalize', 'kept')} tokens")
    max_steps = int(getattr(view, "max_steps", -1) or -1)
    rows = data.num_rows if data is not None else None
    if rows is not None and rows < prompts:
        report.problem(f"{data.source}: {rows} rows, fewer than the {prompts} prompts of one generation batch; "
                       "TRL's sampler would yield no batch")
    if max_steps > 0:
        batches = max_steps / opt_steps
        consumed = batches * prompts
        text = f"max_steps {max_steps:,} optimizer steps = {batches:,.4g} generation batches = {consumed:,.0f} prompts"
        if rows:
            text += f" ({consumed / rows:.3g} passes over {rows:,} rows)"
        lines.append(text)
    elif rows:
        epochs = float(getattr(view, "num_train_epochs", 1) or 1)
        per_epoch = rows // prompts  # TRL's sampler drops an incomplete last generation batch
        lines.append(f"{epochs:g} epoch(s) of {per_epoch:,} generation batch(es) over {rows:,} rows = about "
                     f"{epochs * per_epoch * opt_steps:,.0f} optimizer steps")
    if getattr(view, "do_eval", False) or _value(getattr(view, "eval_strategy", "no")) != "no":
        g_eval = int(getattr(view, "num_generations_eval", None) or G)
        eval_global = int(view.per_device_eval_batch_size) * world
        if eval_global % g_eval:
            report.problem(f"eval batch: per_device_eval_batch_size {view.per_device_eval_batch_size} x {world} "
                           f"processes = {eval_global} is not a multiple of {g_eval} generations")
    cycle = math.lcm(spg * iters, accum) // accum
    save_steps = getattr(view, "save_steps", None)
    if _value(getattr(view, "save_strategy", "no")) == "steps" and save_steps and float(save_steps) >= 1:
        if int(save_steps) % cycle:
            report.problem(f"save_steps: {save_steps} is not a multiple of the generation cycle ({cycle} optimizer "
                           "steps); `rl train` refuses it because a resume is exact only at those boundaries")
    trl_gb = getattr(view, "_trl_generation_batch_size", None)
    if trl_gb is not None and trl_gb != gen_batch:  # our arithmetic and TRL's must agree
        report.note(f"TRL derived generation_batch_size {trl_gb}, the dry-run {gen_batch}")
    report.add("batch", "\n".join(lines))


def _check_vllm(report: Report, view, world: int, plan: LaunchPlan, ds_info: dict) -> None:
    if not getattr(view, "use_vllm", False):
        if getattr(view, "vllm_mode", "colocate") == "server" or plan.vllm_server_node:
            report.note("vLLM settings are present but use_vllm is false: generation uses transformers")
        report.add("generation", f"transformers generate, temperature {view.temperature:g}, "
                   f"max_completion_length {view.max_completion_length:,}")
        return
    mode = view.vllm_mode
    if mode not in ("server", "colocate"):
        report.problem(f"vllm_mode: must be `server` or `colocate`, got {mode!r}")
        return
    if importlib.util.find_spec("vllm") is None:
        report.note("vllm is not installed in this environment; the run needs it where it trains (pip install vllm)")
    text = f"vLLM {mode}, temperature {view.temperature:g}, max_completion_length {view.max_completion_length:,}"
    if mode == "server":
        base = getattr(view, "vllm_server_base_url", None)
        host = getattr(view, "vllm_server_host", "0.0.0.0")
        if not base and host in (None, "", "0.0.0.0") and not plan.vllm_server_node:
            report.problem("vllm_mode server: set vllm_server_host (or vllm_server_base_url) to the node running "
                           "`trl vllm-serve`, or launch with `rl submit --vllm-server-node`")
        where = base or ("the first node of the job (rl submit --vllm-server-node)" if plan.vllm_server_node
                         else f"{host}:{view.vllm_server_port}")
        text += f", server at {where}"
    else:
        tp = int(view.vllm_tensor_parallel_size)
        if tp < 1 or world % tp:
            report.problem(f"vllm_tensor_parallel_size {tp} must divide the {world} training processes "
                           "(colocated vLLM groups consecutive ranks)")
        elif plan.gpus_per_node and tp > plan.gpus_per_node:
            report.problem(f"vllm_tensor_parallel_size {tp} is larger than the {plan.gpus_per_node} GPUs of a node")
        mem = float(view.vllm_gpu_memory_utilization)
        if not 0 < mem <= 1:
            report.problem(f"vllm_gpu_memory_utilization must be in (0, 1], got {mem}")
        text += (f", tensor parallel {tp} ({max(world // max(tp, 1), 1)} engine(s)), GPU memory {mem:g}"
                 + (", sleep mode" if getattr(view, "vllm_enable_sleep_mode", False) else ""))
        if ds_info.get("stage") == 3 and not getattr(view, "ds3_gather_for_generation", True):
            report.problem("ds3_gather_for_generation false is not compatible with vLLM generation (TRL)")
    if getattr(view, "vllm_max_model_length", None):
        text += f", max model length {view.vllm_max_model_length:,}"
    report.add("generation", text)


def _check_lengths(report: Report, view, policy: ModelInfo | None, data: DataInfo | None) -> None:
    completion = int(view.max_completion_length)
    prompt = data.max_prompt_tokens if data is not None else None
    vllm_len = getattr(view, "vllm_max_model_length", None) if getattr(view, "use_vllm", False) else None
    positions = policy.max_positions if policy is not None else None
    parts = [f"completion <= {completion:,}"]
    if prompt is not None:
        parts.append(f"prompt <= {prompt:,} tokens ({data.prompt_bound_note})")
    if vllm_len:
        parts.append(f"vLLM context {vllm_len:,}")
    if positions:
        parts.append(f"model positions {positions:,}")
    report.add("lengths", "; ".join(parts))
    total = (prompt or 0) + completion
    if positions and total > positions:
        report.problem(f"lengths: prompt ({prompt or 0}) + max_completion_length ({completion}) = {total} exceeds the "
                       f"model's {positions} positions")
    if vllm_len:
        if positions and vllm_len > positions:
            report.problem(f"vllm_max_model_length {vllm_len} exceeds the model's {positions} positions")
        if completion >= vllm_len:
            report.problem(f"vllm_max_model_length {vllm_len} leaves no room for prompts next to "
                           f"max_completion_length {completion}")
        elif prompt is not None and total > vllm_len:
            report.problem(f"lengths: prompt ({prompt}) + max_completion_length ({completion}) = {total} exceeds "
                           f"vllm_max_model_length {vllm_len}")
    elif getattr(view, "use_vllm", False):
        report.note("vllm_max_model_length is unset: vLLM reserves the model's full context; set it to the longest "
                    "prompt plus max_completion_length")


def _check_output(report: Report, view) -> None:
    out = Path(str(view.output_dir))
    text = str(out)
    if out.is_dir():
        from transformers.trainer_utils import get_last_checkpoint

        try:
            last = get_last_checkpoint(str(out))
        except Exception:  # noqa: BLE001
            last = None
        if last:
            text += f" (holds {Path(last).name}; --resume_from_checkpoint auto continues from it)"
    if _value(view.save_strategy) == "steps":
        text += f"; checkpoint every {view.save_steps} steps"
    report.add("output", text)


# ---------------------------------------------------------------------------------------------
# entry points


def main(argv: list[str] | None = None) -> int:
    """Print the dry-run report of `--config RECIPE [overrides] [dry-run flags]`; 0 if no problems, else 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__.split("\n\n")[0] + "\n\nflags: --config R [--nodes N --gpus-per-node G [--vllm-server-node]] "
              "[--num_processes N] [--accelerate_config PATH] [--<recipe field> VALUE ...]\n\n" + DRY_RUN_EXAMPLES)
        return 0
    report = dry_run(argv)
    sys.stdout.write(report.format())
    sys.stdout.flush()
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
