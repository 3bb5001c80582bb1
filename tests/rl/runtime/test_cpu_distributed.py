"""rl/runtime/cpu_distributed.py item 4: a CPU rank that finished exits with its own code even if finalization would abort.

The abort itself (torch's C++ teardown racing interpreter finalization, intermittent) cannot be
provoked on demand, so a stand-in does the same thing at the same moment: an object whose
`__del__` calls `os.abort()` when the interpreter tears its modules down, i.e. after the atexit
handlers. Run through `rl.cli.run()` (the console script and `python -m rl.cli`), with a stubbed
`main` so no training is needed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent("""
    import atexit, builtins, os, sys
    import torch  # noqa: F401 - a real rank has it loaded
    import rl.cli

    class AbortAtFinalization:
        def __del__(self):
            os.abort()  # what torch's teardown does to an unlucky rank ("terminate called ...")

    def fake_main():
        builtins._abort_at_finalization = AbortAtFinalization()  # torn down after the atexit handlers
        atexit.register(lambda: print("atexit handlers ran", flush=True))
        sys.stdout.write("trained and saved (unflushed)\\n")
        return int(os.environ["FAKE_RC"])

    rl.cli.main = fake_main
    rl.cli.run()
""")


def _run(rc: int, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LOCAL_RANK", "WORLD_SIZE", "RANK", "ENTROPY_RL_NO_CPU_WORKAROUNDS"))}
    env.update(PYTHONPATH=str(ROOT), FAKE_RC=str(rc), CUDA_VISIBLE_DEVICES="", **env_extra)
    return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)


RANK = {"LOCAL_RANK": "1", "WORLD_SIZE": "2"}


def test_stand_in_aborts_without_the_fast_exit():
    """The stand-in really aborts at finalization (so the next test can fail)."""
    proc = _run(0, ENTROPY_RL_NO_CPU_WORKAROUNDS="1", **RANK)
    assert proc.returncode == -signal.SIGABRT, (proc.returncode, proc.stderr[-2000:])


def test_successful_cpu_rank_exits_zero_after_atexit_and_flush():
    proc = _run(0, **RANK)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.splitlines() == ["trained and saved (unflushed)", "atexit handlers ran"]


def test_failed_cpu_rank_keeps_its_own_code():
    proc = _run(2, **RANK)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "atexit handlers ran" in proc.stdout


def test_single_process_exit_is_plain():
    """Outside a multi-process launch nothing changes: normal finalization (where the stand-in aborts)."""
    proc = _run(0)
    assert proc.returncode == -signal.SIGABRT, (proc.returncode, proc.stderr[-2000:])
    assert "atexit handlers ran" in proc.stdout


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.deepspeed
@pytest.mark.timeout(600)
def test_real_zero3_two_rank_cli_run_exits_zero(tmp_path, tiny_model_dir):
    """The real path: `accelerate launch ... -m rl.cli train` (as slurm/train.sbatch runs it), ZeRO-3, 2 CPU ranks."""
    pytest.importorskip("deepspeed")
    import json

    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is {a} + 1?"}],
                                        "solution": str(a + 1)}) + "\n" for a in range(8)), encoding="utf-8")
    out = tmp_path / "run"
    from tests.ranks import launch_ranks

    proc = launch_ranks(["-m", "rl.cli", "train",
                         "--config", str(ROOT / "recipes" / "smoke" / "forking-qwen3-8b-dapo.yaml"),
                         "--model_name_or_path", str(tiny_model_dir), "--dataset_path", str(data),
                         "--output_dir", str(out), "--gradient_accumulation_steps", "1",
                         "--per_device_train_batch_size", "2",
                         # a random tiny model scores 0 on every math problem: dynamic sampling (the
                         # recipe's, as the paper ran it) would rightly stop the run before step 1
                         "--dynamic_sampling", "false"], config="zero3", cwd=tmp_path, timeout=540)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert (out / "model.safetensors").is_file() and (out / "checkpoint-2" / "COMPLETE").is_file()
    assert "terminate called" not in log and "gradient_checkpointing" not in log
