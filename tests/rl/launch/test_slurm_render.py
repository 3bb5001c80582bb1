"""rl/launch/slurm.py: rendering slurm/train.sbatch, secrets, quoting, submission, and the script's own logic.

The rendered script is also executed with fake `srun`/`scontrol`/python on PATH, which checks the
multi-node and vLLM-server command lines that the one-node test cluster cannot exercise.
"""

from __future__ import annotations

import argparse
import io
import re
import stat
import subprocess
from pathlib import Path

import pytest

from rl.launch import slurm
from rl.errors import UserError


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "grpo.yaml"
    path.write_text("output_dir: runs/grpo\nmodel_name_or_path: Qwen/Qwen3-0.6B\nlearning_rate: 1.0e-6\n")
    return path


def render(recipe, **kw):
    kw.setdefault("workdir", recipe.parent)
    kw.setdefault("environ", {})
    return slurm.render_sbatch(recipe, **kw)


def header(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]


def bash_array(text: str, name: str = "TRAIN_ARGS") -> list[str]:
    """Evaluate the rendered `NAME=(...)` line in bash and return the array's elements."""
    line = next(ln for ln in text.splitlines() if ln.startswith(f"{name}=("))
    out = subprocess.run(["bash", "-c", f'{line}\nprintf "%s\\0" "${{{name}[@]}}"'], capture_output=True,
                         text=True, check=True).stdout
    return out.split("\0")[:-1]


def test_gpu_header(recipe, tmp_path):
    text = render(recipe, nodes=4, gpus_per_node=8, partition="gpu", time="2-00:00:00", account="proj1",
                  cpus_per_task=64, signal_seconds=300)
    out = tmp_path / "runs" / "grpo"
    assert header(text) == [
        "#SBATCH --job-name=rl-grpo", "#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=64", "#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu",
        "#SBATCH --account=proj1", "#SBATCH --time=2-00:00:00", f"#SBATCH --output={out}/slurm/%x-%j.out",
        "#SBATCH --open-mode=append", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@300"]
    assert "{{" not in text and "}}" not in text
    assert f"RUN_DIR={out}\n" in text and "CPU_MODE=0\n" in text and "PROCS_PER_NODE=8\n" in text
    assert bash_array(text) == ["train", "--config", str(recipe), "--resume_from_checkpoint", "auto"]


def test_optional_lines_dropped_and_cpu_mode(recipe):
    text = render(recipe, nodes=1, cpu=True)
    lines = header(text)
    assert not any(k in ln for ln in lines for k in ("--gpus", "--partition", "--account", "--time"))
    assert "#SBATCH --cpus-per-task=2" in lines and "#SBATCH --signal=B:USR1@180" in lines
    assert "CPU_MODE=1\n" in text and "PROCS_PER_NODE=2\n" in text
    assert "ACCELERATE_USE_CPU=1" in text and "LAUNCH+=(--multi_gpu)" in text and "--mixed_precision no" in text


@pytest.mark.parametrize("kw", [dict(nodes=2, gpus_per_node=4), dict(nodes=1, cpu=True),
                                dict(nodes=3, gpus_per_node=8, vllm_server_node=True, partition="p")])
def test_bash_syntax(recipe, tmp_path, kw):
    script = tmp_path / "job.sbatch"
    script.write_text(render(recipe, overrides=["--run_name", "a b; $(rm -rf /)"], **kw))
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_overrides_quoted_safely(recipe):
    nasty = ["--run_name", "it's $HOME; `touch /tmp/pwned` \"q\"", "--beta=0.1", "--learning_rate", "1e-5"]
    text = render(recipe, nodes=1, cpu=True, overrides=nasty)
    assert bash_array(text) == ["train", "--config", str(recipe), *nasty, "--resume_from_checkpoint", "auto"]
    given = render(recipe, nodes=1, cpu=True, overrides=["--resume_from_checkpoint", "/ckpt/checkpoint-5"])
    assert bash_array(given)[-2:] == ["--resume_from_checkpoint", "/ckpt/checkpoint-5"]
    assert bash_array(given).count("--resume_from_checkpoint") == 1


def test_no_secrets_written(recipe):
    env = {"WANDB_API_KEY": "wandb-0123456789abcdef", "HF_TOKEN": "hf_abcdefghijklmnop", "HOME": "/root"}
    text = render(recipe, nodes=1, cpu=True, environ=env)
    assert "wandb-0123456789abcdef" not in text and "hf_abcdefghijklmnop" not in text
    with pytest.raises(UserError, match=r"\$WANDB_API_KEY") as e:
        render(recipe, nodes=1, cpu=True, environ=env, overrides=["--wandb_key", "wandb-0123456789abcdef"])
    assert "0123456789abcdef" not in str(e.value)
    with pytest.raises(UserError, match=r"\$MY_SERVICE_PASSWORD"):  # any secret-looking name
        render(recipe, nodes=1, cpu=True, environ={"MY_SERVICE_PASSWORD": "hunter2hunter2"},
               overrides=["--x", "hunter2hunter2"])


def test_secret_check_uses_process_environment(recipe, monkeypatch):
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_zzzzzzzzzzzzzzzz")
    with pytest.raises(UserError, match="HUGGING_FACE_HUB_TOKEN"):
        slurm.render_sbatch(recipe, nodes=1, cpu=True, workdir=recipe.parent, overrides=["hf_zzzzzzzzzzzzzzzz"])


def test_run_dir_sources(recipe, tmp_path):
    text = render(recipe, nodes=1, cpu=True, overrides=["--output_dir=/scratch/other"])
    assert "RUN_DIR=/scratch/other\n" in text
    text = render(recipe, nodes=1, cpu=True, run_dir="elsewhere")
    assert f"RUN_DIR={tmp_path / 'elsewhere'}\n" in text
    assert bash_array(text)[3:5] == ["--output_dir", str(tmp_path / "elsewhere")]  # the trainer writes there too
    out = io.StringIO()
    slurm.submit(recipe, nodes=1, cpu=True, run_dir="elsewhere", workdir=tmp_path, dry_run=True, out=out)
    assert f"RUN_DIR={tmp_path / 'elsewhere'}\n" in out.getvalue() and not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("kw, message", [
    (dict(nodes=1), "--gpus-per-node"),
    (dict(nodes=0, cpu=True), "--nodes"),
    (dict(nodes=1, cpu=True, partition="gpu a100"), "--partition"),
    (dict(nodes=1, cpu=True, account="$(id)"), "--account"),
    (dict(nodes=1, cpu=True, time="two hours"), "--time"),
    (dict(nodes=1, gpus_per_node=8, vllm_server_node=True), "needs --nodes >= 2"),
    (dict(nodes=1, cpu=True, accelerate_config="missing.yaml"), "--accelerate-config"),
])
def test_bad_input_is_user_error(recipe, kw, message):
    with pytest.raises(UserError, match=re.escape(message)):
        render(recipe, **kw)


def test_recipe_errors(tmp_path):
    with pytest.raises(UserError, match="recipe file not found"):
        slurm.render_sbatch(tmp_path / "nope.yaml", nodes=1, cpu=True)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(UserError, match="YAML mapping"):
        slurm.render_sbatch(bad, nodes=1, cpu=True)
    no_out = tmp_path / "no_out.yaml"
    no_out.write_text("learning_rate: 1.0\n")
    with pytest.raises(UserError, match="no output_dir"):
        slurm.render_sbatch(no_out, nodes=1, cpu=True)
    with pytest.raises(UserError, match="model_name_or_path"):
        slurm.render_sbatch(no_out, nodes=2, gpus_per_node=1, run_dir=tmp_path, vllm_server_node=True)


def test_template_placeholders_must_have_values():
    with pytest.raises(KeyError, match="NOPE"):
        slurm.fill_template("echo {{NOPE}}\n", {})
    filled = slurm.fill_template("#SBATCH --a={{A}}\n#SBATCH --b={{B}}\necho {{B}} {{C}}\n",
                                 {"A": None, "B": "x", "C": ["y z", "$w"]})
    assert filled == "#SBATCH --b=x\necho x 'y z' '$w'\n"  # None drops a header line; body values quoted


def executable(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_submit_writes_script_and_calls_sbatch(recipe, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    executable(bindir / "sbatch", f'#!/bin/bash\necho "$@" > {tmp_path}/sbatch-args\necho "4242;cluster"\n')
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "WANDB_API_KEY": "wandb-secret-xyz-123"}
    out = io.StringIO()
    job = slurm.submit(recipe, nodes=1, cpu=True, workdir=tmp_path, env=env, out=out)
    assert job == "4242"
    scripts = list((tmp_path / "runs" / "grpo" / "slurm").glob("train-*.sbatch"))
    assert len(scripts) == 1
    assert (tmp_path / "sbatch-args").read_text().split() == ["--parsable", str(scripts[0])]
    assert f"SCRIPT={scripts[0]}\n" in scripts[0].read_text()
    assert "submitted job 4242" in out.getvalue()
    assert str(tmp_path / "runs" / "grpo" / "slurm" / "rl-grpo-4242.out") in out.getvalue()
    slurm.submit(recipe, nodes=1, cpu=True, workdir=tmp_path, env=env, out=io.StringIO())
    assert len(list((tmp_path / "runs" / "grpo" / "slurm").glob("train-*.sbatch"))) == 2  # never overwritten

    executable(bindir / "sbatch", "#!/bin/bash\necho 'sbatch: error: invalid partition' >&2\nexit 1\n")
    with pytest.raises(UserError, match="invalid partition"):
        slurm.submit(recipe, nodes=1, cpu=True, workdir=tmp_path, env=env, out=io.StringIO())
    with pytest.raises(UserError, match="sbatch: not found"):
        slurm.submit(recipe, nodes=1, cpu=True, workdir=tmp_path, env={"PATH": str(tmp_path / "empty")})


def _with_data(recipe: Path) -> Path:
    """The fixture recipe plus a small RPT dataset, so `rl train --dry-run` finds nothing to refuse."""
    from tests.faults.helpers import rpt_rows, write_jsonl

    data = write_jsonl(recipe.parent / "data.jsonl", rpt_rows())
    recipe.write_text(recipe.read_text() + f"dataset_path: {data}\nper_device_train_batch_size: 8\n"
                      "num_generations: 8\n")
    return recipe


def _submit_cli(argv) -> int:
    from rl.cli import main

    return main(["submit", *argv])


def test_cli_dry_run(recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _with_data(recipe)
    parser = argparse.ArgumentParser()
    slurm.register(parser.add_subparsers())
    args = parser.parse_args(["submit", "--config", str(recipe), "--cpu", "--time", "01:00:00", "--dry-run",
                              "--", "--learning_rate", "2e-6", "--run_name=x y"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "#SBATCH --time=01:00:00" in text
    assert bash_array(text)[3:7] == ["--learning_rate", "2e-6", "--run_name=x y", "--resume_from_checkpoint"]
    assert not (tmp_path / "runs").exists()  # dry run writes nothing


FAKE_SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$FAKE_LOG"
case "$1 $2" in
  "show hostnames") printf 'gpu-a\\ngpu-b\\ngpu-c\\n' ;;
  # a node's address differs from its name (it need not resolve on other nodes): the script uses it
  "show node") echo "NodeName=$3 Arch=x86_64 NodeAddr=10.0.0.${3#gpu-} NodeHostName=$3" ;;
  requeue\ *) exit "${FAKE_REQUEUE_RC:-0}" ;;
esac
"""
# srun: record the step; run the training step's task as node rank 1 (SLURM_PROCID=1).
FAKE_SRUN = """#!/bin/bash
printf '%s\\0' "$@" > "$FAKE_DIR/srun-$(date +%s%N)"
while [ $# -gt 0 ] && [ "$1" != bash ]; do shift; done
if [ $# -gt 0 ]; then SLURM_PROCID=1 exec "$@"; fi
"""
# The rendered PYTHON: record argv (accelerate launch args), maybe write the preemption marker.
FAKE_PYTHON = """#!/bin/bash
# the job's wait for the vLLM server's /health (rl/launch/vllm_server.py): record it, answer FAKE_HEALTH_RC
if [ "${2:-}" = rl.launch.vllm_server ]; then
    printf '%s\\0' "$@" > "$FAKE_DIR/health-args"
    if [ "${FAKE_HEALTH_RC:-0}" != 0 ]; then echo "error: vLLM server not healthy; see its log" >&2; fi
    exit "${FAKE_HEALTH_RC:-0}"
fi
# the vLLM srun runs in the background: let it record itself before the script kills it
for i in $(seq 200); do [ "$(ls "$FAKE_DIR" | grep -c '^srun-')" -ge "${FAKE_SRUNS:-1}" ] && break; sleep 0.05; done
printf '%s\\0' "$@" > "$FAKE_DIR/python-args"
if [ -n "${FAKE_PREEMPT:-}" ]; then echo '{"step": 7}' > "$RL_PREEMPT_MARKER"; fi
"""


@pytest.fixture
def fake_slurm(tmp_path):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    executable(bindir / "scontrol", FAKE_SCONTROL)
    executable(bindir / "srun", FAKE_SRUN)
    python = executable(bindir / "fake-python", FAKE_PYTHON)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "FAKE_DIR": str(tmp_path), "FAKE_LOG": str(tmp_path / "log"),
           "SLURM_JOB_ID": "123", "SLURM_NNODES": "3", "SLURM_JOB_NODELIST": "gpu-[a-c]"}
    return python, env


def run_script(text: str, tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)


def srun_calls(tmp_path: Path) -> list[list[str]]:
    return [p.read_text().split("\0")[:-1] for p in sorted(tmp_path.glob("srun-*"))]


def test_script_multi_node_vllm_command_lines(recipe, tmp_path, fake_slurm):
    python, env = fake_slurm
    text = render(recipe, nodes=3, gpus_per_node=8, vllm_server_node=True, python=str(python))
    proc = run_script(text, tmp_path, {**env, "FAKE_SRUNS": "2"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = srun_calls(tmp_path)
    assert len(calls) == 2
    [vllm] = [c for c in calls if "vllm-serve" in c]
    [train] = [c for c in calls if "vllm-serve" not in c]
    assert vllm[:4] == ["--nodes=1", "--ntasks=1", "--nodelist=gpu-a", "--gpus-per-node=8"]
    assert vllm[5:] == ["-m", "trl.cli.main", "vllm-serve", "--model", "Qwen/Qwen3-0.6B", "--tensor_parallel_size", "8"]
    assert train[:5] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--exclude=gpu-a", "--gpus-per-node=8"]
    launch = (tmp_path / "python-args").read_text().split("\0")[:-1]
    port = str(20000 + (123 * 10) % 20000)
    assert launch == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2", "--machine_rank", "1",
                      "--main_process_ip", "10.0.0.b", "--main_process_port", port, "--num_processes", "16",
                      "-m", "rl.cli", "train", "--config", str(recipe), "--resume_from_checkpoint", "auto",
                      "--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_host", "10.0.0.a"]
    assert "requeue" not in (tmp_path / "log").read_text()
    health = (tmp_path / "health-args").read_text().split("\0")[:-1]
    vllm_log = str(recipe.parent / "runs" / "grpo" / "slurm" / "vllm-123.log")
    assert health == ["-m", "rl.launch.vllm_server", "--url", "http://10.0.0.a:8000/health", "--timeout", "240",
                      "--log", vllm_log, "--pid", health[-1]]
    assert "vLLM server on gpu-a" in Path(vllm_log).read_text()  # the server's own log, not the job's


def test_script_passes_recipe_vllm_settings_to_the_server(recipe, tmp_path, fake_slurm):
    """Every recipe vLLM setting reaches `trl vllm-serve`, parsed here by TRL 1.16's own vllm-serve parser."""
    from trl.scripts.vllm_serve import make_parser

    python, env = fake_slurm
    recipe.write_text(recipe.read_text() + "vllm_max_model_length: 4096\nvllm_gpu_memory_utilization: 0.85\n"
                      "vllm_tensor_parallel_size: 2\nvllm_server_data_parallel_size: 2\nvllm_server_dtype: bfloat16\n"
                      "vllm_server_enable_prefix_caching: true\nvllm_server_port: 8123\nvllm_server_timeout: 900\n")
    text = render(recipe, nodes=3, gpus_per_node=4, vllm_server_node=True, python=str(python))
    proc = run_script(text, tmp_path, {**env, "FAKE_SRUNS": "2"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [vllm] = [c for c in srun_calls(tmp_path) if "vllm-serve" in c]
    served = vllm[vllm.index("vllm-serve") + 1:]
    (args,) = make_parser().parse_args_and_config(args=served)
    assert (args.model, args.max_model_len, args.gpu_memory_utilization, args.tensor_parallel_size,
            args.data_parallel_size, args.dtype, args.enable_prefix_caching, args.port) == \
        ("Qwen/Qwen3-0.6B", 4096, 0.85, 2, 2, "bfloat16", True, 8123)
    health = (tmp_path / "health-args").read_text().split("\0")[:-1]
    assert health[3:6] == ["http://10.0.0.a:8123/health", "--timeout", "900"]


def test_script_stops_when_the_server_is_not_healthy(recipe, tmp_path, fake_slurm):
    python, env = fake_slurm
    text = render(recipe, nodes=3, gpus_per_node=8, vllm_server_node=True, python=str(python))
    proc = run_script(text, tmp_path, {**env, "FAKE_HEALTH_RC": "1"})
    assert proc.returncode == 1
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
        "error: vLLM server not healthy; see its log"]
    assert not [c for c in srun_calls(tmp_path) if "vllm-serve" not in c]  # training never started
    assert not (tmp_path / "python-args").exists()


def test_script_cpu_mode_and_accelerate_config(recipe, tmp_path, fake_slurm):
    python, env = fake_slurm
    cfg = tmp_path / "ds.yaml"
    cfg.write_text("distributed_type: DEEPSPEED\n")
    env = {**env, "SLURM_NNODES": "1", "SLURM_JOB_NODELIST": "gpu-a"}
    proc = run_script(render(recipe, nodes=1, gpus_per_node=4, accelerate_config=cfg, python=str(python)),
                      tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    launch = (tmp_path / "python-args").read_text().split("\0")[:-1]
    assert launch[:4] == ["-m", "accelerate.commands.launch", "--config_file", str(cfg)]
    assert "--multi_gpu" not in launch and launch[launch.index("--num_processes") + 1] == "4"
    proc = run_script(render(recipe, nodes=1, cpu=True, python=str(python)), tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    launch = (tmp_path / "python-args").read_text().split("\0")[:-1]
    assert launch[2:5] == ["--multi_gpu", "--mixed_precision", "no"]
    assert launch[launch.index("--num_processes") + 1] == "2"
    assert not any(a.startswith("--gpus") for a in srun_calls(tmp_path)[-1])
    # one CPU process in all: accelerate refuses --multi_gpu below 2 processes ("at least 2 processes")
    proc = run_script(render(recipe, nodes=1, cpu=True, procs_per_node=1, python=str(python)), tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    launch = (tmp_path / "python-args").read_text().split("\0")[:-1]
    assert launch[2:4] == ["--mixed_precision", "no"] and "--multi_gpu" not in launch
    assert launch[launch.index("--num_processes") + 1] == "1"


def test_script_requeues_when_trainer_leaves_marker(recipe, tmp_path, fake_slurm):
    python, env = fake_slurm
    text = render(recipe, nodes=3, gpus_per_node=8, python=str(python))
    proc = run_script(text, tmp_path, {**env, "FAKE_PREEMPT": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "scontrol requeue 123" in (tmp_path / "log").read_text()
    assert "preempted:" in proc.stdout
    proc = run_script(text, tmp_path, {**env, "FAKE_PREEMPT": "1", "FAKE_REQUEUE_RC": "1"})
    assert proc.returncode == 75 and "requeue failed" in proc.stderr
    (tmp_path / "log").unlink()
    proc = run_script(text, tmp_path, env)  # a stale marker from the previous run is removed first
    assert proc.returncode == 0 and "requeue" not in (tmp_path / "log").read_text()


@pytest.mark.parametrize("extra, message", [
    ("learning_rat: 1.0e-6\n", "unknown field 'learning_rat'; did you mean 'learning_rate'?"),
    ("top_entropy_quantile: 1.5\n", "top_entropy_quantile"),
    ("max_steps: -3\n", "max_steps: must be a positive number"),
])
def test_submit_runs_the_dry_run_checks_first(recipe, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    recipe.write_text(_with_data(recipe).read_text() + extra)
    assert _submit_cli(["--config", str(recipe), "--cpu", "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing rendered
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err


@pytest.mark.parametrize("nodes, procs, world", [("2", "1", "1"), ("3", "2", "4")])
def test_submit_cpu_vllm_server_node_checks_the_training_world(recipe, tmp_path, monkeypatch, capsys, nodes, procs,
                                                               world):
    """`--cpu --vllm-server-node`: the dry-run check sees the training ranks only ((nodes - 1) x procs per node;
    the server node runs none). It once counted every node and, with --vllm-server-node, no --nodes, so the
    dry run took the job for one node that the server takes whole and refused every CPU server-node job."""
    from rl.train.preflight import dryrun

    monkeypatch.chdir(tmp_path)
    seen, real = [], dryrun.dry_run
    monkeypatch.setattr(dryrun, "dry_run", lambda argv: seen.append(argv) or real(argv))
    argv = ["--config", str(_with_data(recipe)), "--cpu", "--nodes", nodes, "--procs-per-node", procs,
            "--vllm-server-node", "--dry-run"]
    assert _submit_cli(argv) == 0, capsys.readouterr().err
    assert "VLLM_SERVER_NODE=1" in capsys.readouterr().out
    [checked] = seen
    assert checked[checked.index("--num_processes") + 1] == world and checked[checked.index("--nodes") + 1] == nodes


@pytest.mark.parametrize("flag", ["--procs-per-node", "--cpus-per-task", "--nodes"])
def test_submit_zero_counts_are_refused(recipe, tmp_path, monkeypatch, capsys, flag):
    monkeypatch.chdir(tmp_path)
    assert _submit_cli(["--config", str(_with_data(recipe)), "--cpu", flag, "0", "--dry-run"]) == 2
    assert f"error: {flag}: must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("run_dir, message", [
    (".", "is the current directory"), ("..", "above the current one"), ("data.jsonl", "dataset_path itself"),
    ("notes.txt", "existing file, not a directory"), ("grpo.yaml", "recipe itself"),
])
def test_submit_run_dir_never_an_input_or_cwd(recipe, tmp_path, monkeypatch, capsys, run_dir, message):
    monkeypatch.chdir(tmp_path)
    _with_data(recipe)
    (tmp_path / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=re.escape(message)):
        slurm.submit(recipe, nodes=1, cpu=True, run_dir=run_dir, workdir=tmp_path, dry_run=True, out=io.StringIO())
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_submit_into_an_existing_dir_keeps_the_users_files(recipe, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    executable(bindir / "sbatch", '#!/bin/bash\necho "77"\n')
    run = tmp_path / "mine"
    (run / "slurm").mkdir(parents=True)
    (run / "thesis.tex").write_text("years of work")
    (run / "slurm" / "notes.txt").write_text("mine")
    out = io.StringIO()
    slurm.submit(recipe, nodes=1, cpu=True, run_dir="mine", workdir=tmp_path, env={"PATH": f"{bindir}:/usr/bin:/bin"},
                 out=out)
    assert (run / "thesis.tex").read_text() == "years of work" and (run / "slurm" / "notes.txt").read_text() == "mine"
    script = next((run / "slurm").glob("train-*.sbatch"))
    assert f"wrote {script}" in out.getvalue()


def test_duplicate_recipe_key_is_refused_with_its_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("output_dir: runs/a\nlearning_rate: 1.0e-6\nbeta: 0.0\nlearning_rate: 1.0e-3\n")
    with pytest.raises(UserError, match=r"dup.yaml:4: key 'learning_rate' appears twice \(lines 2 and 4\)"):
        slurm.load_recipe(path)


def test_submit_help_documents_every_flag(capsys):
    parser = argparse.ArgumentParser()
    sub = slurm.register(parser.add_subparsers())
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help text"


def test_submit_reads_the_recipes_launch_section_and_flags_win(recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _with_data(recipe)
    recipe.write_text(recipe.read_text() + "launch:\n  nodes: 2\n  cpu: true\n  time: '02:00:00'\n  job_name: from-recipe\n")
    assert _submit_cli(["--config", str(recipe), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "#SBATCH --nodes=2" in text and "#SBATCH --time=02:00:00" in text and "#SBATCH --job-name=from-recipe" in text
    assert _submit_cli(["--config", str(recipe), "--time", "01:00:00", "--nodes", "1", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "#SBATCH --nodes=1" in text and "#SBATCH --time=01:00:00" in text  # the command line wins


def test_submit_refuses_a_bad_launch_section_in_one_line(recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe.write_text(recipe.read_text() + "launch:\n  gpu_per_node: 8\n")
    assert _submit_cli(["--config", str(recipe), "--dry-run"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "launch.gpu_per_node: not an rl submit setting; did you mean 'gpus_per_node'?" in line
