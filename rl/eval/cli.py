"""`rl eval next-token` and `rl profile entropy` (argument parsing only; the work is in
rl/eval/next_token.py and rl/eval/profile.py, imported inside the handlers so `rl --help` stays fast)."""

from __future__ import annotations

import argparse

from rl.runtime.values import FINITE, FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_INT, Number
from rl.eval.math_eval import register as register_math
from rl.errors import UserError
from rl.eval.compare import compare_results, evaluate_pair, format_table
from rl.eval.next_token import NextTokenSettings, evaluate_next_token
from rl.runtime.atomic_io import atomic_write_text
from rl.runtime.models import check_model_arg
from rl.runtime.outputs import check_output_file

EVAL_EXAMPLES = """examples:
  rl eval next-token --model builtin:smollm2-135m-instruct --data runs/champ-rpt --limit 200
  rl eval next-token --model runs/rpt/checkpoint-100 --compare builtin:smollm2-135m-instruct \\
      --data runs/heldout-rpt --output results.json              # after vs before training
  rl eval next-token --model runs/rpt --data heldout.jsonl --mode reasoning --samples 4 \\
      --max-new-tokens 512 --temperature 0.8                      # mean accuracy and pass@4
  rl eval next-token --model runs/lora-adapter --data heldout.jsonl --thresholds 0.3,0.8,1.2

splits (nested, as in the RPT paper): easy = entropy > 0.5, medium = > 1.0, hard = > 1.5, plus all.
standard: the argmax next token on the raw context; reasoning: sampled answers to the RPT prompt.
"""

PROFILE_EXAMPLES = """examples:
  rl profile entropy --model builtin:smollm2-135m-instruct --data builtin:champ --max-documents 50
  rl profile entropy --model runs/rpt --generate prompts.txt --samples 4 --temperature 1.0 \\
      --max-new-tokens 512 --output-dir runs/profile-gen --wandb
  rl profile entropy --model Qwen/Qwen3-1.7B --data notes.jsonl --max-tokens 200000

writes OUTPUT_DIR/entropy_profile.json, entropy_histogram.png, forking_tokens.png and prints the
comparison with "Beyond the 80/20 Rule" (Qwen3-8B on AIME: 50.64% of tokens below 0.01 nats,
80th percentile 0.672). --wandb logs to W&B (WANDB_MODE=offline works without a login).
"""


def _thresholds(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers like 0.5,1.0,1.5, got {text!r}")
    for v in values:
        FINITE(str(v))
    return values


def register(subparsers) -> None:
    ev = subparsers.add_parser("eval", help="evaluate models (rl eval next-token --help, rl eval math --help)")
    ev_sub = ev.add_subparsers(dest="eval_command", metavar="{next-token,math}")
    ev_sub.required = True
    p = ev_sub.add_parser(
        "next-token",
        help="next-token accuracy on RPT data by entropy split (easy/medium/hard)",
        description="Reproduce the RPT paper's next-token evaluation (arXiv 2506.08007, Table 1): positions of a "
        "held-out RPT dataset split by proxy entropy; accuracy with 95% Wilson intervals per split.",
        epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="checkpoint dir, LoRA adapter dir, hub id or builtin: name")
    p.add_argument("--data", required=True, help="RPT dataset from `rl data rpt` (save_to_disk dir, .jsonl, .parquet)")
    p.add_argument("--mode", choices=["standard", "reasoning"], default="standard",
                   help="standard: argmax next token on the raw context; reasoning: sample answers to the RPT prompt")
    p.add_argument("--compare", default=None, metavar="OTHER_MODEL",
                   help="evaluate a second model on the same rows and show both with the difference (model - other)")
    p.add_argument("--calibration-data", default=None, metavar="ROWS",
                   help="standard --compare: RPT rows not in --data (e.g. the training rows) to fit each model's "
                   "temperature for the calibrated NLL on (default: cross-fitted over two halves of --data's documents)")
    p.add_argument("--thresholds", type=_thresholds, default=(0.5, 1.0, 1.5),
                   help="entropy thresholds easy,medium,hard in nats (default 0.5,1.0,1.5)")
    p.add_argument("--limit", type=POSITIVE_INT, default=None, help="evaluate only the first N rows")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="positions (prompts) per forward/generate call")
    p.add_argument("--samples", type=POSITIVE_INT, default=1, help="reasoning: samples per position (default 1)")
    p.add_argument("--pass-k", type=POSITIVE_INT, default=None, help="reasoning: k of pass@k (default: --samples)")
    p.add_argument("--max-new-tokens", type=POSITIVE_INT, default=256, help="reasoning: generation length")
    p.add_argument("--temperature", type=NON_NEGATIVE, default=1.0,
                   help="reasoning: sampling temperature (0 = greedy); standard: the T of the expected accuracy")
    p.add_argument("--max-context-tokens", type=POSITIVE_INT, default=None,
                   help="standard: keep only the last N context tokens (default: the model's maximum)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--output", "-o", default=None,
                   help="write the results as JSON here (a new file, or a previous result of this command)")
    p.add_argument("--overwrite", action="store_true", help="let --output replace a file this command did not write")
    p.set_defaults(func=run_eval)
    register_math(ev_sub)  # rl eval math (rl/eval/math_eval.py)

    pr = subparsers.add_parser("profile", help="profile models (rl profile entropy --help)")
    pr_sub = pr.add_subparsers(dest="profile_command", metavar="{entropy,bits}")
    pr_sub.required = True
    q = pr_sub.add_parser(
        "entropy",
        help="per-token entropy distribution and forking tokens (80/20 paper)",
        description="Per-token next-token entropy of a model over a corpus (teacher-forced) or over its own "
        "samples: share below 0.01 nats, percentiles, entropy carried by the top 20% of tokens, most frequent "
        "high-entropy tokens and token kinds (arXiv 2506.01939).",
        epilog=PROFILE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--model", required=True, help="checkpoint dir, LoRA adapter dir, hub id or builtin: name")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="corpus: builtin:champ, .txt file/dir, .jsonl/.parquet (text column), HF dataset dir")
    src.add_argument("--generate", metavar="PROMPTS", help=".txt (one prompt per line) or .jsonl with `prompt`")
    q.add_argument("--output-dir", "-o", default="runs/entropy-profile",
                   help="where JSON and PNGs go: a new dir or a previous profile (replaced atomically)")
    q.add_argument("--overwrite", action="store_true",
                   help="let --output-dir replace a directory this command did not write")
    q.add_argument("--text-field", default="text", help="corpus .jsonl/.parquet/HF dataset: field holding the text")
    q.add_argument("--max-documents", type=POSITIVE_INT, default=None, help="corpus: read at most N documents")
    q.add_argument("--max-tokens", type=POSITIVE_INT, default=None, help="corpus: stop after N scored tokens")
    q.add_argument("--window-tokens", type=Number(int, 2), default=1024,
                   help="corpus: forward window; windows overlap by half")
    q.add_argument("--limit", type=POSITIVE_INT, default=None, help="generate: use only the first N prompts")
    q.add_argument("--samples", type=POSITIVE_INT, default=1, help="generate: completions per prompt")
    q.add_argument("--max-new-tokens", type=POSITIVE_INT, default=256, help="generate: completion length")
    q.add_argument("--temperature", type=NON_NEGATIVE, default=1.0,
                   help="entropy of softmax(logits/T), T > 0; generate: also the sampling temperature "
                   "(0 = one greedy sample, its entropy at T=1, recorded as entropy_temperature)")
    q.add_argument("--batch-size", type=POSITIVE_INT, default=4, help="windows or prompts per forward/generate call")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    q.add_argument("--wandb", action="store_true", help="log plots and a table to W&B (mode from WANDB_MODE)")
    q.add_argument("--wandb-project", default="entropy-rl", help="W&B project for --wandb")
    q.set_defaults(func=run_profile)
    register_bits(pr_sub)


BITS_EXAMPLES = """examples:
  rl profile bits --model builtin:smollm2-135m --data builtin:champ --max-documents 20
  rl profile bits --model runs/rpt --data notes.jsonl --target-bytes-per-patch 8 --max-patch-length 16

writes OUTPUT_DIR/bits_profile.json, patch_trace.png, patch_lengths.png. Patches (BLT, arXiv 2412.09871):
global (H_t > theta; BLT's default theta 1.3354 nats), monotonic (H_t - H_{t-1} > theta), threshold_add
(both, the difference against --threshold-add) and topk (the global mode's mean patch size). Units are
the model's tokens; a byte-level entropy model plugs in the same way where a user has one (any causal LM
whose tokens are bytes). Surprise (Titans, arXiv 2501.00663): surprisal -log p(y) and momentary surprise
||softmax(z) - onehot(y)||_2 (the cross-entropy's gradient norm w.r.t. the logits, closed form), past
surprise S_t = eta S_{t-1} + u_t and memory M_t = (1 - alpha) M_{t-1} + S_t.
"""


def register_bits(pr_sub) -> None:
    b = pr_sub.add_parser(
        "bits",
        help="where the bits are: entropy patches (BLT) and surprise (Titans) vs forking tokens",
        description="Over a corpus (teacher-forced) or the model's own completions: cut entropy patches as the "
        "Byte Latent Transformer does "
        "(patches per token = the share of global steps a patch-level model runs, patch lengths in tokens and "
        "bytes, patch-start tokens, overlap with the top-20% forking tokens) and measure surprise as Titans "
        "does, with the positions where entropy and surprise disagree.",
        epilog=BITS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--model", required=True, help="entropy model: checkpoint dir, hub id or builtin: name")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="corpus: builtin:champ, .txt file/dir, .jsonl/.parquet, HF dataset dir")
    src.add_argument("--generate", metavar="PROMPTS",
                     help="the model's own completions of these prompts (.txt, one per line, or .jsonl with `prompt`)")
    b.add_argument("--text-field", default="text", help="corpus .jsonl/.parquet/HF dataset: field holding the text")
    b.add_argument("--samples", type=POSITIVE_INT, default=1, help="generate: completions per prompt")
    b.add_argument("--max-new-tokens", type=POSITIVE_INT, default=256, help="generate: completion length")
    b.add_argument("--temperature", type=NON_NEGATIVE, default=1.0,
                   help="generate: sampling temperature (0 = greedy); tokens are scored at T=1")
    b.add_argument("--limit", type=POSITIVE_INT, default=None, help="generate: use only the first N prompts")
    b.add_argument("--output-dir", "-o", default="runs/bits-profile",
                   help="where JSON and PNGs go: a new dir or a previous bits profile (replaced atomically)")
    b.add_argument("--overwrite", action="store_true", help="let --output-dir replace a directory this command did not write")
    b.add_argument("--threshold", type=FINITE, default=None, help="theta in nats (default: BLT's 1.3354)")
    b.add_argument("--threshold-add", type=FINITE, default=0.0, help="threshold_add mode: H_t - H_{t-1} must exceed this")
    b.add_argument("--target-bytes-per-patch", type=POSITIVE, default=None, metavar="B",
                   help="find theta of each threshold mode by bisection so patches average B bytes (the output "
                   "says when a mode cannot reach it, e.g. under --max-patch-length)")
    b.add_argument("--max-patch-length", type=POSITIVE_INT, default=None,
                   help="split patches longer than this many tokens")
    b.add_argument("--eta", type=FRACTION, default=0.9, help="past surprise momentum (Titans eta)")
    b.add_argument("--alpha", type=FRACTION, default=0.1,
                   help="memory forgetting (Titans alpha; 0 = no forgetting: the memory sum grows without bound)")
    b.add_argument("--max-documents", type=POSITIVE_INT, default=None, help="read at most N documents")
    b.add_argument("--max-tokens", type=POSITIVE_INT, default=None, help="stop after the document that reaches N tokens")
    b.add_argument("--window-tokens", type=Number(int, 2), default=1024, help="forward window; windows overlap by half")
    b.add_argument("--batch-size", type=POSITIVE_INT, default=4, help="windows per forward pass")
    b.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    b.set_defaults(func=run_bits)


def run_bits(args) -> int:
    from rl.eval.bits import BitsSettings, format_bits, profile_bits

    result = profile_bits(args.model, BitsSettings(
        data=args.data, generate=args.generate, samples=args.samples,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, limit=args.limit,
        output_dir=args.output_dir, threshold=args.threshold,
        threshold_add=args.threshold_add, max_patch_length=args.max_patch_length,
        target_bytes_per_patch=args.target_bytes_per_patch, eta=args.eta, alpha=args.alpha,
        window_tokens=args.window_tokens, batch_size=args.batch_size, max_documents=args.max_documents,
        max_tokens=args.max_tokens, device=args.device, overwrite=args.overwrite, text_field=args.text_field))
    print(format_bits(result))
    for path in result["written"]:
        print(f"wrote {path}")
    return 0


EVAL_COMMAND = "rl eval next-token"


def run_eval(args) -> int:
    import json

    # Everything that can be wrong is checked before the first (possibly hour-long) evaluation.
    out = None
    if args.output:
        out = check_output_file(args.output, "--output", EVAL_COMMAND, overwrite=args.overwrite,
                                inputs={"--data": args.data, "--model": args.model, "--compare": args.compare,
                                        "--calibration-data": args.calibration_data})
    if args.max_context_tokens is not None and args.max_context_tokens < 1:
        raise UserError(f"--max-context-tokens: must be at least 1 (or omit it for the model's maximum), "
                        f"got {args.max_context_tokens}")
    if args.calibration_data and not (args.compare and args.mode == "standard"):
        raise UserError("--calibration-data: only used with --compare in standard mode (the calibrated NLL); drop it")
    check_model_arg(args.model, "--model")
    if args.compare:
        check_model_arg(args.compare, "--compare")
    settings = NextTokenSettings(
        mode=args.mode, thresholds=args.thresholds, batch_size=args.batch_size, limit=args.limit,
        samples=args.samples, pass_k=args.pass_k, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, max_context_tokens=args.max_context_tokens, seed=args.seed, device=args.device,
    )
    if args.compare and args.mode == "standard":  # + the calibrated NLL (temperature-fair), each model loaded once

        results, other = evaluate_pair(args.model, args.compare, args.data, args.calibration_data, settings)
    else:
        results = evaluate_next_token(args.model, args.data, settings)
        other = evaluate_next_token(args.compare, args.data, settings) if args.compare else None
    print(format_table(results, other))
    if out is not None:
        payload = {"version": 1, "written_by": EVAL_COMMAND, "model": results, "compare": other,
                   "difference": compare_results(results, other) if other else None}
        check_output_file(args.output, "--output", EVAL_COMMAND, overwrite=args.overwrite)  # changed meanwhile?
        atomic_write_text(out, json.dumps(payload, indent=2, ensure_ascii=False), make_parents=True)
        print(f"wrote {args.output}")
    return 0


def run_profile(args) -> int:
    from rl.eval.profile import ProfileSettings, format_profile, profile_entropy

    result = profile_entropy(args.model, ProfileSettings(
        data=args.data, generate=args.generate, output_dir=args.output_dir,
        window_tokens=args.window_tokens, batch_size=args.batch_size, max_documents=args.max_documents,
        max_tokens=args.max_tokens, limit=args.limit, samples=args.samples, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, seed=args.seed, device=args.device,
        wandb_project=args.wandb_project if args.wandb else None, overwrite=args.overwrite,
        text_field=args.text_field,
    ))
    print(format_profile(result))
    if result["source"].get("corpus"):
        print(f"corpus: {result['source']['corpus']}")
    for path in result["written"]:
        print(f"wrote {path}")
    if result.get("wandb_dir"):
        print(f"W&B run: {result['wandb_dir']}")
    return 0
