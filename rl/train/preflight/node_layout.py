"""The dry run's node layout: which node serves vLLM, which train, ranks per node, the world size the batch
arithmetic assumes; and the warning where TRL 1.16 gathers the whole model for every weight sync.

Why: with `rl submit --vllm-server-node` the job's first node runs `trl vllm-serve` and holds no training
rank, so "4 nodes x 8 GPUs" trains on 24 processes, not 32; a user reading the batch arithmetic should
see which 24. Pure: `node_layout` takes the launch plan (duck-typed: `nodes`, `job_nodes`,
`gpus_per_node`, `vllm_server_node`, `cpu`), the world size, the parsed recipe view, the ZeRO stage and a
getter of raw recipe values, and returns the report's lines; `Layout.apply(report)` adds them to the
dry-run report (`add`, `note`, `problem`); rl/train/preflight/dryrun.py calls it after the vLLM check.

The weight-sync warning, checked in TRL 1.16's source: `GRPOTrainer` calls `VLLMGeneration.sync_weights`
(trl/generation/vllm_generation.py) whenever the optimizer step changed (`_last_loaded_step`); for a PEFT
model `_iter_named_params` runs `gather_params(list(model.parameters()))` (DeepSpeed's GatheredParameters over
ALL parameters at once) around `merge_adapter()` / `unmerge_adapter()`, on every rank. Without PEFT it gathers
one parameter at a time. So under ZeRO-3 + LoRA every GPU holds the full unsharded model at each sync.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from rl.errors import UserError
from rl.train.vllm_serve import serve_settings

ZERO3_LORA_SYNC = ("ZeRO-3 + LoRA + vLLM: TRL 1.16 gathers the WHOLE model on every rank at each weight sync (once per "
                   "optimizer step: trl/generation/vllm_generation.py VLLMGeneration._iter_named_params gathers all "
                   "parameters at once to merge the LoRA adapter), so every GPU must hold the full unsharded model "
                   "next to its ZeRO-3 shards for that moment; size GPU memory for it, or use ZeRO-2 if the model fits")


@dataclasses.dataclass
class Layout:
    lines: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    def apply(self, report) -> None:
        """Add to a dry-run report: a `node layout` summary entry, its notes and problems."""
        report.add("node layout", "\n".join(self.lines))
        for text in self.notes:
            report.note(text)
        for text in self.problems:
            report.problem(text)


def _ranks(start: int, count: int) -> str:
    return f"rank {start}" if count == 1 else f"ranks {start}-{start + count - 1}"


def _training_nodes(first: int, nodes: int, per_node: int, unit: str) -> list[str]:
    """One line per training node (first two and last when there are more than four)."""
    shown = list(range(nodes)) if nodes <= 4 else [0, 1, nodes - 1]
    lines = []
    for i in shown:
        if nodes > 4 and i == nodes - 1:
            lines.append(f"  ... ({nodes - 3} more alike)")
        lines.append(f"node {first + i}: trains, {per_node} {unit} ({_ranks(i * per_node, per_node)})")
    return lines


def _server_line(view, value: Callable[[str], object], gpus: int | None, layout: Layout) -> str:
    try:
        s = serve_settings(value, model=getattr(view, "model_name_or_path", None) or value("model_name_or_path"),
                           gpus=gpus)
    except UserError as exc:
        layout.problems.append(str(exc))
        return "node 0: vLLM server (`trl vllm-serve`; its settings have a problem, below)"
    parts = [f"tensor parallel {s.engine_tp}" if s.engine_tp else "tensor parallel: vllm-serve's default",
             f"data parallel {s.data_parallel_size or 1}", f"port {s.served_port}"]
    if s.gpu_memory_utilization is not None:
        parts.append(f"GPU memory {s.gpu_memory_utilization:g}")
    if s.max_model_len is not None:
        parts.append(f"max model length {s.max_model_len:,}")
    return (f"node 0: vLLM server (`trl vllm-serve`: {', '.join(parts)}); no training rank; the job waits up to "
            f"{s.timeout:g} s for its /health")


def node_layout(plan, world: int, view, zero_stage: int | None, value: Callable[[str], object]) -> Layout:
    """The report's node layout lines, notes and problems (see the module docstring)."""
    layout = Layout()
    unit = "CPU processes" if getattr(plan, "cpu", False) else "GPUs"
    use_vllm = bool(getattr(view, "use_vllm", False))
    mode = getattr(view, "vllm_mode", "colocate") if use_vllm else None
    nodes, per_node = getattr(plan, "nodes", None), getattr(plan, "gpus_per_node", None)
    server_node = bool(getattr(plan, "vllm_server_node", False))
    if nodes and per_node:
        if server_node:
            layout.lines.append(_server_line(view, value, None if getattr(plan, "cpu", False) else per_node, layout))
        layout.lines.extend(_training_nodes(1 if server_node else 0, nodes, per_node, unit))
        job = nodes + (1 if server_node else 0)
        layout.lines.append(f"world size {world}: the batch arithmetic assumes {world} training processes "
                            f"({nodes} training node{'s' if nodes != 1 else ''} x {per_node} of the job's {job}"
                            + ("; the server node's GPUs are not in it)" if server_node else ")"))
    else:
        layout.lines.append(f"world size {world}: the batch arithmetic assumes {world} training process"
                            f"{'es' if world != 1 else ''}; no node split given (rl submit's --nodes/--gpus-per-node "
                            "or the recipe's launch: section say which node runs which ranks)")
    if mode == "server" and not server_node:
        base = getattr(view, "vllm_server_base_url", None)
        where = base or f"{getattr(view, 'vllm_server_host', '?')}:{getattr(view, 'vllm_server_port', '?')}"
        layout.lines.append(f"vLLM server: outside this job, at {where}")
    elif mode == "colocate":
        layout.lines.append(f"vLLM: colocated on the training GPUs (tensor parallel "
                            f"{getattr(view, 'vllm_tensor_parallel_size', 1)})")
    if use_vllm and zero_stage == 3 and getattr(view, "use_peft", False):
        layout.notes.append(ZERO3_LORA_SYNC)
    return layout
