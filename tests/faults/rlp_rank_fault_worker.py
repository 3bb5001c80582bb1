"""One rank of `rl train` (under `accelerate launch`, 2 CPU ranks) whose `rlp` reward fails on rank 1 only,
for tests/faults/test_policy_reward_ranks.py.

    accelerate launch --config_file recipes/accelerate/ddp.yaml --num_processes 2 ... \
        tests/faults/rlp_rank_fault_worker.py -- train --config R.yaml

On rank 1 the policy scorer raises while it prepares its rows (`RLPScorer.thought_ids`); everything else is
the real CLI, trainer, reward wrapper and scorer. Each rank leaves with the CLI's exit status.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    rl_argv = argv[argv.index("--") + 1:] if "--" in argv else argv
    from rl.runtime.cpu_distributed import apply_cpu_workarounds

    apply_cpu_workarounds()
    if os.environ.get("RANK") == "1":
        from rl.train.rlp_trainer import RLPScorer

        def broken(self, *args, **kwargs):
            raise ValueError("injected scorer failure on rank 1")

        RLPScorer.thought_ids = broken
    from rl.cli import main as rl_main

    return rl_main(rl_argv)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    code = main(sys.argv[1:])
    import atexit

    atexit._run_exitfuncs()  # gloo teardown (rl/runtime/cpu_distributed.py), then no interpreter finalization
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
