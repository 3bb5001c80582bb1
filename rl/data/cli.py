"""`rl data ...` subcommands (argument parsing only; the work is in rl/data/rpt.py)."""

from __future__ import annotations

import argparse

from rl.runtime.values import FINITE, POSITIVE_INT, Number
from rl.train.config import DEFAULT_RPT_PROMPT

# The measured comparison (bench/rpt_select_by.py); kept next to the flag so users see it.
SELECT_BY_EVIDENCE = (
    "Measured (bench/rpt_select_by.py: demo recipe, same rows and steps per arm, 3 seeds x 30 steps): held-out "
    "expected accuracy gain +1.11 pts [95%% t-interval over seeds -0.06, +2.28] with entropy >= 1.0, +1.29 "
    "[-0.07, +2.64] with surprisal >= 1.0, +0.43 [-2.42, +3.28] with random positions; surprisal - entropy "
    "+0.18 [-2.23, +2.58], random - entropy -0.68 [-2.72, +1.36]: no criterion is shown better at this scale; "
    "entropy and surprisal gained in every seed, random in one of three.")

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
    p.add_argument("--format", choices=["reasoning", "completion"], default="reasoning",
                   help="reasoning: instruction + answer in \\boxed{} (paper; reward rpt); completion: the raw "
                   "context is the prompt and the completion is the guess (reward rpt_completion; base and small "
                   "chat models)")
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
    _add_build_args(r)
    r.set_defaults(func=run_rpt, format="rlp")


def _add_build_args(p) -> None:
    """Options `rl data rpt` and `rl data rlp` share (corpus, proxy model, position choice, output)."""
    p.add_argument("--corpus", required=True, help="builtin:champ, .txt file/dir, .jsonl/.parquet (text column), HF dataset dir")
    p.add_argument("--proxy-model", "--model", dest="proxy_model", default="builtin:smollm2-135m-instruct",
                   help="model whose next-token entropy picks positions (builtin:, hub id or local dir)")
    p.add_argument("--output", "-o", required=True,
                   help="output dir (datasets.save_to_disk format); see the rules below")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT even when it holds files this command did not write (never an input)")
    p.add_argument("--text-field", default="text", help=".jsonl/.parquet/HF dataset corpora: field holding the text")
    p.add_argument("--id-field", default=None,
                   help="field used as the document id (default: file and line/row number)")
    p.add_argument("--entropy", choices=["topk", "full"], default="topk",
                   help="topk: entropy of the top-k probabilities RENORMALISED to sum to 1 (paper: top-16); "
                   "full: entropy of the whole softmax")
    p.add_argument("--top-k", type=POSITIVE_INT, default=16, help="k for --entropy topk")
    p.add_argument("--min-entropy", type=FINITE, default=0.5, help="keep positions with entropy >= this (nats)")
    p.add_argument("--select-by", choices=["entropy", "surprisal", "surprise", "random"], default="entropy",
                   help="which proxy score picks positions: entropy (paper; >= --min-entropy), surprisal "
                   "-log p(true token) or surprise ||softmax(z) - onehot(y)||_2 (Titans' gradient-norm surprise, "
                   "in [0, 1.414]) >= --min-surprise, or random (every position a candidate). "
                   + SELECT_BY_EVIDENCE)
    p.add_argument("--min-surprise", type=FINITE, default=2.0,
                   help="--select-by surprisal/surprise: keep positions whose score is >= this")
    p.add_argument("--max-per-doc", type=POSITIVE_INT, default=8, help="sample at most this many positions per document")
    p.add_argument("--continuation-tokens", type=POSITIVE_INT, default=8, help="ground-truth tokens after each position")
    p.add_argument("--max-context-tokens", type=POSITIVE_INT, default=512, help="keep only the most recent N context tokens")
    p.add_argument("--min-context-tokens", type=POSITIVE_INT, default=16, help="skip positions with less context than this")
    p.add_argument("--window-tokens", type=Number(int, 2), default=1024, help="proxy forward window; windows overlap by half")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=4, help="windows per proxy forward pass")
    p.add_argument("--max-documents", type=POSITIVE_INT, default=None, help="read at most N documents (default: all)")
    p.add_argument("--prompt-template-file", default=None, help="file with the instruction; must contain {context} (default: the built-in instruction)")
    p.add_argument("--chat", choices=["auto", "yes", "no"], default="auto",
                   help="wrap prompts as chat messages (auto: when the tokenizer has a chat template)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling positions")
    p.add_argument("--jsonl", action="store_true", help="also write the rows as OUTPUT/rows.jsonl")


def run_rpt(args) -> int:
    from pathlib import Path

    from rl.data.rpt import RPTBuildConfig, build_rpt_dataset
    from rl.errors import UserError

    template = DEFAULT_RPT_PROMPT if args.format != "rlp" else ""
    if args.prompt_template_file:
        try:
            template = Path(args.prompt_template_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{args.prompt_template_file}: cannot read prompt template ({exc.__class__.__name__})")
    cfg = RPTBuildConfig(
        corpus=args.corpus, proxy_model=args.proxy_model, entropy=args.entropy, top_k=args.top_k,
        min_entropy=args.min_entropy, select_by=args.select_by, min_surprise=args.min_surprise,
        max_per_doc=args.max_per_doc, continuation_tokens=args.continuation_tokens,
        max_context_tokens=args.max_context_tokens, min_context_tokens=args.min_context_tokens,
        window_tokens=args.window_tokens, batch_size=args.batch_size, max_documents=args.max_documents,
        prompt_template=template, seed=args.seed, chat=args.chat, text_field=args.text_field, id_field=args.id_field,
        format=args.format,
    )
    dataset, summary = build_rpt_dataset(cfg, args.output, jsonl=args.jsonl, overwrite=args.overwrite)
    print(summary.format())
    for path in summary.files:
        print(f"wrote {path}")
    print(f"saved {len(dataset)} rows to {args.output}")
    return 0
