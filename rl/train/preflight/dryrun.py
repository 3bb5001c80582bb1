"""The dry run itself: parse the recipe for the run's machines, then assemble the report section by
section (`_dry_run` is where the sections are put in order) and run the preflight's checks
(checks.py, the ones `rl train` stops at) on the same `RunPlan`."""

from __future__ import annotations

import os
from pathlib import Path

from rl.train.preflight.batch import check_batch, check_output
from rl.train.preflight.checks import problems
from rl.train.preflight.data import check_data
from rl.train.preflight.distributed import check_deepspeed, read_accelerate_config
from rl.train.preflight.generation import check_lengths, check_vllm
from rl.train.preflight.models import check_model
from rl.train.preflight.node_layout import node_layout
from rl.train.preflight.parse import (ArgError, check_fields, raw_field, raw_namespace, restored_environ, script_has_field,
                             target_view)
from rl.train.preflight.plan import RunPlan
from rl.train.preflight.report import Report
from rl.train.preflight.reward_checks import check_rewards
from rl.train.preflight.sampling_cost import check_dynamic_sampling
from rl.train.preflight.signal import check_format, check_signal
from rl.train.preflight.world import (flags_parser, plan_from_launch, resolve_plan, summarise_launch,
                             world_from_accelerate_config)
from rl.errors import UserError
from rl.runtime.strict_yaml import load_recipe_file


def dry_run(argv: list[str]) -> Report:
    """Check the recipe given by `--config` (plus overrides and the dry-run's own flags); returns the report."""
    with restored_environ():
        return _dry_run(list(argv))


def _dry_run(argv: list[str]) -> Report:
    try:
        opts, overrides = flags_parser().parse_known_args(argv)
    except ArgError as exc:
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

    # 1. fields of the file, each checked on its own so that every bad one is reported
    clean, bad_keys = check_fields(path, data, report)

    # 2. the launch plan
    header = plan_from_launch(clean.get("launch"), str(path), report)
    recipe_accel = None
    if script_has_field("accelerate_config"):
        recipe_accel = raw_field(clean, overrides, "accelerate_config")
    plan = resolve_plan(opts, header, recipe_accel, report)
    if plan.accelerate_config and script_has_field("accelerate_config") and "--accelerate_config" not in overrides:
        overrides = overrides + ["--accelerate_config", plan.accelerate_config]
    all_overrides = plan.overrides + overrides
    if plan.vllm_server_node:  # what `rl submit --vllm-server-node` adds to the trainer's arguments
        all_overrides += ["--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_host", "<vLLM node>"]

    # 3. raw values (no dataclass validation) and the full TRL parse for the target machines
    ns = raw_namespace(clean, all_overrides, report)
    accel = read_accelerate_config(plan, report) if plan.accelerate_config else None
    if plan.world_size == 0:  # `accelerate launch --config_file X` without --num_processes
        world_from_accelerate_config(plan, accel, report)
    world = plan.world_size
    view, trl_batch_error = target_view(path, clean, bad_keys, all_overrides, ns, world, report)
    if view is None:
        return report
    env = clean.get("env") if isinstance(clean.get("env"), dict) else {}
    if env:
        os.environ.update({k: str(v) for k, v in env.items()})

    # 4. the checks, in the order of the report
    summarise_launch(report, plan, world)
    ds_info = check_deepspeed(report, view, plan, accel, world)
    reward_funcs = check_rewards(report, view)
    policy = check_model(report, "model", view.model_name_or_path, view)
    data = check_data(report, view, reward_funcs, policy)
    run_plan = RunPlan(recipe=view, world_size=world, zero_stage=ds_info.get("stage"), rewards=tuple(reward_funcs),
                       resolved=hasattr(view, "_trl_generation_batch_size"))
    check_batch(report, view, run_plan, data)
    found = problems(run_plan)  # the checks `rl train` stops at (rl/train/preflight/checks.py)
    for problem in found:
        report.problem(problem)
    if trl_batch_error and not found:
        report.problem(trl_batch_error)
    check_vllm(report, view, world, plan, ds_info)
    # which node serves / trains, ranks per node; the ZeRO-3 + LoRA weight-sync warning
    node_layout(plan, world, view, ds_info.get("stage"), lambda f: raw_field(clean, all_overrides, f)).apply(report)
    check_lengths(report, view, policy, data)
    check_output(report, view)
    check_format(report, view, reward_funcs)
    signal = None
    if not report.problems:  # the one check that loads weights: only for a recipe that would start
        signal = check_signal(report, view, reward_funcs, policy, data.rows if data is not None else None)
    check_dynamic_sampling(report, view, signal)  # its extra generation cost, from the signal check's share
    return report
