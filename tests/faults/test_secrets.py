"""Security: nothing from a recipe, dataset or model output is run as code; checkpoints load safely;
credentials never land in sbatch files, saved configs, logs or checkpoints."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.helpers import ROOT, write_recipe

PRODUCT_DIRS = [ROOT / "rl", ROOT / "rewards"]

# ------------------------------------------------------------------------------------------ code audit


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):  # x.name(...): owner is x's name, or "?" for an expression
                yield node, getattr(func.value, "id", "?"), func.attr
            elif isinstance(func, ast.Name):  # a bare builtin call: eval(...), exec(...)
                yield node, "", func.id


def _kw(node, name):
    return next((k.value for k in node.keywords if k.arg == name), None)


def _findings(files):
    bad = []
    for path in files:
        for node, owner, name in _calls(path):
            where = f"{path.relative_to(path.parents[2]) if len(path.parents) > 2 else path}:{node.lineno}"
            if owner == "" and name in ("eval", "exec", "compile", "__import__"):
                bad.append(f"{where}: {name}()")
            elif owner in ("pickle", "cPickle", "dill", "marshal", "joblib") and name in ("load", "loads"):
                bad.append(f"{where}: {owner}.{name}()")
            elif owner == "yaml" and name in ("load", "unsafe_load", "full_load", "load_all", "unsafe_load_all"):
                bad.append(f"{where}: yaml.{name}()")
            elif owner == "torch" and name == "load":
                wo = _kw(node, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    bad.append(f"{where}: torch.load() without weights_only=True")
            elif name in ("run", "Popen", "call", "check_call", "check_output", "system"):
                shell = _kw(node, "shell")
                if (owner == "os" and name == "system") or (isinstance(shell, ast.Constant) and shell.value):
                    bad.append(f"{where}: shell command")
            elif name == "from_pretrained":
                trc = _kw(node, "trust_remote_code")
                if isinstance(trc, ast.Constant) and trc.value is True:
                    bad.append(f"{where}: trust_remote_code=True hard-coded")
    return bad


def test_product_code_never_evaluates_or_unpickles():
    files = [p for d in PRODUCT_DIRS for p in sorted(d.rglob("*.py"))]
    assert files
    assert _findings(files) == []


def test_transformers_and_trl_load_checkpoints_safely():
    """HF Trainer (transformers 5.x) loads rng_state.pth, optimizer.pt, scheduler.pt and .bin weights with
    `torch.load(..., weights_only=True)` (after `check_torch_load_is_safe()`), model weights from safetensors;
    TRL's GRPO trainer adds no loads of its own."""
    import transformers
    import trl

    trainer = Path(transformers.__file__).parent / "trainer.py"
    loads = [(n, o, nm) for n, o, nm in _calls(trainer) if o == "torch" and nm == "load"]
    assert loads, "transformers' trainer no longer calls torch.load: re-audit"
    assert _findings([trainer]) == []
    trl_files = sorted((Path(trl.__file__).parent / "trainer").glob("grpo*.py"))
    assert [f for f in _findings(trl_files) if "torch.load" in f or "pickle" in f] == []


@pytest.mark.parametrize("loader", ["rl.runtime.strict_yaml.load_recipe_file", "rl.launch.slurm.load_recipe"])
@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/new:os.system"])
def test_recipe_yaml_loaders_refuse_python_tags(tmp_path, loader, tag):
    """Every recipe reader (`rl train`, `rl submit`) refuses a tag that would construct a Python
    object with one line naming the file, and never runs it."""
    import importlib

    from rl.errors import UserError

    module, _, name = loader.rpartition(".")
    marker = tmp_path / "pwned"
    path = tmp_path / "recipe.yaml"
    path.write_text(f"learning_rate: 1.0e-5\nmax_steps: {tag} ['touch {marker}']\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        getattr(importlib.import_module(module), name)(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ secrets at rest

SECRETS = {
    "WANDB_API_KEY": "wandbsecret" + "7" * 29,
    "HF_TOKEN": "hf_SecretTokenValue0123456789",
    "HUGGING_FACE_HUB_TOKEN": "hf_OtherSecretValue987654321",
    "OPENAI_API_KEY": "sk-secretopenaikey-0123456789",
    "AWS_SECRET_ACCESS_KEY": "awsSecretAccessKey/0123456789",
    "GITHUB_TOKEN": "ghp_secretgithubtoken012345",
    "MY_SERVICE_PASSWORD": "hunter2-but-longer-0123",
}
HUB_TOKEN_ARG = "hf_PassedOnTheCommandLine0123"


def _leaks(root: Path, values) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for value in values:
            if value.encode() in data:
                found.append(f"{path.relative_to(root)} holds {value[:6]}...")
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_secret_in_any_file_a_run_writes(tmp_path, tiny_model_dir):
    """A real tiny run (checkpoints, final model, W&B offline run, logs) with fake secrets in the environment
    and a hub token on the command line: no file it writes and no line it prints holds any of them."""
    recipe = write_recipe(tmp_path, tiny_model_dir, report_to=["wandb"], max_steps=2, save_steps=1,
                          logging_steps=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "WANDB_"))}
    env.update(SECRETS, HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(ROOT), HOME=str(tmp_path / "home"))
    env.pop("HF_TOKEN")  # so the command-line token is the only hub token (it must move to HF_TOKEN, unsaved)
    proc = subprocess.run([sys.executable, "-m", "rl.cli", "-v", "train", "--config", str(recipe),
                           "--hub_token", HUB_TOKEN_ARG], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "checkpoint-2" / "training_args.bin").is_file() and list((run / "wandb").glob("offline-run-*"))
    values = [*SECRETS.values(), HUB_TOKEN_ARG]
    assert _leaks(run, values) == []
    assert [v[:6] for v in values if v in proc.stdout or v in proc.stderr] == []
    import torch

    args = torch.load(run / "checkpoint-2" / "training_args.bin", weights_only=False)  # our own file, for the test
    assert args.hub_token is None


def test_rendered_sbatch_holds_no_secret(tmp_path, tiny_model_dir):
    from rl.launch.slurm import render_sbatch

    recipe = write_recipe(tmp_path, tiny_model_dir)
    text = render_sbatch(recipe, nodes=2, gpus_per_node=8, run_dir=tmp_path / "run", environ=dict(SECRETS),
                         workdir=tmp_path)
    assert not [k for k, v in SECRETS.items() if v in text]


def test_sbatch_refuses_an_override_holding_an_env_secret(tmp_path, tiny_model_dir):
    from rl.errors import UserError
    from rl.launch.slurm import render_sbatch

    recipe = write_recipe(tmp_path, tiny_model_dir)
    with pytest.raises(UserError, match=r"\$HF_TOKEN"):
        render_sbatch(recipe, nodes=1, gpus_per_node=1, overrides=["--hub_token", SECRETS["HF_TOKEN"]],
                      environ=dict(SECRETS), workdir=tmp_path)


def test_sbatch_refuses_a_token_override_not_in_the_environment(tmp_path, tiny_model_dir):
    from rl.errors import UserError
    from rl.launch.slurm import render_sbatch

    recipe = write_recipe(tmp_path, tiny_model_dir)
    with pytest.raises(UserError):
        render_sbatch(recipe, nodes=1, gpus_per_node=1, overrides=["--hub_token", HUB_TOKEN_ARG], environ={},
                      workdir=tmp_path)


def test_hub_token_is_moved_out_of_the_training_arguments():
    from types import SimpleNamespace

    from rl.runtime.wandb_secrets import move_secret_args

    args, env = SimpleNamespace(hub_token=HUB_TOKEN_ARG), {}
    argv = ["rl", "train", "--hub_token", HUB_TOKEN_ARG, "--wandb_api_key=abc", "--max_completion_length", "9"]
    assert move_secret_args(args, env, argv) == ["hub_token"]
    assert argv == ["rl", "train", "--hub_token", "<redacted>", "--wandb_api_key=<redacted>",
                    "--max_completion_length", "9"]
    assert args.hub_token is None and env["HF_TOKEN"] == HUB_TOKEN_ARG
    args, env = SimpleNamespace(hub_token="x" * 12), {"HF_TOKEN": "already-set-token"}
    move_secret_args(args, env)
    assert env["HF_TOKEN"] == "already-set-token" and args.hub_token is None
