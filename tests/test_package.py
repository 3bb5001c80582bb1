"""A wheel install is self-sufficient: recipes and the sbatch template come with it.

Builds the wheel from a copy of the source tree, installs it (no deps) into a fresh venv outside
the checkout, and runs the installed `rl` console script from another directory with PYTHONPATH
unset. The venv gets the dependencies by a .pth line naming this environment's site-packages
(a path line, not a site dir, so this environment's editable-install hook for entropy-rl is not
run): the venv's own site-packages comes first on sys.path, and the test checks that `rl` and
`rewards` are imported from the wheel, never from the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORED = {".git", ".venv", "runs", "build", "dist", "outputs", "wandb", "__pycache__", ".pytest_cache",
           ".hypothesis", "_shipped"}


def _copy_source(dst: Path) -> None:
    """The checkout's files as a clean clone would have them (git's view when there is one)."""
    listed = None
    if shutil.which("git"):
        proc = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
                              capture_output=True)
        if proc.returncode == 0:
            listed = [p for p in proc.stdout.decode().split("\0") if p]
    if listed is None:
        shutil.copytree(ROOT, dst, ignore=lambda d, names: [n for n in names if n in IGNORED or n.endswith(".egg-info")])
        return
    for rel in listed:
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _run(cmd: list[str], cwd: Path, env: dict, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, f"{' '.join(map(str, cmd))}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> dict:
    """Build the wheel, install it into a fresh venv; returns paths and the environment to run it with."""
    base = tmp_path_factory.mktemp("wheel")
    src, dist, venv = base / "src", base / "dist", base / "venv"
    src.mkdir()
    _copy_source(src)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
         base, dict(os.environ))
    (wheel,) = dist.glob("entropy_rl-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base, dict(os.environ))
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)],
         base, dict(os.environ))
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base, {}).stdout.strip()
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "_entropy_rl_test_deps.pth").write_text("".join(f"{d}\n" for d in deps), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled",
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}")
    work = base / "elsewhere"
    work.mkdir()
    return {"wheel": wheel, "venv": venv, "site": Path(site), "env": env, "work": work, "rl": str(venv / "bin" / "rl")}


@pytest.mark.slow
def test_wheel_carries_recipes_and_template(wheel_env):
    names = set(zipfile.ZipFile(wheel_env["wheel"]).namelist())
    shipped = {f"rl/_shipped/{p.relative_to(ROOT).as_posix()}" for d in ("recipes", "slurm")
               for p in (ROOT / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert "rl/_shipped/slurm/train.sbatch" in shipped and "rl/_shipped/recipes/accelerate/zero3.yaml" in shipped
    assert shipped <= names, sorted(shipped - names)


@pytest.mark.slow
def test_installed_wheel_runs_from_another_directory(wheel_env, tiny_model_dir):
    env, work, rl = wheel_env["env"], wheel_env["work"], wheel_env["rl"]
    probe = _run([str(wheel_env["venv"] / "bin" / "python"), "-c",
                  "import json, rl, rewards, rl.launch.shipped as s; "
                  "print(json.dumps([rl.__file__, rewards.__file__, str(s.shipped_root())]))"], work, env)
    for path in json.loads(probe.stdout):
        assert Path(path).is_relative_to(wheel_env["site"]), path  # the wheel's code and files, not the checkout's
        assert not Path(path).is_relative_to(ROOT), path

    listed = _run([rl, "recipes"], work, env).stdout
    assert "rpt/forking-rpt" in listed and "smoke/forking-qwen3-8b-dapo" in listed
    copied = _run([rl, "recipes", "copy", "--all", "-o", "recipes"], work, env).stdout
    assert "wrote recipes/accelerate/zero3.yaml" in copied and (work / "recipes" / "accelerate" / "README.md").is_file()
    again = _run([rl, "recipes", "copy", "rpt/forking-rpt", "-o", "recipes"], work, env).stdout
    assert "wrote" not in again and "unchanged recipes/rpt/forking-rpt.yaml" in again

    # `rl submit` runs the recipe's dry-run first: its corpus must exist, prepared as the header says.
    (work / "data").mkdir(exist_ok=True)
    (work / "data" / "omni-math.jsonl").write_text(
        json.dumps({"text": "Problem: What is 1 + 1?\n\nSolution: 1 + 1 = 2."}) + "\n", encoding="utf-8")
    script = _run([rl, "submit", "--config", "recipes/rpt/forking-rpt.yaml", "--nodes", "4", "--gpus-per-node", "8",
                   "--accelerate-config", "recipes/accelerate/zero3.yaml", "--dry-run"], work, env).stdout
    assert "#SBATCH --nodes=4" in script and f"ACCELERATE_CONFIG={work / 'recipes/accelerate/zero3.yaml'}" in script
    assert not list(work.glob("runs")), "a dry run writes nothing"

    math = work / "math.jsonl"
    math.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is {a} + 1?"}],
                                        "solution": str(a + 1)}) + "\n" for a in range(8)), encoding="utf-8")
    smoke = _run([rl, "train", "--config", "recipes/smoke/forking-qwen3-8b-dapo.yaml", "--dry-run",
                  "--model_name_or_path", str(tiny_model_dir), "--dataset_path", str(math)], work, env)
    assert "problems: none" in smoke.stdout + smoke.stderr
    # A paper recipe's header launch line names recipes/accelerate/zero3.yaml: it resolves from here.
    paper = _run([rl, "train", "--config", "recipes/rpt/r1-distill-qwen-14b.yaml", "--dry-run"], work, env, ok=False)
    out = paper.stdout + paper.stderr
    assert "recipes/accelerate/zero3.yaml: DeepSpeed ZeRO-3" in out and "file not found" not in out, out[-3000:]
