"""Benchmark: how much GRPO signal each RPT format and completion rule gives the builtin model.

Not a test. On RPT rows built from CHAMP with the builtin SmolLM2-135M-Instruct as proxy (the
demo's settings: entropy >= 1 nat, contexts up to 64 tokens), it samples G completions per row
with the same model and scores them, reporting the mean reward and the share of groups whose
rewards are not all equal (GRPO learns only from those):

* completion format (raw context as prompt) with 1, 2 and 4-token completions, under the
  `rpt_completion` rule (the completion's first whole tokens right) and `rpt_completion_exact`
  (Eq. 3 verbatim: the whole completion must end on a ground-truth boundary);
* the reasoning format (the paper's instruction in the chat template, answer in \\boxed{}), with
  `--reasoning-tokens` tokens to reason and answer.

    .venv/bin/python -m bench.rpt_signal [--rows 64] [--generations 4] [--data DIR] [--smoke]

`--smoke`: a tiny local model as policy and proxy, bench/smoke.py's documents instead of CHAMP, 4 rows
x 2 completions, 8 reasoning tokens: checks that the bench runs (its numbers mean nothing).

The last line is `signal: completion_1tok=X completion_4tok_prefix=Y completion_4tok_exact=Z reasoning=W`
(mean rewards).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BUILTIN = "builtin:smollm2-135m-instruct"


def build_rows(out: Path, documents: int, corpus: str = "builtin:champ", proxy: str = BUILTIN, **extra):
    from rl.data.settings import DEFAULT_RPT_PROMPT
    from rl.data.rpt import RPTBuildConfig, build_rpt_dataset

    cfg = RPTBuildConfig(corpus=corpus, proxy_model=proxy, min_entropy=1.0,
                         max_per_doc=4, max_documents=documents, max_context_tokens=64, format="completion",
                         prompt_template=DEFAULT_RPT_PROMPT, **extra)
    dataset, _ = build_rpt_dataset(cfg, out)
    return dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--reasoning-tokens", type=int, default=96)
    parser.add_argument("--reasoning-rows", type=int, default=16, help="rows for the (slow) reasoning format")
    parser.add_argument("--data", default=None, help="completion-format RPT data dir (default: build 24 documents)")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny local model and corpus, 4 rows x 2 completions: checks that the bench runs")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewards.rpt import rpt_completion_exact_reward, rpt_completion_reward, rpt_reward
    from rl.runtime.assets import resolve_model
    from rl.data.settings import DEFAULT_RPT_PROMPT
    from rl.data.rpt import make_prompt
    from rl.train.signal_check import run_signal_check

    model_arg, build = BUILTIN, {}
    tmp = tempfile.TemporaryDirectory(prefix="rpt-signal-")
    if args.smoke:
        from bench.smoke import tiny_corpus, tiny_model

        torch.set_num_threads(1)
        model_arg = str(tiny_model(tmp.name))
        build = {"corpus": str(tiny_corpus(tmp.name)), "proxy": model_arg, "id_field": "id", "min_context_tokens": 4}
        args.rows, args.generations, args.reasoning_tokens, args.reasoning_rows = 4, 2, 8, 2
    path = resolve_model(model_arg)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    if args.data:
        from datasets import load_from_disk

        data = load_from_disk(args.data)
    else:
        data = build_rows(Path(tmp.name) / "rpt", documents=24, **build)
    rows = [dict(r) for r in data.select(range(min(args.rows, len(data))))]
    print(f"{len(rows)} completion-format rows (entropy >= 1 nat), G={args.generations}, T={args.temperature}")
    print(f"{'format':<12} {'tokens':>6} {'rule':<22} {'mean reward':>11} {'groups w/ signal':>17} {'s':>6}")
    results = {}

    def run(label, fmt, tokens, rule, func, use_rows):
        started = time.perf_counter()
        report = run_signal_check(model, tok, use_rows, [func], None, generations=args.generations,
                                  max_new_tokens=tokens, prompts=len(use_rows), temperature=args.temperature)
        seconds = time.perf_counter() - started
        results[label] = report.mean_reward
        print(f"{fmt:<12} {tokens:>6} {rule:<22} {report.mean_reward:>11.3f} "
              f"{report.groups_with_signal:>7} of {report.prompts:<6} {seconds:>6.1f}", flush=True)
        return report

    for tokens in (1, 2, 4):
        run(f"completion_{tokens}tok_prefix", "completion", tokens, "rpt_completion", rpt_completion_reward, rows)
        if tokens > 1:
            run(f"completion_{tokens}tok_exact", "completion", tokens, "rpt_completion_exact (Eq.3)",
                rpt_completion_exact_reward, rows)
    reasoning_rows = [{**r, "rpt_format": "reasoning",
                       "prompt": make_prompt("reasoning", DEFAULT_RPT_PROMPT, r["context"], use_chat=True)}
                      for r in rows[: args.reasoning_rows]]
    report = run("reasoning", "reasoning", args.reasoning_tokens, "rpt (boxed, Eq.3)", rpt_reward, reasoning_rows)
    print(f"reasoning format: a complete \\boxed{{}} in {report.boxed} of {report.samples} samples; "
          f"e.g. {report.example!r}")
    print(f"signal: completion_1tok={results['completion_1tok_prefix']:.3f} "
          f"completion_4tok_prefix={results['completion_4tok_prefix']:.3f} "
          f"completion_4tok_exact={results['completion_4tok_exact']:.3f} reasoning={results['reasoning']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
