"""The launch plan: world size (training processes) and accelerate config of the run.

From, in this order: the dry-run's own flags (`--num_processes N`, `--nodes N --gpus-per-node G`
[`--vllm-server-node`], `--accelerate_config PATH`), a recipe field `accelerate_config`, the recipe's
`launch:` section (rl submit's settings: nodes, gpus_per_node, accelerate_config, ...), else 1.
"""

from __future__ import annotations

import argparse
import dataclasses

from rl.train.preflight.parse import ArgError, raise_error
from rl.errors import UserError
from rl.train.preflight.report import Report
from rl.train.launch_section import add_submit_arguments, apply_launch_section, check_launch_section


@dataclasses.dataclass
class LaunchPlan:
    world_size: int = 1
    source: str = "single process (no launch: section, no --nodes/--num_processes)"
    nodes: int | None = None  # training nodes
    job_nodes: int | None = None  # nodes of the job (one more than `nodes` with a vLLM server node)
    gpus_per_node: int | None = None  # training processes per node
    accelerate_config: str | None = None
    accelerate_source: str | None = None
    vllm_server_node: bool = False
    cpu: bool = False
    command: str | None = None  # kept for the report; a launch: section has no command line
    overrides: list[str] = dataclasses.field(default_factory=list)


def submit_parser() -> argparse.ArgumentParser:
    """`rl submit`'s parser (its flags from rl.train.launch_section), raising ArgError instead of exiting."""
    parser = add_submit_arguments(argparse.ArgumentParser(prog="rl submit", add_help=False))
    parser.error = raise_error  # type: ignore[method-assign]
    return parser


def plan_from_launch(section, where: str, report: Report) -> LaunchPlan | None:
    """The launch plan of the recipe's `launch:` section (rl submit's settings, as `rl submit` would
    apply them); None without one. A bad section was already reported by the field check."""
    if not isinstance(section, dict) or not section:
        return None

    try:
        args = apply_launch_section(submit_parser().parse_args(["--config", where]),
                                    check_launch_section(where, section))
    except (ArgError, UserError):
        return None
    train_nodes = args.nodes - 1 if args.vllm_server_node else args.nodes
    per_node = args.procs_per_node or (2 if args.cpu else args.gpus_per_node)
    if not per_node or train_nodes < 1:
        report.problem(f"{where}: launch: needs gpus_per_node (or cpu: true) and nodes >= 1 (>= 2 with "
                       "vllm_server_node)")
        return None
    return LaunchPlan(world_size=train_nodes * per_node, nodes=train_nodes, job_nodes=args.nodes,
                      gpus_per_node=per_node, accelerate_config=args.accelerate_config,
                      vllm_server_node=args.vllm_server_node, cpu=args.cpu,
                      source="recipe launch: " + _describe_nodes(train_nodes, per_node, args.cpu,
                                                                args.vllm_server_node))


def _describe_nodes(nodes: int, per_node: int, cpu: bool, server: bool) -> str:
    unit = "CPU processes" if cpu else "GPUs"
    text = f"{nodes} node{'s' if nodes != 1 else ''} x {per_node} {unit}"
    return text + (" (+1 node serving vLLM)" if server else "")


def flags_parser() -> argparse.ArgumentParser:
    """The dry-run's own flags (the rest of the command line are recipe overrides)."""
    p = argparse.ArgumentParser(prog="rl train --dry-run", add_help=False, allow_abbrev=False)
    p.add_argument("--config")
    p.add_argument("--dry-run", "--dry_run", action="store_true")
    p.add_argument("--nodes", type=int)
    p.add_argument("--gpus-per-node", "--gpus_per_node", type=int, dest="gpus_per_node")
    p.add_argument("--num_processes", "--num-processes", type=int, dest="num_processes")
    p.add_argument("--accelerate_config", "--accelerate-config", dest="accelerate_config")
    p.add_argument("--vllm-server-node", "--vllm_server_node", action="store_true", dest="vllm_server_node")
    p.error = raise_error  # type: ignore[method-assign]
    return p


def resolve_plan(opts, header: LaunchPlan | None, recipe_accelerate: str | None, report: Report) -> LaunchPlan:
    """Merge the flags, the recipe field and the recipe's launch: section into one plan (flags win)."""
    plan = LaunchPlan()
    if header is not None:
        plan = dataclasses.replace(header)
        if header.accelerate_config:
            plan.accelerate_source = "recipe launch.accelerate_config"
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
    sized = header is not None or opts.num_processes is not None or opts.nodes is not None \
        or opts.gpus_per_node is not None or opts.vllm_server_node
    if not sized and plan.accelerate_config:
        plan.world_size = 0  # `accelerate launch --config_file X`: X's num_processes (world_from_accelerate_config)
    return plan


def world_from_accelerate_config(plan: LaunchPlan, accel: dict | None, report: Report) -> None:
    """`accelerate launch --config_file X` without --num_processes: the world size is X's num_processes."""
    try:
        plan.world_size = max(int((accel or {}).get("num_processes") or 1), 1)
    except (TypeError, ValueError):
        report.problem(f"accelerate config {plan.accelerate_config}: num_processes "
                       f"{(accel or {}).get('num_processes')!r} is not a number")
        plan.world_size = 1
    plan.source = f"accelerate config {plan.accelerate_config}: num_processes {plan.world_size}"


def summarise_launch(report: Report, plan: LaunchPlan, world: int) -> None:
    if plan.command:
        report.add("launch", plan.command)
    report.add("world size", f"{world} training process{'es' if world != 1 else ''} ({plan.source})")
