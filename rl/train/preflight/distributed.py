"""Distributed settings: the accelerate config and DeepSpeed.

DeepSpeed comes from the accelerate YAML (its inline `deepspeed_config`, or the JSON it names)
and/or TRL's own `deepspeed` field (a JSON path or a dict): ZeRO stage, offload devices, and
explicit values that contradict the recipe (micro-batch, accumulation, train batch, bf16/fp16).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from rl.train.preflight.report import Report, parsed_or_problem
from rl.train.preflight.world import LaunchPlan
from rl.train.preflight.rules import read_deepspeed_config

_DISTRIBUTED_TYPES = ("NO", "MULTI_GPU", "MULTI_CPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU", "MULTI_MUSA",
                      "MULTI_HPU", "DEEPSPEED", "FSDP", "XLA", "MEGATRON_LM")
_OFFLOAD_DEVICES = ("none", "cpu", "nvme")
_MIXED = ("no", "fp16", "bf16", "fp8")


def read_accelerate_config(plan: LaunchPlan, report: Report) -> dict | None:
    """The accelerate config file as a dict (YAML or JSON), or None after reporting why not."""
    import yaml

    where = f"accelerate config {plan.accelerate_config}"
    path = Path(plan.accelerate_config)
    if not path.is_file():
        report.problem(f"{where} ({plan.accelerate_source}): file not found")
        return None
    return parsed_or_problem(report, where,
                             lambda: yaml.safe_load(path.read_text(encoding="utf-8")),  # JSON is YAML too
                             yaml.YAMLError, "YAML/JSON", lambda data: isinstance(data, dict),
                             "must be a mapping of accelerate settings")


def check_deepspeed(report: Report, view, plan: LaunchPlan, accel: dict | None, world: int) -> dict:
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
    """A DeepSpeed config given inline (a dict or a JSON string) or as a JSON file; None after reporting why
    not (rl.train.preflight.read_deepspeed_config: the same reader and words as `rl train`)."""
    obj, problem = read_deepspeed_config(where, raw, field=None)
    if problem:
        report.problem(problem)
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
    for key in ("offload_optimizer", "offload_param"):
        block = zero.get(key) or {}
        device = str(block.get("device", "none")).lower() if isinstance(block, dict) else "none"
        if device not in _OFFLOAD_DEVICES:
            report.problem(f"{where}: zero_optimization.{key}.device must be one of {', '.join(_OFFLOAD_DEVICES)}")
        info[key] = device
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
