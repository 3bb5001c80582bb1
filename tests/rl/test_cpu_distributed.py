"""rl/cpu_distributed.py item 4: a CPU rank that finished exits with its own code even if finalization would abort.

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

ROOT = Path(__file__).resolve().parents[2]

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
