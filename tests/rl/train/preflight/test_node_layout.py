"""rl/train/preflight/node_layout.py: the dry run's node layout lines and the ZeRO-3 + LoRA weight-sync warning (pure)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

from rl.train.preflight.node_layout import ZERO3_LORA_SYNC, node_layout


def plan(nodes=None, per_node=None, server=False, cpu=False):
    return SimpleNamespace(nodes=nodes, gpus_per_node=per_node, vllm_server_node=server, cpu=cpu,
                           job_nodes=None if nodes is None else nodes + server)


def view(**kw):
    base = dict(use_vllm=False, vllm_mode="colocate", use_peft=False, model_name_or_path="Qwen/Qwen3-0.6B",
                vllm_tensor_parallel_size=1, vllm_server_host="0.0.0.0", vllm_server_port=8000,
                vllm_server_base_url=None)
    return SimpleNamespace(**{**base, **kw})


def recipe(**values):
    return {"model_name_or_path": "Qwen/Qwen3-0.6B", **values}.get


def test_server_node_then_training_nodes_with_their_ranks():
    layout = node_layout(plan(3, 8, server=True), 24, view(use_vllm=True, vllm_mode="server"), None,
                         recipe(vllm_gpu_memory_utilization=0.85, vllm_server_timeout=600))
    assert layout.lines[0].startswith("node 0: vLLM server (`trl vllm-serve`: tensor parallel 8, data parallel 1, "
                                      "port 8000, GPU memory 0.85); no training rank")
    assert "600 s for its /health" in layout.lines[0]
    assert layout.lines[1:4] == ["node 1: trains, 8 GPUs (ranks 0-7)", "node 2: trains, 8 GPUs (ranks 8-15)",
                                 "node 3: trains, 8 GPUs (ranks 16-23)"]
    assert layout.lines[4].startswith("world size 24: the batch arithmetic assumes 24 training processes "
                                      "(3 training nodes x 8 of the job's 4; the server node's GPUs are not in it)")
    assert not layout.notes and not layout.problems


def test_many_nodes_are_elided_and_plain_nodes_start_at_zero():
    layout = node_layout(plan(16, 4), 64, view(), None, recipe())
    assert layout.lines[:2] == ["node 0: trains, 4 GPUs (ranks 0-3)", "node 1: trains, 4 GPUs (ranks 4-7)"]
    assert layout.lines[2:4] == ["  ... (13 more alike)", "node 15: trains, 4 GPUs (ranks 60-63)"]
    assert "world size 64" in layout.lines[4]


def test_no_node_split_and_external_or_colocated_vllm():
    layout = node_layout(plan(), 2, view(use_vllm=True, vllm_mode="server", vllm_server_host="gen-1"), None, recipe())
    assert layout.lines == ["world size 2: the batch arithmetic assumes 2 training processes; no node split given "
                            "(rl submit's --nodes/--gpus-per-node or the recipe's launch: section say which node runs "
                            "which ranks)", "vLLM server: outside this job, at gen-1:8000"]
    colocated = node_layout(plan(1, 4, cpu=True), 4, view(use_vllm=True, vllm_tensor_parallel_size=2), None, recipe())
    assert colocated.lines == ["node 0: trains, 4 CPU processes (ranks 0-3)",
                               "world size 4: the batch arithmetic assumes 4 training processes (1 training node x 4 "
                               "of the job's 1)", "vLLM: colocated on the training GPUs (tensor parallel 2)"]


def test_server_settings_that_do_not_fit_are_a_problem():
    layout = node_layout(plan(2, 4, server=True), 8, view(use_vllm=True, vllm_mode="server"), None,
                         recipe(vllm_tensor_parallel_size=4, vllm_server_data_parallel_size=2))
    assert layout.problems == ["vLLM server node: tensor parallel 4 x data parallel 2 = 8 GPUs, but the node has 4; "
                               "lower vllm_tensor_parallel_size or vllm_server_data_parallel_size"]


def test_zero3_lora_vllm_warns_about_the_whole_model_gather():
    def notes(**kw):
        stage = kw.pop("stage", 3)
        return node_layout(plan(2, 8, server=True), 8, view(**{"use_vllm": True, "vllm_mode": "server",
                                                                "use_peft": True, **kw}), stage, recipe()).notes

    assert notes() == [ZERO3_LORA_SYNC]
    assert notes(vllm_mode="colocate") == [ZERO3_LORA_SYNC]
    assert notes(stage=2) == [] and notes(use_peft=False) == [] and notes(use_vllm=False) == []


def test_the_warning_matches_trls_weight_sync():
    """The warning quotes TRL 1.16's code: PEFT weights are gathered all at once around merge_adapter."""
    from trl.generation.vllm_generation import VLLMGeneration

    src = inspect.getsource(VLLMGeneration._iter_named_params)
    peft = src[src.index("if is_peft_model(model):"):src.index("else:")]
    assert "gather_params(list(model.parameters()))" in peft and "merge_adapter()" in peft
    assert "_iter_named_params" in inspect.getsource(VLLMGeneration.sync_weights)


def test_apply_adds_to_a_report():
    calls = []
    report = SimpleNamespace(add=lambda *a: calls.append(("add", *a)), note=lambda t: calls.append(("note", t)),
                             problem=lambda t: calls.append(("problem", t)))
    node_layout(plan(2, 8, server=True), 16, view(use_vllm=True, vllm_mode="server", use_peft=True), 3,
                recipe()).apply(report)
    assert calls[0][:2] == ("add", "node layout") and calls[0][2].count("\n") == 3  # server, 2 nodes, world
    assert calls[1] == ("note", ZERO3_LORA_SYNC)


def test_dry_run_report_shows_the_layout(tmp_path):
    """Wired into `rl train --dry-run`: the report's `node layout` entry and the warning note."""
    import json

    from rl.train.preflight.dryrun import dry_run

    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?", "solution": str(i + 1)}) + "\n"
                            for i in range(64)))
    path = tmp_path / "r.yaml"
    path.write_text(f"model_name_or_path: Qwen/Qwen3-0.6B\ndataset_path: {data}\noutput_dir: {tmp_path / 'out'}\n"
                    "reward_funcs: [math]\nuse_vllm: true\nuse_peft: true\nvllm_server_data_parallel_size: 2\n"
                    "num_generations: 4\nper_device_train_batch_size: 4\n")
    text = dry_run(["--config", str(path), "--nodes", "3", "--gpus-per-node", "2", "--vllm-server-node"]).format()
    assert "node layout  node 0: vLLM server (`trl vllm-serve`: tensor parallel 1, data parallel 2, port 8000)" in text
    assert "node 2: trains, 2 GPUs (ranks 2-3)" in text and "world size 4: the batch arithmetic assumes 4" in text
