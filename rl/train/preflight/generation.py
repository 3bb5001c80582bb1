"""Generation and lengths: vLLM (server mode needs a host or `rl submit --vllm-server-node`;
colocated tensor parallelism fits the processes and one node), and the prompt bound plus
`max_completion_length` against the model's positions and `vllm_max_model_length`.
"""

from __future__ import annotations

import importlib.util

from rl.train.preflight.dataset_peek import DataInfo
from rl.train.preflight.models import ModelInfo
from rl.train.preflight.report import Report
from rl.train.preflight.world import LaunchPlan


def check_vllm(report: Report, view, world: int, plan: LaunchPlan, ds_info: dict) -> None:
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


def check_lengths(report: Report, view, policy: ModelInfo | None, data: DataInfo | None) -> None:
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
