"""`rl prune`: likelihood-preserving pruning of reasoning chains (argument parsing and the run).

Order of work: parse keep ratios, check the output directory and the model argument, read and check
every row, tokenise and check each fits the model's context (all before weights load); then prune
each chain to empty (the deletion order ranks every token), rescore the kept chain at each keep ratio
exactly, categorise tokens, and write everything through rl/runtime/outputs.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from rl.errors import UserError

COMMAND = "rl prune"
EXAMPLES = """examples:
  rl prune --data builtin:champ --model builtin:smollm2-135m-instruct --keep 0.3,0.5,0.7 -o runs/prune \\
      --mode approx --limit 20
  rl prune --data chains.jsonl --model runs/policy --keep 0.5 -o runs/prune-exact     # exact greedy

writes OUT/sft/keep-R.jsonl (TRL prompt/completion rows per keep ratio), OUT/steps.jsonl (per chain:
tokens, deletion order, ranks, categories, score curve), OUT/summary.json (settings, approximations,
answer log-likelihood per keep ratio, category statistics), likelihood_curve.png and survival.png.
"""


def _keeps(text: str) -> list[float]:
    try:
        keeps = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ratios like 0.3,0.5,0.7, got {text!r}")
    if not keeps or any(not 0 <= k <= 1 for k in keeps):
        raise argparse.ArgumentTypeError(f"keep ratios must lie in [0, 1], got {text!r}")
    return keeps


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prune", help="prune reasoning chains by answer likelihood; SFT data and token-function statistics",
        description="Greedy likelihood-preserving deletion of reasoning tokens (arXiv 2601.03066): delete, one "
        "token at a time, the chain token whose removal costs the least log p(answer | question, chain).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="JSONL rows with question/reasoning/answer fields, or builtin:champ")
    p.add_argument("--model", required=True, help="pruner model: checkpoint dir, hub id or builtin: name")
    p.add_argument("--keep", type=_keeps, default=[0.3, 0.5, 0.7], help="keep ratios (default 0.3,0.5,0.7)")
    p.add_argument("-o", "--output-dir", required=True, help="new directory for the outputs")
    p.add_argument("--mode", choices=["exact", "approx"], default="exact",
                   help="exact: score every token at every step (the paper's greedy); approx: pre-filter "
                   "candidates by surprisal and delete several per step (labelled in the outputs)")
    p.add_argument("--objective", choices=["answer", "joint"], default="answer",
                   help="answer: log p(answer | question, chain); joint: log p(chain, answer | question)")
    p.add_argument("--candidates", type=int, default=16, help="approx: tokens scored per step (lowest surprisal)")
    p.add_argument("--per-step", type=float, default=0.1,
                   help="approx: fraction of the remaining chain deleted per step (at least one token)")
    p.add_argument("--batch-size", type=int, default=16, help="candidates per batched forward")
    p.add_argument("--limit", type=int, default=None, help="prune only the first N rows (after --max-chain-tokens)")
    p.add_argument("--max-chain-tokens", type=int, default=None,
                   help="skip rows whose chain has more tokens than this (counted and reported); default: none")
    for role in ("question", "reasoning", "answer"):
        p.add_argument(f"--{role}-field", default=role, help=f"JSONL field holding the {role} (default {role})")
    p.add_argument("--overwrite", action="store_true", help="replace an output directory not written by rl prune")
    p.set_defaults(func=run)


def run(args) -> int:
    from rl.prune.pruner import PruneSettings
    from rl.runtime.models import check_model_arg
    from rl.runtime.outputs import check_output_dir, replace_dir, written_files

    try:
        settings = PruneSettings(mode=args.mode, objective=args.objective, batch_size=args.batch_size,
                                 candidates=args.candidates, per_step=args.per_step)
    except ValueError as exc:
        raise UserError(f"--batch-size/--candidates/--per-step: {exc}") from None
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit: must be >= 1, got {args.limit}")
    inputs = {"data": args.data, "model": args.model}

    def check_out():
        return check_output_dir(args.output_dir, "--output-dir", COMMAND, overwrite=args.overwrite, inputs=inputs)

    out = check_out()
    model_path = check_model_arg(args.model, "--model")
    rows, tok = _read_rows(args, model_path)
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    t0 = time.monotonic()
    chains, sft = _prune_all(model, tok, rows, settings, args.keep)
    summary = _summary(args, settings, chains, sft, time.monotonic() - t0)
    with replace_dir(out, COMMAND, recheck=check_out) as tmp:
        _write(tmp, chains, sft, summary, args.keep)
    print(summary["table"])
    for k, c in summary["answer_loglik"].items():
        print(f"keep {float(k):.2f}: mean answer log-likelihood {c['mean']:.3f} over {c['chains']} chains")
    for line in summary["approximations"]:
        print(line)
    for path in written_files(out):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _read_rows(args, model_path):
    """Rows, tokenised and checked against the context (tokenizer and config only, no weights)."""
    from transformers import AutoConfig, AutoTokenizer

    from rl.prune.chains import check_fits, read_chains
    from rl.prune.pruner import encode

    fields = (args.question_field, args.reasoning_field, args.answer_field)
    chains = read_chains(args.data, fields, None if args.max_chain_tokens else args.limit)
    tok = AutoTokenizer.from_pretrained(model_path)
    if not getattr(tok, "is_fast", False):
        raise UserError(f"--model {args.model}: a fast tokenizer (character offsets) is needed to categorise tokens")
    max_len = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    rows, skipped = [], 0
    for ch in chains:
        if args.limit is not None and len(rows) >= args.limit:
            break
        enc = encode(tok, ch.question, ch.reasoning, ch.answer)
        if args.max_chain_tokens is not None and len(enc.chain_ids) > args.max_chain_tokens:
            skipped += 1
            continue
        if not enc.chain_ids:
            raise UserError(f"row {ch.id}: field {fields[1]!r} has no tokens; a non-empty chain is needed")
        if not enc.answer_ids:
            raise UserError(f"row {ch.id}: field {fields[2]!r} has no tokens; an answer is needed")
        check_fits(enc.total_len, max_len, ch.id, len(enc.chain_ids))
        rows.append((ch, enc))
    if not rows:
        raise UserError(f"--max-chain-tokens {args.max_chain_tokens}: every row's chain is longer; raise it")
    if skipped:
        print(f"[rl prune] skipped {skipped} rows with more than {args.max_chain_tokens} chain tokens", file=sys.stderr)
    return rows, tok


def _prune_all(model, tok, rows, settings, keeps):
    from rl.prune.categories import categorise_tokens
    from rl.prune.pruner import PROMPT_TEMPLATE, SEP, prune, pruned_text, score_kept

    chains, sft = [], {k: [] for k in keeps}
    for i, (ch, enc) in enumerate(rows, 1):
        t = time.monotonic()
        result = prune(model, enc, settings)
        cats = categorise_tokens(enc.chain_text, enc.chain_offsets)
        kept_scores = {}
        for k in keeps:
            kept = result.kept(k)
            kept_scores[str(k)] = score_kept(model, enc, kept, "answer")  # exact, whatever the mode
            sft[k].append({"prompt": PROMPT_TEMPLATE.format(question=ch.question.strip()),
                           "completion": f"{pruned_text(enc, kept, tok)}{SEP} {ch.answer.strip()}"})
        chains.append({"id": ch.id, "n": result.n, "tokens": [tok.decode([t_]) for t_ in enc.chain_ids],
                       "order": result.order, "ranks": result.ranks(), "categories": cats,
                       "curve": result.curve, "answer_loglik": kept_scores,
                       "full_answer_loglik": result.curve[0][1] if settings.objective == "answer" else
                       score_kept(model, enc, list(range(result.n)), "answer"),
                       "candidates_scored": result.candidates_scored})
        print(f"[rl prune] {i}/{len(rows)} {ch.id}: {result.n} tokens, {result.candidates_scored} candidates, "
              f"{time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)
    return chains, sft


def _summary(args, settings, chains, sft, seconds) -> dict:
    from dataclasses import asdict

    from rl.prune.report import category_stats, survival_table

    stats = category_stats(chains, args.keep)
    curve = {"1.0": {"mean": sum(c["full_answer_loglik"] for c in chains) / len(chains), "chains": len(chains)}}
    for k in args.keep:
        vals = [c["answer_loglik"][str(k)] for c in chains]
        curve[str(k)] = {"mean": sum(vals) / len(vals), "chains": len(vals)}
    return {"written_by": COMMAND, "data": args.data, "model": args.model, "settings": asdict(settings),
            "approximations": settings.approximations() or ["none: exact greedy deletion"],
            "keep": args.keep, "chains": len(chains), "tokens": sum(c["n"] for c in chains),
            "seconds": round(seconds, 1), "answer_loglik": curve, "categories": stats,
            "table": survival_table(stats, args.keep)}


def _write(tmp, chains, sft, summary, keeps) -> None:
    from rl.prune.report import plot_curves, write_sft

    for k in keeps:
        write_sft(tmp, k, sft[k])
    with (tmp / "steps.jsonl").open("w", encoding="utf-8") as fh:
        for ch in chains:
            fh.write(json.dumps(ch, ensure_ascii=False) + "\n")
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    plot_curves(tmp, summary["answer_loglik"], summary["categories"])
