"""`rl submit`'s flags, in a leaf module: the submit command and the dry run (which reads a recipe's
`rl submit ...` launch line with the same parser) both build their parser from here."""

from __future__ import annotations

import argparse

DEFAULT_SIGNAL_SECONDS = 180


def add_submit_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `rl submit`'s flags (and the trailing `-- overrides`) to `p`."""
    p.add_argument("--config", required=True, help="recipe YAML")
    p.add_argument("--nodes", type=int, default=1, help="nodes to train on (default 1)")
    p.add_argument("--gpus-per-node", type=int, help="GPUs (= training ranks) per node; required unless --cpu")
    p.add_argument("--partition", help="Slurm partition (queue) to submit to (default: the cluster's default)")
    p.add_argument("--time", help="time limit (HH:MM:SS or D-HH:MM:SS)")
    p.add_argument("--account", help="Slurm account to charge (default: your default account)")
    p.add_argument("--accelerate-config", help="accelerate config file (e.g. a DeepSpeed one)")
    p.add_argument("--run-dir", help="output directory of this run: checkpoints, logs, the script "
                   "(default: the recipe's output_dir; passed to rl train as --output_dir)")
    p.add_argument("--cpu", action="store_true", help="no GPUs: gloo ranks (tests)")
    p.add_argument("--procs-per-node", type=int, help="training ranks per node (default: GPUs per node; 2 with --cpu)")
    p.add_argument("--cpus-per-task", type=int, help="CPU cores per training rank (default: Slurm's; with --cpu: "
                   "--procs-per-node)")
    p.add_argument("--signal-seconds", type=int, default=DEFAULT_SIGNAL_SECONDS,
                   help="send SIGUSR1 this long before the time limit (checkpoint + requeue)")
    p.add_argument("--job-name", help="Slurm job name (default: rl-<recipe file stem>)")
    p.add_argument("--vllm-server-node", action="store_true",
                   help="run `trl vllm-serve` on the first node; train on the others")
    p.add_argument("--dry-run", action="store_true", help="print the script; write and submit nothing")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="-- then `rl train` overrides")
    return p
