"""`python -m rl.train.preflight` / `rl train --dry-run`: print the report, exit 0 without problems, else 2."""

from __future__ import annotations

import sys

from rl.train import preflight
from rl.train.preflight.dryrun import dry_run

DRY_RUN_EXAMPLES = """examples:
  rl train --config recipes/forking/qwen3-8b-dapo.yaml --dry-run
  rl train --config recipes/rpt/r1-distill-qwen-14b.yaml --dry-run --nodes 8 --gpus-per-node 8
  rl train --config R.yaml --dry-run --accelerate_config recipes/accelerate/zero2.yaml --num_processes 8
"""


def main(argv: list[str] | None = None) -> int:
    """Print the dry-run report of `--config RECIPE [overrides] [dry-run flags]`; 0 if no problems, else 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(preflight.__doc__.split("\n\n")[0] + "\n\nflags: --config R [--nodes N --gpus-per-node G "
              "[--vllm-server-node]] [--num_processes N] [--accelerate_config PATH] [--<recipe field> VALUE ...]\n\n"
              + DRY_RUN_EXAMPLES)
        return 0
    report = dry_run(argv)
    sys.stdout.write(report.format())
    sys.stdout.flush()
    return report.exit_code
