"""`rl data ...` subcommands (argument parsing only; the work is in rl/data/rpt.py)."""

from __future__ import annotations

import argparse

from rl.data.settings import add_build_flags

RPT_EXAMPLES = """examples:
  rl data rpt --corpus builtin:champ --proxy-model builtin:smollm2-135m-instruct --output runs/champ-rpt
  rl data rpt --corpus notes/ --proxy-model Qwen/Qwen3-1.7B --entropy full --min-entropy 1.0 --jsonl
  rl data rpt --corpus wiki.jsonl --proxy-model ./my-proxy --max-documents 1000 --max-per-doc 4
  rl data rpt --corpus posts.parquet --text-field content --id-field post_id --output runs/posts-rpt

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
    data_sub = data.add_subparsers(dest="data_command", metavar="{rpt,rlp}")
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
    p.add_argument("--jsonl", action="store_true", help="also write the rows as OUTPUT/rows.jsonl")


def run_rpt(args) -> int:
    from rl.data.rpt import build_rpt_dataset
    from rl.data.settings import config_from_args

    cfg = config_from_args(args, corpus=args.corpus, proxy_model=args.proxy_model)
    dataset, summary = build_rpt_dataset(cfg, args.output, jsonl=args.jsonl, overwrite=args.overwrite)
    print(summary.format())
    for path in summary.files:
        print(f"wrote {path}")
    print(f"saved {len(dataset)} rows to {args.output}")
    return 0
