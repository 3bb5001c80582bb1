"""The `rl` console command: argument parsing and dispatch only.

Each subcommand lives in its own module exposing `register(subparsers)`, which adds a parser with
`set_defaults(func=...)`. Heavy imports (torch, transformers) happen inside those funcs, so
`rl --help` stays fast. A `UserError` anywhere becomes one `error: ...` line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rl.errors import UserError
from rl.runtime.cpu_distributed import exit_process
from rl.runtime.outputs import check_outputs_spare_inputs
from rl.runtime.values import non_finite_options

# Order = order in `rl --help`.
SUBCOMMAND_MODULES = ["rl.data.cli", "rl.train.command", "rl.sft.command", "rl.train.merge", "rl.eval.cli", "rl.prune.cli",
                      "rl.launch.slurm", "rl.launch.recipes"]

EPILOG = """examples:
  rl data rpt --corpus builtin:champ --output runs/champ-rpt      # RPT tasks from a corpus
  rl train --config recipes/rpt_smollm2_cpu.yaml                  # train with TRL GRPO + RPT reward
  rl train --config recipes/rpt_smollm2_cpu.yaml --learning_rate 1e-6 --max_steps 10
  rl merge runs/lora -o runs/lora-merged                         # a LoRA run's adapter -> a full model
  rl prune --data builtin:champ --model builtin:smollm2-135m-instruct --mode approx --limit 20 -o runs/prune
  rl submit --config recipes/rpt_smollm2_cpu.yaml --nodes 2 --gpus-per-node 8 --dry-run
  rl recipes copy rpt_smollm2_cpu -o recipes                      # the shipped recipes, to edit
"""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `error: rl prune: MESSAGE (rl prune --help)`, naming the subcommand
    whose parser found the problem (the usage stays in --help). Subparsers inherit the class."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`)")

    def parse_known_args(self, args=None, namespace=None):
        parsed, extra = super().parse_known_args(args, namespace)
        if not hasattr(parsed, "rl_parser"):  # the innermost (sub)parser sets it first
            parsed.rl_parser = self
        return parsed, extra


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rl",
        description="entropy-rl: RL for language models from next-token entropy (RPT reward, forking-token mask).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parse(parser: Parser, argv: list[str]) -> argparse.Namespace:
    """Parse `argv`, then the checks every subcommand shares, before any work: unknown flags (named with the
    subcommand), numbers finite (rl/runtime/values.py), outputs never an input (rl/runtime/outputs.py)."""
    # `rl train` passes unknown flags through to TRL's parser (recipe overrides); others reject them.
    args, extra = parser.parse_known_args(argv)
    sub = getattr(args, "rl_parser", parser)
    if extra and not getattr(args, "accepts_extra", False):
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    bad = non_finite_options(args, sub)
    if bad:
        sub.error(f"{bad[0].split()[0]}: must be a finite number, got {bad[0].split()[1]}")
    check_outputs_spare_inputs(args, sub)
    args.extra = extra
    return args


def run() -> None:
    """The `rl` console script and `python -m rl.cli`: main(), then exit (rl/runtime/cpu_distributed.py, item 4)."""
    exit_process(main())


if __name__ == "__main__":
    run()
