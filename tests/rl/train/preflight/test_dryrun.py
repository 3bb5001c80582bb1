"""`rl train --config R --dry-run` (rl/train/preflight/): broken recipes yield numbered problems,
launch sections plan the world, and the signal check runs. The shipped recipes' own dry runs are
tests/rl/launch/test_shipped_recipes.py.

No weights are loaded and nothing is downloaded: hub models are listed under "not checked offline".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from rl.train.preflight.cli import main
from rl.train.preflight.dryrun import dry_run
from rl.train.preflight.report import EXIT_OK, EXIT_PROBLEMS

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name their accelerate configs relative to the repository root


# ---------------------------------------------------------------------------------------------
# broken recipes


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def small_math(tmp_path) -> Path:
    from rewards.math import dapo_math_prompt

    rows = [{"prompt": dapo_math_prompt(f"What is {a} + 1?"), "solution": str(a + 1)} for a in range(16)]
    return write(tmp_path, "math.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def base_recipe(tmp_path, model, data, **fields) -> dict:
    recipe = {"model_name_or_path": str(model), "dataset_path": str(data), "reward_funcs": ["math"],
              "output_dir": str(tmp_path / "run"), "per_device_train_batch_size": 4, "num_generations": 4,
              "max_completion_length": 16, "bf16": False, "use_cpu": True, "max_steps": 2, "report_to": ["none"],
              "signal_check": "off"}  # the signal check has its own tests below
    recipe.update(fields)
    return recipe


def recipe_file(tmp_path, header: str = "", **fields) -> Path:
    body = yaml.safe_dump(fields, sort_keys=False)
    return write(tmp_path, "recipe.yaml", header + body)


def problems_of(tmp_path, *extra, header: str = "", **fields) -> list[str]:
    path = recipe_file(tmp_path, header, **fields)
    report = dry_run(["--config", str(path), *extra])
    assert report.exit_code == (EXIT_PROBLEMS if report.problems else EXIT_OK)
    return report.problems


def test_launch_section_plans_the_world_and_flags_win(tmp_path, tiny_model_dir, small_math):
    launch = {"cpu": True, "procs_per_node": 4, "accelerate_config": "recipes/accelerate/zero2.yaml"}
    path = recipe_file(tmp_path, **base_recipe(tmp_path, tiny_model_dir, small_math, launch=launch))
    report = dry_run(["--config", str(path)])
    assert report.problems == [], report.format()
    summary = dict(report.summary)
    assert summary["world size"] == "4 training processes (recipe launch: 1 node x 4 CPU processes)"
    assert "recipes/accelerate/zero2.yaml: DeepSpeed ZeRO-2" in summary["distributed"]
    report = dry_run(["--config", str(path), "--num_processes", "2"])
    assert dict(report.summary)["world size"] == "2 training processes (--num_processes 2)"


def test_accelerate_config_alone_sizes_the_world_from_its_num_processes(tmp_path, tiny_model_dir, small_math):
    accel = write(tmp_path, "acc.yaml", "distributed_type: MULTI_GPU\nnum_processes: 4\n")
    path = recipe_file(tmp_path, **base_recipe(tmp_path, tiny_model_dir, small_math))
    report = dry_run(["--config", str(path), "--accelerate_config", str(accel)])
    assert dict(report.summary)["world size"] == f"4 training processes (accelerate config {accel}: num_processes 4)"


def test_clean_base_recipe_has_no_problems(tmp_path, tiny_model_dir, small_math):
    assert problems_of(tmp_path, **base_recipe(tmp_path, tiny_model_dir, small_math)) == []


def test_broken_recipe_lists_every_problem_numbered(tmp_path, tiny_model_dir, capsys):
    accel = write(tmp_path, "accel.yaml", "distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 4\n"
                  "  offload_optimizer_device: gpu\nmixed_precision: bf16\n")
    data = write(tmp_path, "data.jsonl", json.dumps({"prompt": "What is 1+1?", "answer": "2"}) + "\n")
    fields = base_recipe(tmp_path, tiny_model_dir, data, reward_funcs=["math", "mth"], per_device_train_batch_size=3,
                         use_vllm=True, vllm_mode="server", learnin_rate=1e-6, warmup_stepz=3,
                         launch={"nodes": 2, "gpus_per_node": 3, "accelerate_config": str(accel)})
    path = recipe_file(tmp_path, **fields)
    assert main(["--config", str(path)]) == EXIT_PROBLEMS
    out = capsys.readouterr().out
    listed = re.findall(r"^  (\d+)\. (.*)$", out, re.M)
    assert [int(n) for n, _ in listed] == list(range(1, len(listed) + 1))
    expected = [
        "unknown field 'learnin_rate'; did you mean 'learning_rate'?",
        "unknown field 'warmup_stepz'; did you mean 'warmup_steps'?",
        "zero_stage must be 0, 1, 2 or 3, got 4",
        "offload_optimizer_device must be one of none, cpu, nvme, got 'gpu'",
        "unknown reward 'mth'; did you mean 'math'?",
        "reward `math_reward` needs column(s) ['solution']",
        "batch: the generation batch (3 per device x 6 processes x 1 steps_per_generation = 18 completions)",
        "vllm_mode server: set vllm_server_host",
    ]
    assert len(listed) == len(expected), out
    for (_, text), fragment in zip(listed, expected):
        assert fragment in text, (fragment, text)
    assert f"problems ({len(expected)}):" in out
    assert "world size   6 training processes (recipe launch: 2 nodes x 3 GPUs)" in out


def test_bad_divisibility_names_the_fix(tmp_path, tiny_model_dir, small_math):
    problems = problems_of(tmp_path, "--num_processes", "3",
                           **base_recipe(tmp_path, tiny_model_dir, small_math, per_device_train_batch_size=2))
    assert len(problems) == 1 and problems[0].startswith("batch:")
    assert "6 completions" in problems[0] and "not a multiple of num_generations 4" in problems[0]
    assert "world size must be a multiple of 2" in problems[0]
    # generation_batch_size that does not split into global batches
    problems = problems_of(tmp_path, "--num_processes", "2",
                           **base_recipe(tmp_path, tiny_model_dir, small_math, generation_batch_size=12))
    assert len(problems) == 1 and "generation_batch_size 12 must be a multiple of the global batch" in problems[0]


def test_unknown_reward_and_missing_column(tmp_path, tiny_model_dir, small_math):
    problems = problems_of(tmp_path, **base_recipe(tmp_path, tiny_model_dir, small_math, reward_funcs=["maths"]))
    assert len(problems) == 1 and "unknown reward 'maths'; did you mean 'math'?" in problems[0]
    problems = problems_of(tmp_path, **base_recipe(tmp_path, tiny_model_dir, small_math, reward_funcs=["rpt"]))
    assert len(problems) == 1 and "reward `rpt_reward` needs column(s) ['continuation', 'boundaries']" in problems[0]


def test_unparseable_gold_answers_are_a_problem(tmp_path, tiny_model_dir):
    rows = [{"prompt": f"q{i}", "solution": "\\boxed{"} for i in range(8)]
    data = write(tmp_path, "bad-gold.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    problems = problems_of(tmp_path, **base_recipe(tmp_path, tiny_model_dir, data))
    assert any("none of the first 8 gold answers parses" in p for p in problems), problems


def test_bad_deepspeed_configs(tmp_path, tiny_model_dir, small_math):
    ds = write(tmp_path, "ds.json", json.dumps({"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": "auto",
                                                "zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}))
    problems = problems_of(tmp_path, "--deepspeed", str(ds), **base_recipe(tmp_path, tiny_model_dir, small_math))
    assert len(problems) == 2, problems
    assert "train_micro_batch_size_per_gpu is 8 but the recipe implies 4" in problems[0]
    assert "bf16.enabled is True but the recipe has bf16: False" in problems[1]
    assert problems_of(tmp_path, "--deepspeed", str(tmp_path / "nope.json"),
                       **base_recipe(tmp_path, tiny_model_dir, small_math)) == [
        f"deepspeed {tmp_path / 'nope.json'}: {tmp_path / 'nope.json'} not found; give the path of an existing "
        "DeepSpeed JSON config, or leave `deepspeed` unset"]
    broken = write(tmp_path, "broken.json", "{not json")
    (problem,) = problems_of(tmp_path, "--deepspeed", str(broken), **base_recipe(tmp_path, tiny_model_dir, small_math))
    assert "not valid JSON" in problem
    # an accelerate config whose deepspeed_config_file is missing, plus two DeepSpeed configs at once
    accel = write(tmp_path, "acc.yaml", "distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: x.json\n")
    problems = problems_of(tmp_path, "--accelerate_config", str(accel), **base_recipe(tmp_path, tiny_model_dir, small_math))
    assert problems == [f"accelerate config {accel}: deepspeed_config_file x.json: x.json not found; give the path of "
                        "an existing DeepSpeed JSON config, or leave `deepspeed` unset"]
    good = write(tmp_path, "ds2.json", json.dumps({"zero_optimization": {"stage": 3}}))
    problems = problems_of(tmp_path, "--accelerate_config", "recipes/accelerate/zero2.yaml", "--deepspeed", str(good),
                           **base_recipe(tmp_path, tiny_model_dir, small_math))
    assert len(problems) == 1 and "already configures DeepSpeed; keep one of the two" in problems[0]
    problems = problems_of(tmp_path, "--accelerate_config", str(tmp_path / "missing.yaml"),
                           **base_recipe(tmp_path, tiny_model_dir, small_math))
    assert problems == [f"accelerate config {tmp_path / 'missing.yaml'} (--accelerate_config): file not found"]


def test_repository_accelerate_configs_parse(tmp_path, tiny_model_dir, small_math):
    for name, kind in [("ddp", "MULTI_GPU"), ("zero2", "ZeRO-2"), ("zero3", "ZeRO-3, no offload"),
                       ("zero3_offload", "ZeRO-3, offload optimizer -> cpu, params -> cpu")]:
        path = recipe_file(tmp_path, **base_recipe(tmp_path, tiny_model_dir, small_math))
        report = dry_run(["--config", str(path), "--accelerate_config", f"recipes/accelerate/{name}.yaml",
                          "--num_processes", "2"])
        assert report.problems == [], report.format()
        assert kind in dict(report.summary)["distributed"]


def test_vllm_consistency(tmp_path, tiny_model_dir, small_math):
    base = base_recipe(tmp_path, tiny_model_dir, small_math, use_vllm=True)
    (problem,) = problems_of(tmp_path, **{**base, "vllm_mode": "server"})
    assert "vllm_mode server: set vllm_server_host" in problem
    assert problems_of(tmp_path, **{**base, "vllm_mode": "server", "vllm_server_host": "gpu-node-1",
                                    "vllm_max_model_length": 256}) == []
    # `rl submit --vllm-server-node`: the first node serves, the others train
    path = recipe_file(tmp_path, **{**base, "vllm_mode": "colocate", "vllm_max_model_length": 256})
    report = dry_run(["--config", str(path), "--nodes", "3", "--gpus-per-node", "2", "--vllm-server-node"])
    assert report.problems == [], report.format()
    assert dict(report.summary)["world size"].startswith("4 training processes")
    assert "server at the first node of the job" in dict(report.summary)["generation"]
    # colocated tensor parallelism must divide the processes and fit in a node
    (problem,) = problems_of(tmp_path, "--nodes", "1", "--gpus-per-node", "3",
                             **{**base, "vllm_tensor_parallel_size": 2, "per_device_train_batch_size": 4,
                                "vllm_max_model_length": 256})
    assert "vllm_tensor_parallel_size 2 must divide the 3 training processes" in problem
    (problem,) = problems_of(tmp_path, "--nodes", "2", "--gpus-per-node", "2",
                             **{**base, "vllm_tensor_parallel_size": 4, "vllm_max_model_length": 256})
    assert "larger than the 2 GPUs of a node" in problem


def test_lengths_against_vllm_and_model(tmp_path, tiny_model_dir, small_math):
    base = base_recipe(tmp_path, tiny_model_dir, small_math, use_vllm=True)
    # the longest of the first prompts is 64 tokens (DAPO instruction + problem, GPT-2 BPE, no chat template)
    problems = problems_of(tmp_path, **{**base, "max_completion_length": 4096})
    assert problems == ["lengths: prompt (64) + max_completion_length (4096) = 4160 exceeds the model's 2048 positions"]
    (problem,) = problems_of(tmp_path, **{**base, "vllm_max_model_length": 40})
    assert "exceeds vllm_max_model_length 40" in problem
    (problem,) = problems_of(tmp_path, **{**base, "vllm_max_model_length": 16})
    assert "leaves no room for prompts" in problem


def test_save_steps_must_fit_the_generation_cycle(tmp_path, tiny_model_dir, small_math):
    base = base_recipe(tmp_path, tiny_model_dir, small_math, per_device_train_batch_size=2,
                       steps_per_generation=4, save_strategy="steps", save_steps=3)
    (problem,) = problems_of(tmp_path, **base)
    assert "save_steps: 3 is not a multiple of the generation cycle (4 optimizer steps)" in problem
    assert problems_of(tmp_path, **{**base, "save_steps": 8}) == []


def test_missing_model_and_data_and_bad_override(tmp_path, small_math):
    base = base_recipe(tmp_path, tmp_path / "no-model", tmp_path / "no-data.jsonl")
    problems = problems_of(tmp_path, **base)
    assert len(problems) == 2
    assert "no-model" in problems[0] and "no such directory" in problems[0]
    assert "no-data.jsonl: does not exist" in problems[1]
    problems = problems_of(tmp_path, "--learning_rate", "fast", **base_recipe(tmp_path, "x", small_math))
    assert any("command-line override" in p and "learning_rate" in p for p in problems), problems


def test_hub_model_is_not_checked_offline_not_a_problem(tmp_path, small_math):
    report = dry_run(["--config", str(recipe_file(tmp_path, **base_recipe(tmp_path, "some-org/some-model", small_math)))])
    assert report.problems == [], report.format()
    assert len(report.offline) == 1 and "some-org/some-model" in report.offline[0]


def test_gpu_recipe_checks_on_this_cpu_machine(tmp_path, tiny_model_dir, small_math):
    """bf16 on GPUs is valid for the target even though this machine has no bf16 GPU."""
    base = base_recipe(tmp_path, tiny_model_dir, small_math, bf16=True, use_cpu=False)
    assert problems_of(tmp_path, **base) == []
    from rl.train.preflight.rules import current_target

    assert current_target() is None  # the target machine applies only while parsing for it


def test_no_config_is_one_problem(capsys):
    assert main([]) == EXIT_PROBLEMS
    assert "1. --config: pass the recipe" in capsys.readouterr().out


def test_rl_train_dry_run_flag_is_wired(tmp_path, tiny_model_dir, small_math, capsys):
    """`rl train --config R --dry-run` goes through rl/cli.py."""
    from rl.cli import main as rl_main

    path = recipe_file(tmp_path, **base_recipe(tmp_path, tiny_model_dir, small_math))
    assert rl_main(["train", "--config", str(path), "--dry-run", "--num_processes", "2"]) == EXIT_OK
    assert "2 training processes (--num_processes 2)" in capsys.readouterr().out
    bad = recipe_file(tmp_path, **base_recipe(tmp_path, tiny_model_dir, small_math, num_generations=3))
    assert rl_main(["train", "--config", str(bad), "--dry-run"]) == EXIT_PROBLEMS


def test_signal_check_runs_on_a_local_model_and_stops_a_recipe_without_signal(tmp_path, tiny_model_dir, small_math):
    """A random tiny model never boxes a math answer: no group has signal, and the dry run says so."""
    path = recipe_file(tmp_path, **base_recipe(tmp_path, tiny_model_dir, small_math, signal_check="stop",
                                               signal_check_prompts=2, num_generations=2,
                                               per_device_train_batch_size=2))
    report = dry_run(["--config", str(path)])
    assert len(report.problems) == 1 and report.problems[0].startswith("signal check: no signal for GRPO")
    summary = dict(report.summary)
    assert "0 of 2 groups have unequal rewards" in summary["signal check"]
    assert "weights loaded only for the signal check" in report.format()


def test_signal_check_with_a_reward_that_varies(tmp_path, tiny_model_dir, small_math):
    path = recipe_file(tmp_path, **base_recipe(tmp_path, tiny_model_dir, small_math, signal_check="stop",
                                               signal_check_prompts=2, num_generations=2,
                                               per_device_train_batch_size=2, max_completion_length=6,
                                               reward_funcs=["tests.slurm.rewards_for_tests.length_reward"]))
    report = dry_run(["--config", str(path)])
    assert report.problems == [], report.format()
    assert "groups have unequal rewards" in dict(report.summary)["signal check"]


def test_rpt_format_and_rewards_must_agree(tmp_path, tiny_model_dir, corpus_file):
    fields = base_recipe(tmp_path, tiny_model_dir, corpus_file, reward_funcs=["rpt", "boxed_format"],
                         rpt_format="completion")
    fields.pop("dataset_path")
    fields["corpus"] = str(corpus_file)
    problems = problems_of(tmp_path, **fields)
    assert any("`rpt_reward` scores reasoning-format RPT rows but rpt_format is completion" in p for p in problems)
    assert any("`boxed_format` asks for a \\boxed{} answer" in p for p in problems)


def test_rlp_teacher_that_zero3_cannot_hold_is_a_problem(tmp_path, tiny_model_dir):
    """`rlp_teacher: ema` or `base` without LoRA needs a whole copy of the weights per rank: the dry run
    reports it from the recipe and the accelerate config, as `rl train` refuses it before loading."""
    from rewards.rlp import rlp_prompt

    rows = []
    for i in range(8):
        context, nxt = f"Counting: {i}, {i + 1},", f" {i + 2}"
        rows.append({"prompt": rlp_prompt(context, False), "context": context, "continuation": nxt,
                     "boundaries": [len(nxt.encode())]})
    data = write(tmp_path, "rlp.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    base = base_recipe(tmp_path, tiny_model_dir, data, reward_funcs=["rlp"], rlp_teacher="ema")
    zero3 = ("--accelerate_config", "recipes/accelerate/zero3.yaml", "--num_processes", "2")
    (problem,) = problems_of(tmp_path, *zero3, **base)
    assert problem.startswith("rlp_teacher: `ema` without LoRA needs a whole copy of the weights"), problem
    lora = {"use_peft": True, "lora_target_modules": ["q_proj", "v_proj"]}
    assert problems_of(tmp_path, *zero3, **base, **lora) == []
    assert problems_of(tmp_path, **base) == []  # one process: the copy fits


def test_dynamic_sampling_cost_comes_from_the_signal_checks_share(tmp_path, tiny_model_dir, small_math):
    """The dry run states dynamic sampling's extra generation cost from the share of groups the signal
    check saw vary (rl/train/preflight/sampling_cost.py), with the recipe's cap and start step."""
    path = recipe_file(tmp_path, **base_recipe(tmp_path, tiny_model_dir, small_math, signal_check="stop",
                                               signal_check_prompts=2, num_generations=2,
                                               per_device_train_batch_size=2, max_completion_length=6,
                                               reward_funcs=["tests.slurm.rewards_for_tests.length_reward"],
                                               dynamic_sampling=True, dynamic_sampling_max_batches=4,
                                               dynamic_sampling_start_step=1, max_steps=3))
    report = dry_run(["--config", str(path)])
    assert report.problems == [], report.format()
    summary = dict(report.summary)
    share = summary["signal check"].split(" groups have unequal")[0].rsplit("; ", 1)[-1]  # "k of 2"
    seen, prompts = (int(x) for x in share.split(" of "))
    line = summary["dynamic sampling"]
    assert line.startswith("groups whose 2 completions all get the same total reward are dropped")
    assert "from step 1" in line and "at most 4 generation batch(es) per step" in line
    assert f"the signal check saw p = {seen}/{prompts}" in line
    if seen:
        expected = min(4.0, prompts / seen)
        assert f"about {expected:.2g} generation batches per step at the start" in line
    else:
        assert "every step would run to the cap" in line
