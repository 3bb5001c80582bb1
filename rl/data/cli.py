"""`rl data ...` subcommands (argument parsing only; the work is in rl/data/rpt.py)."""

from __future__ import annotations

import argparse

from rl.errors import UserError
from rl.runtime.values import NON_NEGATIVE_INT, POSITIVE_INT
from rl.data.estimate import estimate_build
from rl.data.settings import add_build_flags, config_from_args
from rl.data.shards import ShardPlan, shard_counts, shards_root

RPT_EXAMPLES = """examples:
  rl data rpt --corpus builtin:champ --proxy-model builtin:smollm2-135m-instruct --output runs/champ-rpt
  rl data rpt --corpus notes/ --proxy-model Qwen/Qwen3-1.7B --entropy full --min-entropy 1.0 --jsonl
  rl data rpt --corpus wiki.jsonl --proxy-model ./my-proxy --max-documents 1000 --max-per-doc 4
  rl data rpt --corpus posts.parquet --text-field content --id-field post_id --output runs/posts-rpt
  rl data rpt --corpus web/ --output runs/web-rpt --num-shards 8 --shard-index 3   # one of 8 shards
  accelerate launch --num_processes 8 -m rl.cli data rpt --corpus web/ --output runs/web-rpt  # 8 shards, 1 GPU each

A build writes its rows block by block into OUTPUT.shards/shard-I-of-N/ and, run again after a kill,
resumes at the block it reached. When every shard is finished they are merged into OUTPUT (the
same rows, order and files as one process) and removed; `rl data merge --output OUTPUT` merges by hand.

OUTPUT is a new directory, or a previous `rl data rpt` output (recognised by its rl-output.json,
replaced atomically when it holds nothing else); anything else needs --overwrite. It may not be
`.`, a directory above the current one, the corpus, inside the corpus, or the proxy model.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the examples' layout and show every option's default (unless the help already says it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.default not in (None, False, argparse.SUPPRESS) and "default" not in text
                and action.option_strings):
            text += " (default: %(default)s)"
        return text


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="build training data (rl data rpt --help)")
    data_sub = data.add_subparsers(dest="data_command", metavar="{rpt,rlp,merge}")
    data_sub.required = True
    p = data_sub.add_parser(
        "rpt",
        help="corpus -> next-token-prediction RL tasks at high-entropy positions",
        description="Build a Reinforcement Pre-Training dataset (arXiv 2506.08007): the proxy model scores "
        "every position of every document in batched windows; positions with high next-token entropy become "
        "tasks (prompt, context, continuation, boundaries, entropy, doc_id, position).",
        epilog=RPT_EXAMPLES,
        formatter_class=_HelpFormatter,
    )
    _add_build_args(p)
    p.set_defaults(func=run_rpt)
    r = data_sub.add_parser(
        "rlp",
        help="corpus -> RLP thought tasks (information-gain reward `rlp`)",
        description="Build RLP rows (arXiv 2510.01265): the same positions as `rl data rpt` (the proxy's "
        "next-token entropy filter, --min-entropy 0 for any position, at most --max-per-doc per document), "
        "with a thought prompt: chat models get an instruction to think about the next word and close with "
        "</think>; base models get the context followed by ' <think>'. The reward `rlp` scores the true next "
        "token after the thought.",
        epilog="examples:\n  rl data rlp --corpus builtin:champ --proxy-model builtin:smollm2-135m --output runs/champ-rlp\n",
        formatter_class=_HelpFormatter,
    )
    _add_build_args(r, rlp=True)
    r.set_defaults(func=run_rpt, format="rlp")
    m = data_sub.add_parser(
        "merge", help="merge the finished shards of a sharded rl data rpt/rlp build",
        description="Merge OUTPUT.shards/shard-*-of-N (every shard finished, same settings, unchanged corpus) into "
        "OUTPUT: the rows, order and files of a one-process build. The shards are removed afterwards.",
        formatter_class=_HelpFormatter)
    m.add_argument("--output", "-o", required=True, help="the OUTPUT the shards were built for")
    m.add_argument("--num-shards", type=POSITIVE_INT, default=None,
                   help="N of the shards to merge (default: the only N under OUTPUT.shards)")
    m.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT even when it holds files this command did not write (never an input)")
    m.add_argument("--jsonl", action="store_true", help="also write the rows as OUTPUT/rows.jsonl")
    m.set_defaults(func=run_merge)


def _add_build_args(p, rlp: bool = False) -> None:
    """Options of `rl data rpt` and `rl data rlp`: the inputs and output, and one flag per build setting
    (rl/data/settings.py; `rl data rlp` has no --format)."""
    p.add_argument("--corpus", required=True, help="builtin:champ, .txt file/dir, .jsonl/.parquet (text column), HF dataset dir")
    p.add_argument("--proxy-model", "--model", dest="proxy_model", default="builtin:smollm2-135m-instruct",
                   help="model whose next-token entropy picks positions (builtin:, hub id or local dir)")
    p.add_argument("--output", "-o", required=True,
                   help="output dir (datasets.save_to_disk format); see the rules below")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT even when it holds files this command did not write (never an input)")
    add_build_flags(p, skip=("format",) if rlp else ())
    p.add_argument("--num-shards", type=POSITIVE_INT, default=None,
                   help="build one of N shards (with --shard-index); default: WORLD_SIZE under accelerate/torchrun, else 1")
    p.add_argument("--shard-index", type=NON_NEGATIVE_INT, default=None,
                   help="which shard, 0 to N-1 (default: RANK under accelerate/torchrun)")
    p.add_argument("--jsonl", action="store_true", help="also write the rows as OUTPUT/rows.jsonl")
    p.add_argument("--dry-run", action="store_true",
                   help="check the settings and OUTPUT, print the shard plan (--num-shards N, default 1) and the "
                        "work per shard (documents, characters exact; tokens to score estimated from a sample); "
                        "no model is loaded, nothing is written")


def shard_plan(args):
    """(ShardPlan, device): the flags, else RANK/WORLD_SIZE of an accelerate/torchrun launch (one GPU
    per rank: LOCAL_RANK), else one shard."""
    import os

    if (args.num_shards is None) != (args.shard_index is None):
        raise UserError("--num-shards and --shard-index: give both (shard I of N) or neither")
    if args.num_shards is not None:
        return ShardPlan(args.num_shards, args.shard_index), None
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return ShardPlan(), None
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    import torch

    return ShardPlan(world, rank), (f"cuda:{local}" if torch.cuda.is_available() else None)


def run_rpt(args) -> int:
    from rl.data.rpt import build_rpt_dataset

    cfg = config_from_args(args, corpus=args.corpus, proxy_model=args.proxy_model)
    if getattr(args, "dry_run", False):
        return dry_run_rpt(args, cfg)
    plan, device = shard_plan(args)
    dataset, summary = build_rpt_dataset(cfg, args.output, jsonl=args.jsonl, overwrite=args.overwrite, plan=plan,
                                         device=device)
    if dataset is None and summary is None:
        print(f"{args.output} is built already from these settings and files: {plan.name} is not built again")
        return 0
    if dataset is None:
        print(summary.format())
        print(f"{plan.name} done; {args.output} is merged when every shard is (or: rl data merge --output {args.output})")
        return 0
    print(summary.format())
    for path in summary.files:
        print(f"wrote {path}")
    print(f"saved {len(dataset)} rows to {args.output}")
    return 0


def dry_run_rpt(args, cfg) -> int:
    """`rl data rpt --dry-run`: the checks of a build (settings, OUTPUT), then the shard plan and the work."""
    from rl.data.rpt import check_rpt_output

    if args.shard_index is not None and args.num_shards is None:
        raise UserError("--shard-index: give --num-shards too (shard I of N)")
    cfg.validate()
    check_rpt_output(cfg, args.output, overwrite=args.overwrite)
    print(estimate_build(cfg, args.num_shards or 1).format(args.output))
    print("dry run: nothing built, nothing written")
    return 0


def run_merge(args) -> int:
    from rl.data.rpt import merge_rpt_shards

    root = shards_root(args.output)
    counts = shard_counts(root)
    n = args.num_shards
    if n is None:
        if not counts:
            raise UserError(f"--output {args.output}: no shards to merge ({root} has no shard-*-of-* directory)")
        if len(counts) > 1:
            raise UserError(f"--output {args.output}: {root} holds shards of {counts} builds; pick one with --num-shards")
        n = counts[0]
    dataset, summary = merge_rpt_shards(args.output, n, jsonl=args.jsonl, overwrite=args.overwrite)
    if dataset is None:
        print(f"another process is merging {args.output}")
        return 0
    print(summary.format())
    for path in summary.files:
        print(f"wrote {path}")
    print(f"saved {len(dataset)} rows to {args.output}")
    return 0
