"""Benchmark: `rl eval next-token` standard mode vs a plain batched forward pass (positions/s).

Not a test. Builds a small random Qwen2 (hidden 256, 4 layers, GPT-2 tokenizer) on local disk,
makes RPT rows with contexts of 16-96 tokens, and times, on the same model and contexts:

* plain forward: pre-tokenized, left-padded batches in data order, `model(...)` with full logits
  (what "run the model on the contexts" costs without any evaluation logic);
* plain forward, last logits: the same with `logits_to_keep=1`;
* plain forward, last logits, by length: also batched longest-first like standard mode, so the
  gap to standard mode is exactly the evaluation overhead (tokenizing, decoding, scoring);
* standard mode: `evaluate_next_token` end to end (tokenize, sort by length, forward with the
  last position's logits only, argmax, decode, prefix-match scoring, split statistics).

After a one-batch warm-up, the three are run in interleaved rounds (the machine may be shared),
best of `--repeats` each. Target: standard mode >= 0.8x the plain
forward. Last line: `standard_mode_ratio=X` (standard mode / plain forward, positions per second).

    .venv/bin/python -m bench.next_token_eval [--rows 64] [--batch-size 16] [--repeats 3] [--threads 1] [--smoke]

`--smoke`: hidden 64 x 2 layers, 8 rows in batches of 4, one round (seconds; checks that it runs).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("the of and to in is that for it as with was on be by this we are from at or an which have "
         "not but they his their one all were there can more when so if then let suppose however thus "
         "number equation solution value function sum prime square root integer angle triangle").split()


def make_rows(tokenizer, n: int, seed: int = 0) -> list[dict]:
    """RPT rows with random word contexts of 16-96 tokens and a one-word continuation."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        target = rng.randint(16, 96)
        words = []
        while len(tokenizer(" ".join(words))["input_ids"]) < target:
            words.extend(rng.choice(WORDS) for _ in range(8))
        cont = " " + rng.choice(WORDS)
        rows.append({"context": " ".join(words), "continuation": cont, "boundaries": [len(cont.encode())],
                     "entropy": rng.uniform(0, 3), "prompt": "", "doc_id": str(i), "position": 0})
    return rows


def interleaved_best(repeats: int, methods: dict) -> dict[str, float]:
    """Best wall time of each method over `repeats` rounds, methods interleaved within a round so
    that load from other processes on a shared machine hits all of them alike."""
    best = {name: float("inf") for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: stable numbers on a shared machine; 0 = torch's choice)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, 8 rows, one round: checks that it runs")
    args = parser.parse_args(argv)
    hidden, layers = 256, 4
    if args.smoke:
        args.rows, args.batch_size, args.repeats, hidden, layers = 8, 4, 1, 64, 2

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.eval.next_token import NextTokenSettings, evaluate_next_token
    from rl.signal.padding import left_pad
    from tests.tiny_models import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_model(Path(tmp), chat_template=False, hidden_size=hidden, layers=layers)
        model = AutoModelForCausalLM.from_pretrained(tmp).eval()
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    rows = make_rows(tokenizer, args.rows)
    seqs = [tokenizer(r["context"])["input_ids"] for r in rows]
    n_tokens = sum(map(len, seqs))
    bs = args.batch_size

    by_length = sorted(seqs, key=len, reverse=True)

    def plain(limit=None, order=seqs, **extra):
        def run():
            with torch.inference_mode():
                for s in range(0, len(order) if limit is None else limit, bs):
                    ids, mask, _ = left_pad(order[s:s + bs], tokenizer.eos_token_id, "cpu")
                    model(input_ids=ids, attention_mask=mask, use_cache=False, **extra).logits.argmax(-1)
        return run

    def standard():
        evaluate_next_token("bench", rows, NextTokenSettings(batch_size=bs), model=model, tokenizer=tokenizer,
                            progress=False, keep_rows=False)

    plain(limit=bs)()  # warm-up: one batch of each
    evaluate_next_token("bench", rows[:bs], NextTokenSettings(batch_size=bs), model=model, tokenizer=tokenizer,
                        progress=False)
    best = interleaved_best(args.repeats, {
        "plain forward (full logits)": plain(),
        "plain forward (last logits only)": plain(logits_to_keep=1),
        "plain forward (last logits, by length)": plain(order=by_length, logits_to_keep=1),
        "standard mode (evaluate_next_token)": standard,
    })
    results = list(best.items())
    base = best["plain forward (full logits)"]
    std = best["standard mode (evaluate_next_token)"]
    print(f"model: Qwen2 hidden {hidden}, {layers} layers, vocab {len(tokenizer)}; {len(rows)} contexts, {n_tokens} tokens "
          f"(16-96 each), batch {bs}, torch threads {torch.get_num_threads()}, best of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'method':40} {'seconds':>8} {'positions/s':>12} {'vs plain':>9}")
    for name, seconds in results:
        print(f"{name:40} {seconds:8.3f} {len(rows) / seconds:12.1f} {base / seconds:8.2f}x")
    print(f"standard mode vs the same forward with no evaluation logic (last logits, by length): "
          f"{best['plain forward (last logits, by length)'] / std:.2f}x")
    print(f"standard_mode_ratio={base / std:.2f}")


if __name__ == "__main__":
    main()
