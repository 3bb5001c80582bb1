"""recipes/accelerate/: DDP, ZeRO-2 and ZeRO-3 train exactly like one process (2 CPU ranks, gloo).

Fast tests: the accelerate configs parse, leave the layout (process count, machine rank, main
address and port) to the launcher's flags, and map to the intended DeepSpeed settings and
multi-node torchrun launch; `rl.runtime.cpu_distributed.apply_cpu_workarounds` is a no-op where it
should be.

Slow tests: real `accelerate launch --config_file recipes/accelerate/<x>.yaml --num_processes 2`
runs of `rl train` (2 GRPO optimizer steps, tiny model, RPT data built once here) compared with
one process that has the same global batch (gradient_accumulation_steps=2). Why the comparison
can only pass when the layout is right (see tests/rl/train/distributed_worker.py):

* Completions are a function of (prompt, index within the prompt's group), not of the layout or
  the RNG (the model still samples, so ZeRO-3's gathering for generation runs, but the sampled
  ids are replaced). Rewards (RPT + completion length) differ within groups, so advantages and
  gradients are non-zero: a missing gradient sync or a wrong loss scale changes the update.
* Rewards must be identical (same completions); loss and grad norm agree to float rounding;
  the saved final models (from_pretrained-loadable; ZeRO-3 gathered via zero3_save_16bit_model)
  agree to PARAM_ATOL. The largest update is 2e-3 (2 AdamW steps at lr 1e-3).
  Measured on 2 CPU cores, max |param diff| vs one process: DDP 1.3e-7, ZeRO-2 1.3e-7, ZeRO-3
  2.5e-7, ZeRO-3 + forking mask 6.9e-7; ranks training alone: 3.9e-3.
* Tolerance: AdamW divides each gradient element by its magnitude + eps. Where a gradient is ~0
  as a sum of cancelling terms, the legitimate rounding differences between layouts (padding per
  micro-batch, all-reduce vs reduce-scatter order) are magnified by up to lr/eps. With the HF
  default eps 1e-8 that gave up to 6.5e-5 (ZeRO-3 + mask); the recipe here uses eps 1e-6, which
  keeps Adam's character for every gradient that matters, and PARAM_ATOL = 1e-5 (14x the worst
  measured difference, 1/200 of the update, 390x below the failure mode). DeepSpeed reports its
  grad norm from per-partition norms: it differs from DDP's by ~1e-5 relative (GRAD_NORM_RTOL).
* test_comparison_detects_ranks_training_alone runs the DDP launch the way NOTES.md warns about
  (no ACCELERATE_USE_CPU, workarounds off): it exits 0, each rank trains alone, and the same
  comparison must fail.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from tests.kit import build_sharp_model
from tests.ranks import launch_ranks

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "recipes" / "accelerate"
WORKER = Path(__file__).with_name("distributed_worker.py")

PARAM_ATOL = 1e-5  # see the module docstring
REL_TENSOR_TOL = 1e-3  # per tensor: |final - final_ref| / |update_ref| (measured <= 1.1e-5; alone: 0.81)
GRAD_NORM_RTOL = 1e-4  # DDP: exact; DeepSpeed: measured <= 9.6e-6 (alone: 0.13)
LOSS_ATOL = 1e-6  # measured <= 4e-9 (losses are ~1e-3 .. 1e-1; alone: 4e-2)
LAUNCH_TIMEOUT_S = 420

DOCS = [
    "Let x be a real number with x squared equal to four. Then x is two or x is minus two, so the sum of roots is zero.",
    "The triangle has sides three, four and five. It is a right triangle because nine plus sixteen equals twenty five.",
    "To count subsets of a set with n elements, note each element is either in or out, giving two to the n subsets.",
    "A prime number has exactly two divisors. The smallest prime is two and the next primes are three, five, seven.",
]

# ----------------------------------------------------------------------------------------------
# fast: the config files


def _config(name: str):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(CONFIGS / f"{name}.yaml"))


EXPECTED_DS = {
    "zero2": dict(zero_stage=2, offload_optimizer_device="none", offload_param_device="none", zero3_init_flag=False),
    "zero3": dict(zero_stage=3, offload_optimizer_device="none", offload_param_device="none", zero3_init_flag=True,
                  zero3_save_16bit_model=True),
    "zero3_offload": dict(zero_stage=3, offload_optimizer_device="cpu", offload_param_device="cpu",
                          zero3_init_flag=True, zero3_save_16bit_model=True),
}


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "zero3_offload"])
def test_config_parses_and_leaves_layout_to_launcher(name):
    path = CONFIGS / f"{name}.yaml"
    text = path.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header and text.startswith("#"), "each config starts with a header comment"
    assert any(f"accelerate launch --config_file recipes/accelerate/{name}.yaml" in line for line in header)
    raw = yaml.safe_load(text)
    for key in ("num_processes", "machine_rank", "main_process_ip", "main_process_port", "num_machines"):
        assert key not in raw, f"{name}.yaml: {key} belongs to the launcher, not the file"
    cfg = _config(name)
    assert cfg.use_cpu is False and cfg.mixed_precision == "no"
    if name == "ddp":
        assert cfg.distributed_type.value == "MULTI_GPU" and not cfg.deepspeed_config
        return
    ds = cfg.deepspeed_config
    assert cfg.distributed_type.value == "DEEPSPEED"
    for key, value in EXPECTED_DS[name].items():
        assert ds[key] == value, (name, key)
    assert ds["gradient_accumulation_steps"] == "auto" and ds["gradient_clipping"] == "auto"
    assert ds["deepspeed_multinode_launcher"] == "standard"  # torchrun on every node, no pdsh/ssh
    assert "deepspeed_config_file" not in ds


def _launch_args(name: str, *flags: str):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(CONFIGS / f"{name}.yaml"), *flags, "-m", "rl.cli", "train"])
    args, _, _ = _validate_launch_command(args)
    return args


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "zero3_offload"])
def test_launcher_flags_set_the_multi_node_layout(name, monkeypatch):
    """What slurm/train.sbatch passes on node 1 of 2 wins; DeepSpeed settings reach the ranks' env."""
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    flags = ["--num_machines", "2", "--num_processes", "16", "--machine_rank", "1",
             "--main_process_ip", "10.1.2.3", "--main_process_port", "29731"]
    args = _launch_args(name, *flags)
    assert (args.num_machines, args.num_processes, args.machine_rank) == (2, 16, 1)
    assert (args.main_process_ip, args.main_process_port) == ("10.1.2.3", 29731)
    monkeypatch.setattr("accelerate.utils.launch.is_port_in_use", lambda port: False)
    if name == "ddp":
        assert args.multi_gpu and not args.use_deepspeed
        env = prepare_multi_gpu_env(args)
    else:
        assert args.use_deepspeed and not args.multi_gpu
        args.deepspeed_fields_from_accelerate_config = ",".join(_config(name).deepspeed_config)
        cmd, env = prepare_deepspeed_cmd_env(args)
        assert cmd is None, "standard launcher: torchrun, not the pdsh-based `deepspeed` runner"
        expected = EXPECTED_DS[name]
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == str(expected["zero_stage"])
        assert env["ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"] == expected["offload_optimizer_device"]
        assert env["ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"] == expected["offload_param_device"]
        assert env["ACCELERATE_GRADIENT_ACCUMULATION_STEPS"] == "auto"
        assert env["ACCELERATE_GRADIENT_CLIPPING"] == "auto"
        if "zero3_save_16bit_model" in expected:
            assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"
    # torchrun's view: 8 ranks here, node 1 of 2, rendezvous at the main node
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "8", 1)
    assert args.rdzv_endpoint == "10.1.2.3:29731"


def test_launcher_requires_num_processes():
    """No process count in the files: forgetting --num_processes is an error, not a silent default."""
    with pytest.raises(ValueError, match="num_processes"):
        _launch_args("zero2")


# ----------------------------------------------------------------------------------------------
# fast: rl/runtime/cpu_distributed.py


@pytest.fixture
def clean_dist_env(monkeypatch):
    from accelerate.state import PartialState

    for name in ("LOCAL_RANK", "WORLD_SIZE", "RANK", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_CPU",
                 "ENTROPY_RL_NO_CPU_WORKAROUNDS"):
        monkeypatch.delenv(name, raising=False)
    # whatever the test does to the class is undone afterwards; no real atexit handler in pytest
    monkeypatch.setattr(PartialState, "_prepare_backend", PartialState._prepare_backend)
    monkeypatch.setattr("rl.runtime.cpu_distributed._EXIT_HANDLER_REGISTERED", False)
    monkeypatch.setattr("atexit.register", lambda func: func)
    return monkeypatch


def test_cpu_workarounds_noop_in_a_single_process(clean_dist_env):
    from accelerate.state import PartialState

    from rl.runtime.cpu_distributed import apply_cpu_workarounds

    before = PartialState._prepare_backend
    assert apply_cpu_workarounds() == []
    assert PartialState._prepare_backend is before


def test_cpu_workarounds_noop_with_cuda(clean_dist_env):
    from accelerate.state import PartialState

    from rl.runtime.cpu_distributed import apply_cpu_workarounds

    clean_dist_env.setenv("LOCAL_RANK", "0")
    clean_dist_env.setenv("WORLD_SIZE", "2")
    clean_dist_env.setattr(torch.cuda, "is_available", lambda: True)
    before = PartialState._prepare_backend
    assert apply_cpu_workarounds() == []
    assert PartialState._prepare_backend is before


def test_cpu_workarounds_give_cpu_ranks_gloo(clean_dist_env):
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    from rl.runtime.cpu_distributed import apply_cpu_workarounds

    clean_dist_env.setenv("LOCAL_RANK", "1")
    clean_dist_env.setenv("WORLD_SIZE", "2")
    clean_dist_env.setenv("ENTROPY_RL_NO_CPU_WORKAROUNDS", "1")
    assert apply_cpu_workarounds() == []
    clean_dist_env.delenv("ENTROPY_RL_NO_CPU_WORKAROUNDS")
    original = PartialState._prepare_backend
    assert original(None, cpu=False) == (None, DistributedType.NO)  # accelerate alone: rank trains alone
    assert apply_cpu_workarounds() == ["accelerate backend gloo/MULTI_CPU for CPU ranks", "gloo group destroyed at exit"]
    assert apply_cpu_workarounds() == []  # idempotent
    patched = PartialState._prepare_backend
    assert patched(None, cpu=False) == ("gloo", DistributedType.MULTI_CPU)
    assert patched(None, cpu=True) == ("gloo", DistributedType.MULTI_CPU)  # accelerate's own answer
    clean_dist_env.setenv("WORLD_SIZE", "1")
    assert patched(None, cpu=False) == (None, DistributedType.NO)  # one process: unchanged


@pytest.mark.deepspeed
def test_cpu_workarounds_for_deepspeed(clean_dist_env):
    pytest.importorskip("deepspeed")
    import deepspeed.ops

    from rl.runtime.cpu_distributed import apply_cpu_workarounds

    compatible = deepspeed.ops.__compatible_ops__
    clean_dist_env.setitem(compatible, "deepspeed_shm_comm", True)
    clean_dist_env.delenv("DS_ACCELERATOR", raising=False)
    clean_dist_env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    clean_dist_env.setenv("ACCELERATE_USE_CPU", "1")
    clean_dist_env.setenv("LOCAL_RANK", "0")
    clean_dist_env.setenv("WORLD_SIZE", "2")
    applied = apply_cpu_workarounds()
    assert applied == ["DS_ACCELERATOR=cpu", "deepspeed_shm_comm off", "ACCELERATE_USE_CPU removed",
                       "accelerate backend gloo/MULTI_CPU for CPU ranks", "gloo group destroyed at exit"]
    assert os.environ["DS_ACCELERATOR"] == "cpu" and "ACCELERATE_USE_CPU" not in os.environ
    assert compatible["deepspeed_shm_comm"] is False


# ----------------------------------------------------------------------------------------------
# slow: real launches


@dataclass
class Run:
    name: str
    out: Path
    infos: list[dict]
    log: str

    @property
    def steps(self) -> list[dict]:
        return [e for e in self.infos[0]["log_history"] if "loss" in e]


def _launch(name: str, tmp: Path, recipe: Path, *, config: str | None, gas: int, env: dict | None = None,
            worker_flags=(), overrides=()) -> Run:
    out = tmp / f"run-{name}"
    info_dir = tmp / f"info-{name}"
    target = [str(WORKER), "--info-dir", str(info_dir), *worker_flags, "--",
              "train", "--config", str(recipe), "--output_dir", str(out),
              "--gradient_accumulation_steps", str(gas), *overrides]
    start = time.monotonic()
    proc = launch_ranks(target, ranks=1 if config is None else 2, config=config, env=env, timeout=LAUNCH_TIMEOUT_S)
    log = proc.stdout + proc.stderr
    (tmp / f"{name}.log").write_text(log)
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{log[-4000:]}"
    infos = sorted((json.loads(p.read_text()) for p in info_dir.glob("*.json")), key=lambda i: i["process_index"])
    assert infos, f"{name}: no rank wrote its info\n{log[-2000:]}"
    print(f"{name}: {time.monotonic() - start:.1f} s")
    return Run(name, out, infos, log)


def _params(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _saved_dir(run) -> Path:
    """The output dir of a rank that saved the final model. Ranks that wrongly run alone (the NOTES
    trap) all report process 0, but only the one whose TrainingArguments also see rank 0 saves its
    weights; the glob order of their info files is arbitrary, so pick by what is on disk."""
    dirs = [Path(i["output_dir"]) for i in run.infos]
    saved = [d for d in dirs if (d / "config.json").is_file() or (d / "adapter_config.json").is_file()]
    assert saved, f"{run.name}: no rank saved a final model in {dirs}"
    return saved[0]


def compare(ref: Run, run: Run, init: dict[str, torch.Tensor]) -> dict:
    """Differences between two runs: per-step metrics and the saved final models."""
    assert len(ref.steps) == len(run.steps) == 2, (ref.steps, run.steps)
    metrics = {"reward_mismatch": [], "loss_diff": 0.0, "grad_norm_rel": 0.0}
    for a, b in zip(ref.steps, run.steps):
        for key in ("reward", "reward_std", "rewards/rpt_reward/mean", "rewards/length_reward/mean",
                    "completions/mean_length"):
            if a[key] != b[key]:
                metrics["reward_mismatch"].append((a["step"], key, a[key], b[key]))
        metrics["loss_diff"] = max(metrics["loss_diff"], abs(a["loss"] - b["loss"]))
        metrics["grad_norm_rel"] = max(metrics["grad_norm_rel"], abs(a["grad_norm"] - b["grad_norm"]) / a["grad_norm"])
    pa, pb = _params(_saved_dir(ref)), _params(_saved_dir(run))
    assert pa.keys() == pb.keys() == init.keys()
    metrics["param_diff"] = max((pa[n] - pb[n]).abs().max().item() for n in pa)
    metrics["max_update"] = max((pa[n] - init[n]).abs().max().item() for n in pa)
    metrics["rel_tensor_diff"] = max(
        ((pa[n] - pb[n]).norm() / (pa[n] - init[n]).norm().clamp_min(1e-30)).item() for n in pa)
    return metrics


def matches(m: dict) -> bool:
    return (not m["reward_mismatch"] and m["loss_diff"] <= LOSS_ATOL and m["grad_norm_rel"] <= GRAD_NORM_RTOL
            and m["param_diff"] <= PARAM_ATOL and m["rel_tensor_diff"] <= REL_TENSOR_TOL)


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_model_dir) -> dict:
    """Model, RPT data (built once, passed as dataset_path), recipe, initial parameters."""
    from transformers import AutoTokenizer

    from rl.data.rpt import RPTBuildConfig, build_rpt_dataset

    tmp = tmp_path_factory.mktemp("distributed")
    model = build_sharp_model(tiny_model_dir, tmp / "model")
    (tmp / "corpus.txt").write_text("\n\n".join(DOCS), encoding="utf-8")
    cfg = RPTBuildConfig(corpus="corpus.txt", proxy_model=str(model), min_entropy=0.0, max_per_doc=8,
                         min_context_tokens=4, max_context_tokens=48, seed=0,
                         prompt_template="Predict the next token.\n\n### Context\n{context}")
    cwd = os.getcwd()
    os.chdir(tmp)  # a relative corpus path: doc_id, hence the sampled positions, same in every session
    try:
        dataset, _ = build_rpt_dataset(cfg, tmp / "rpt-data", chat_tokenizer=AutoTokenizer.from_pretrained(model))
    finally:
        os.chdir(cwd)
    assert len(dataset) >= 8
    recipe = {
        "model_name_or_path": str(model),
        "dataset_path": str(tmp / "rpt-data"),
        "reward_funcs": ["rpt", "tests.rl.train.distributed_worker.length_reward"],
        "max_steps": 2,
        "per_device_train_batch_size": 4,  # x 2 ranks, or x gradient_accumulation_steps 2 in one process
        "num_generations": 2,
        "max_completion_length": 12,
        "learning_rate": 1.0e-3,
        "optim": "adamw_torch",  # not DeepSpeed's fused Adam (a 75-160 s compile on CPU)
        "adam_epsilon": 1.0e-6,  # see the module docstring: Adam magnifies rounding in ~0 gradients by lr/eps
        "lr_scheduler_type": "constant",
        "beta": 0.0,
        "bf16": False,
        "gradient_checkpointing": False,
        "use_cpu": False,  # DDP on CPU needs no flag: rl/runtime/cpu_distributed.py (or ACCELERATE_USE_CPU=1)
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": ["none"],
        "seed": 1,
        "disable_dropout": True,
        "dataloader_num_workers": 0,
        "signal_check": "off",  # tested on its own (tests/rl/train/test_signal_check.py)
    }
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return {"tmp": tmp, "recipe": path, "init": _params(model), "single": {}}


MASK = ("--top_entropy_quantile", "0.2")


def _single(work: dict, masked: bool) -> Run:
    """The one-process reference (gradient_accumulation_steps=2: the same 8-sample global batch)."""
    if masked not in work["single"]:
        name = "single-mask" if masked else "single"
        run = _launch(name, work["tmp"], work["recipe"], config=None, gas=2, overrides=MASK if masked else ())
        assert run.infos[0]["num_processes"] == 1
        work["single"][masked] = run
    return work["single"][masked]


LAYOUTS = {
    # name: (config, env, overrides, masked, expected ZeRO stage)
    "ddp": ("ddp", {"ACCELERATE_USE_CPU": "1"}, (), False, None),  # as NOTES.md says
    "ddp-no-env": ("ddp", {}, (), False, None),  # rl/runtime/cpu_distributed.py alone forms the group
    "zero2": ("zero2", {"ACCELERATE_USE_CPU": "1"}, (), False, 2),  # dropped: else it silently runs DDP
    "zero3": ("zero3", {}, ("--save_strategy", "steps", "--save_steps", "2"), False, 3),
    "zero3-mask": ("zero3", {}, MASK, True, 3),  # forking mask + selective LM head on partitioned params
}


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(900)
@pytest.mark.parametrize("layout", [
    "ddp",
    "ddp-no-env",
    pytest.param("zero2", marks=pytest.mark.deepspeed),
    pytest.param("zero3", marks=pytest.mark.deepspeed),
    pytest.param("zero3-mask", marks=pytest.mark.deepspeed),
])
def test_two_ranks_match_one_process(work, layout):
    config, env, overrides, masked, stage = LAYOUTS[layout]
    if stage is not None:
        pytest.importorskip("deepspeed")
    ref = _single(work, masked)
    run = _launch(layout, work["tmp"], work["recipe"], config=config, gas=1, env=env, overrides=overrides)
    assert [i["process_index"] for i in run.infos] == [0, 1]
    for info in run.infos:
        assert info["num_processes"] == 2 and info["world_size_env"] == "2"
        assert info["stats"]["sampled"] == info["stats"]["replaced"] == 8  # 2 steps x 4 samples per rank
        assert info["stats"]["rpt_answers"] == 8
        if stage is None:
            assert info["distributed_type"] == "DistributedType.MULTI_CPU"
        else:
            assert info["distributed_type"] == "DistributedType.DEEPSPEED" and info["zero_stage"] == stage
            assert info["basic_optimizer"] == "AdamW"  # the recipe's torch optimizer, no fused_adam build
    assert "built successfully" not in run.log, "a DeepSpeed op was JIT-compiled"
    steps = run.steps
    assert 0 < steps[0]["rewards/rpt_reward/mean"] < 1 and steps[0]["reward_std"] > 0  # non-trivial advantages
    assert all(s["grad_norm"] > 1e-3 for s in steps)
    if masked:
        assert all(s["forking/kept_fraction"] == pytest.approx(0.2, abs=0.05) for s in steps)
    m = compare(ref, run, work["init"])
    print(f"{layout}: {m}")
    assert not m["reward_mismatch"], m["reward_mismatch"]  # identical completions in both layouts
    assert m["loss_diff"] <= LOSS_ATOL, m
    assert m["grad_norm_rel"] <= GRAD_NORM_RTOL, m
    assert m["param_diff"] <= PARAM_ATOL, m
    assert m["rel_tensor_diff"] <= REL_TENSOR_TOL, m
    assert m["max_update"] > 10 * PARAM_ATOL, m  # the models moved: the comparison is not vacuous
    if layout == "zero3":  # checkpoints are usable: gathered weights, equal to the final model
        ckpt, final = _params(run.out / "checkpoint-2"), _params(run.out)
        assert all(torch.equal(ckpt[n], final[n]) for n in final)
        assert list((run.out / "checkpoint-2").glob("global_step2/*optim_states.pt")), "no DeepSpeed state to resume"


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_comparison_detects_ranks_training_alone(work):
    """NOTES.md's failure: no ACCELERATE_USE_CPU (and no workaround) -> exit 0, each rank alone."""
    ref = _single(work, False)
    run = _launch("alone", work["tmp"], work["recipe"], config="ddp", gas=1,
                  worker_flags=["--no-cpu-workarounds", "--per-process-output", str(work["tmp"] / "run-alone")])
    assert len(run.infos) == 2 and all(i["num_processes"] == 1 and i["process_index"] == 0 for i in run.infos)
    m = compare(ref, run, work["init"])
    print(f"alone: {m}")
    assert not matches(m), m
    assert m["param_diff"] > 100 * PARAM_ATOL and m["rel_tensor_diff"] > 0.1, m
    assert math.isfinite(m["loss_diff"])
