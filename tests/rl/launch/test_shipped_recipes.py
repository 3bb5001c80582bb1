"""The shipped recipes (recipes/): every one dry-runs clean with local stand-ins for the data a
user prepares, names its launch sources and departures, comments every field, renders with
`rl submit`, and its smoke variant keeps its algorithm.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from rl.train.preflight.cli import main
from rl.train.preflight.dryrun import dry_run
from rl.train.preflight.report import EXIT_OK, EXIT_PROBLEMS

ROOT = Path(__file__).resolve().parents[3]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if not {"accelerate", "caft"} & set(p.parts))  # caft: rl sft recipes (tests/rl/sft)
REAL = sorted(p for p in RECIPES if p.parent.name in ("rpt", "forking", "rlp"))
SMOKE = sorted((ROOT / "recipes" / "smoke").glob("*.yaml"))


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def load(p: Path) -> dict:
    return yaml.safe_load(p.read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name their accelerate configs relative to the repository root


def stand_ins(recipe: Path, tmp_path: Path, corpus_file: Path, math_file: Path, tiny_model_dir: Path) -> list[str]:
    """Overrides that replace what the user prepares (data; for smoke recipes the model) with local stand-ins."""
    data = load(recipe)
    args = ["--output_dir", str(tmp_path / "run")]
    corpus = str(data.get("corpus") or "")
    if corpus and not corpus.startswith("builtin:"):
        args += ["--corpus", str(corpus_file)]
    if data.get("dataset_path"):
        args += ["--dataset_path", str(math_file)]
    if recipe.parent.name == "smoke":
        args += ["--model_name_or_path", str(tiny_model_dir)]
    return args


# ---------------------------------------------------------------------------------------------
# every recipe


# recipe -> (world size, batch line fragment): what the launch: section and the batch fields imply
EXPECTED = {
    "recipes/rpt/r1-distill-qwen-14b.yaml": (32, "2048 completions = 256 prompts x 8, used for 1 optimizer step"),
    "recipes/rpt/forking-rpt.yaml": (32, "2048 completions = 256 prompts x 8, used for 1 optimizer step"),
    "recipes/rpt/qwen3-1.7b-lora.yaml": (8, "512 completions = 64 prompts x 8, used for 1 optimizer step"),
    "recipes/forking/qwen3-8b-dapo.yaml": (64, "8192 completions = 512 prompts x 16, used for 16 optimizer step"),
    "recipes/forking/qwen3-14b-dapo.yaml": (64, "8192 completions = 512 prompts x 16, used for 16 optimizer step"),
    "recipes/forking/qwen3-32b-dapo.yaml": (128, "8192 completions = 512 prompts x 16, used for 16 optimizer step"),
    "recipes/rlp/qwen3-1.7b-base.yaml": (8, "8192 completions = 512 prompts x 16, used for 1 optimizer step"),
}


def test_the_expected_recipes_exist():
    assert set(EXPECTED) == {rel(p) for p in REAL}
    assert {p.stem for p in SMOKE} == {f"{p.parent.name}-{p.stem}" for p in REAL}


@pytest.mark.parametrize("recipe", RECIPES, ids=rel)
def test_every_recipe_dry_runs_clean(recipe, tmp_path, corpus_file, math_file, tiny_model_dir, capsys):
    env_before = dict(os.environ)
    argv = ["--config", rel(recipe), *stand_ins(recipe, tmp_path, corpus_file, math_file, tiny_model_dir)]
    report = dry_run(argv)
    assert report.problems == [], report.format()
    assert dict(os.environ) == env_before  # the recipe's `env:` is not left behind
    assert main(argv) == EXIT_OK
    out = capsys.readouterr().out
    assert "problems: none" in out and "dry run of" in out
    summary = dict(report.summary)
    if rel(recipe) in EXPECTED:
        world, batch = EXPECTED[rel(recipe)]
        assert summary["world size"].startswith(f"{world} training processes (recipe launch:")
        assert batch in summary["batch"]
        assert any(kind in summary["distributed"] for kind in ("ZeRO-3", "ZeRO-2", "DDP"))
        # hub models cannot be checked here: reported as such, never as problems
        data = load(recipe)
        models = [data["model_name_or_path"]] + ([data["proxy_model"]] if data.get("proxy_model") else [])
        for model in models:
            assert any(model in item and "not checked" in item for item in report.offline), report.format()
        assert "not checked offline" in out
    if recipe.parent.name == "smoke":
        assert report.offline == []  # a smoke recipe is fully checkable offline
        assert "(local;" in summary["model"]


@pytest.mark.parametrize("recipe", REAL, ids=rel)
def test_real_recipe_without_prepared_data_names_exactly_that(recipe, tmp_path):
    report = dry_run(["--config", rel(recipe), "--output_dir", str(tmp_path / "run")])
    data = load(recipe)
    path = data.get("dataset_path") or data.get("corpus")
    assert len(report.problems) == 1, report.format()
    assert path in report.problems[0] and "recipe header" in report.problems[0]
    assert report.exit_code == EXIT_PROBLEMS


def test_world_size_flags_override_the_launch_section(tmp_path, corpus_file):
    recipe = "recipes/rpt/r1-distill-qwen-14b.yaml"
    base = ["--config", recipe, "--corpus", str(corpus_file), "--output_dir", str(tmp_path / "run")]
    report = dry_run(base + ["--nodes", "8", "--gpus-per-node", "8"])
    assert dict(report.summary)["world size"].startswith("64 training processes (--nodes/--gpus-per-node")
    assert "4096 completions = 512 prompts x 8" in dict(report.summary)["batch"]
    assert report.problems == []
    # one node with the header's local variant: same 2,048 completions per step
    report = dry_run(base + ["--num_processes", "8", "--gradient_accumulation_steps", "128"])
    assert "2048 completions = 256 prompts x 8" in dict(report.summary)["batch"]
    assert report.problems == []


def opening_comment(text: str) -> list[str]:
    """The lines of a recipe's opening comment block, without `#` and surrounding blanks."""
    out = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        out.append(line[1:].strip())
    return out


def test_recipes_name_their_launch_sources_and_departures():
    for recipe in REAL + SMOKE:
        text = recipe.read_text(encoding="utf-8")
        assert text.startswith("# "), rel(recipe)
        commands = opening_comment(text)
        if recipe in REAL:
            assert any(c.startswith(f"rl submit --config {rel(recipe)}") for c in commands), rel(recipe)
            launch = load(recipe)["launch"]
            assert launch["nodes"] >= 1 and launch["gpus_per_node"] >= 1, rel(recipe)
            assert (ROOT / launch["accelerate_config"]).is_file(), rel(recipe)
            assert any(c.startswith(f"rl train --config {rel(recipe)} --dry-run") for c in commands)
            assert re.search(r"arXiv 25[01][0-9]\.[0-9]{5}", text) and "Departures" in text, rel(recipe)
            for accel in re.findall(r"recipes/accelerate/[\w.]+\.yaml", text):
                assert (ROOT / accel).is_file(), accel
        else:
            assert "launch" not in load(recipe)  # a smoke variant runs in one process
            assert any(c.startswith(f"rl train --config {rel(recipe)} --model_name_or_path") for c in commands)
            parent = re.search(r"smoke variant of (recipes/\S+\.yaml)", text).group(1)
            assert (ROOT / parent).is_file()


@pytest.mark.parametrize("recipe", REAL, ids=rel)
def test_launch_section_renders_with_rl_submit(recipe, tmp_path):
    """`rl submit --config R` takes nodes, GPUs and the accelerate config from the recipe's launch: section."""
    from rl.train.preflight.world import submit_parser
    from rl.launch.slurm import render_sbatch
    from rl.train.launch_section import apply_launch_section, check_launch_section

    args = apply_launch_section(submit_parser().parse_args(["--config", rel(recipe)]),
                                check_launch_section(rel(recipe), load(recipe)["launch"]))
    text = render_sbatch(args.config, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                         accelerate_config=args.accelerate_config, run_dir=tmp_path / "run", workdir=ROOT,
                         environ={})
    assert f"#SBATCH --nodes={args.nodes}" in text and f"#SBATCH --gpus-per-node={args.gpus_per_node}" in text
    assert args.accelerate_config in text and rel(recipe) in text


@pytest.mark.parametrize("recipe", REAL + SMOKE, ids=rel)
def test_every_field_has_a_comment(recipe):
    lines = recipe.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Za-z_]\w*:", line) and line.split(":")[0] != "env":
            assert "#" in line or lines[i - 1].lstrip().startswith("#"), f"{rel(recipe)}:{i + 1}: {line}"
        if re.match(r"^  [A-Z_]+:", line):  # env variables
            assert "#" in line, f"{rel(recipe)}:{i + 1}: {line}"


# fields whose value is the algorithm (not the size): a smoke variant keeps its parent's
SAME_AS_PARENT = ["reward_funcs", "loss_type", "beta", "epsilon", "epsilon_high", "top_entropy_quantile",
                  "entropy_mask_scope", "entropy_mask_normalize", "scale_rewards", "temperature", "learning_rate",
                  "lr_scheduler_type", "use_peft", "mask_truncated_completions", "entropy_coef", "num_iterations",
                  "rpt_entropy", "rpt_top_k", "rpt_continuation_tokens", "lora_target_modules"]


@pytest.mark.parametrize("smoke", SMOKE, ids=rel)
def test_smoke_variant_keeps_its_parents_algorithm(smoke):
    parent = ROOT / "recipes" / smoke.stem.split("-", 1)[0] / (smoke.stem.split("-", 1)[1] + ".yaml")
    mine, theirs = load(smoke), load(parent)
    for key in SAME_AS_PARENT:
        assert mine.get(key) == theirs.get(key), f"{rel(smoke)}: {key} {mine.get(key)!r} != parent's {theirs.get(key)!r}"
    # several optimizer steps per generation batch where the parent has them (the 80/20 mapping)
    ratio = lambda d: d.get("steps_per_generation", d["gradient_accumulation_steps"]) / d["gradient_accumulation_steps"]  # noqa: E731
    assert (ratio(mine) > 1) == (ratio(theirs) > 1)
    assert mine["use_cpu"] is True and mine["max_steps"] <= 2 and mine["max_completion_length"] <= 32
