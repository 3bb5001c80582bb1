"""Benchmark: the cost of RLP's information-gain reward against the generation it follows.

    .venv/bin/python -m bench.rlp_cost [--quick] [--model builtin:smollm2-135m-instruct] [--smoke]

On the builtin SmolLM2-135M-Instruct (or `--model DIR`), CHAMP contexts of `--context` tokens
(cut at token `--context` of each document; the true next token is the document's next token):
`--prompts` contexts x G = `--generations` thoughts of `--thought` tokens are sampled with
`model.generate` (temperature 0.7, the RLP prompt `context + " <think>"`), which is the anchor.
Then, on the same thoughts:

* `rlp reward`: `RLPScorer.information_gain` as the trainer runs it: policy scoring of every
  thought (context + <think> + thought + </think> + next token) plus the EMA teacher's no-think
  baseline once per context, chunked, LM head on the K + 1 = 2 scored positions only;
* `full-logits reference`: the same policy log-probs from a plain forward that materialises every
  position's logits (B x T x V), for comparison.

Each measurement alternates in rounds (one warm-up, then `--repeats`), medians reported, and
every time is printed as a ratio to the generation measured in the same round (the machine is
shared: absolute seconds are noise, ratios less so). One torch thread.

`--smoke`: a tiny local model and bench/smoke.py's documents instead of SmolLM2 and CHAMP, 2 contexts
of 8 tokens x 2 thoughts of 4 tokens, one round: checks that the bench runs (numbers mean nothing).

The last line is `rlp_cost: reward_vs_generation=X full_logits_vs_generation=Y` (median ratios).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def load(model_arg: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.runtime.assets import resolve_model

    path = resolve_model(model_arg)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, tok


def contexts(tok, n: int, context_tokens: int, corpus: str = "builtin:champ"):
    """(context text, continuation, boundaries) cut from `corpus`'s documents at token `context_tokens`."""
    from rl.data.corpus import read_corpus

    rows = []
    for doc in read_corpus(corpus):
        ids = tok(doc.text, add_special_tokens=False)["input_ids"]
        if len(ids) <= context_tokens + 1:
            continue
        ctx, nxt = tok.decode(ids[:context_tokens]), tok.decode(ids[context_tokens:context_tokens + 1])
        if not nxt or "\ufffd" in ctx + nxt:
            continue
        rows.append((ctx, nxt, [len(nxt.encode("utf-8"))]))
        if len(rows) == n:
            break
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="builtin:smollm2-135m-instruct")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--thought", type=int, default=64, help="thought tokens sampled")
    p.add_argument("--context", type=int, default=128, help="context tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="2 prompts x 4 thoughts of 32 tokens, 2 repeats")
    p.add_argument("--smoke", action="store_true",
                   help="a tiny local model and corpus, 2 x 2 thoughts of 4 tokens, 1 round: checks that the bench runs")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.generations, args.thought, args.repeats = 2, 4, 32, 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    corpus = "builtin:champ"
    smoke_dir = tempfile.TemporaryDirectory(prefix="rlp-cost-smoke-") if args.smoke else None
    if smoke_dir is not None:
        from bench.smoke import tiny_corpus, tiny_model

        args.model, corpus = str(tiny_model(smoke_dir.name, chat_template=False)), str(tiny_corpus(smoke_dir.name))
        args.prompts, args.generations, args.thought, args.context, args.repeats = 2, 2, 4, 8, 1
    from rewards.rlp import THINK_OPEN, bind_scorer, rlp_reward
    from rl.train.rlp_teacher import EmaTeacher
    from rl.train.rlp_trainer import RLPScorer

    model, tok = load(args.model)
    rows = contexts(tok, args.prompts, args.context, corpus)
    teacher = EmaTeacher(model, 0.999)
    scorer = RLPScorer(model, teacher, tok, chunk_rows=8)
    prompts = [ctx + THINK_OPEN for ctx, _, _ in rows for _ in range(args.generations)]
    cols = {k: [r[i] for r in rows for _ in range(args.generations)]
            for i, k in enumerate(("context", "continuation", "boundaries"))}
    tok.padding_side = "left"

    def generate():
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=0.7, max_new_tokens=args.thought,
                                 min_new_tokens=args.thought, pad_token_id=tok.pad_token_id)
        return [list(r) for r in out[:, enc["input_ids"].shape[1]:].tolist()]

    def reward(ids):
        texts = tok.batch_decode(ids)
        with bind_scorer(scorer):
            return rlp_reward(prompts=prompts, completions=texts, completion_ids=ids, **cols)

    def full_logits(ids):  # policy term only, every position's logits materialised
        texts = tok.batch_decode(ids)
        with torch.no_grad():
            for text, (ctx, nxt, _) in zip(texts, [r for r in rows for _ in range(args.generations)]):
                seq = tok(ctx + THINK_OPEN + text + "</think>" + nxt, add_special_tokens=False)["input_ids"]
                logits = model(input_ids=torch.tensor([seq])).logits
                torch.log_softmax(logits.float(), -1)

    times = {"generation": [], "rlp reward": [], "full-logits reference": []}
    gains = []
    for rnd in range(args.repeats + 1):
        t0 = time.perf_counter()
        ids = generate()
        t1 = time.perf_counter()
        g = reward(ids)
        t2 = time.perf_counter()
        full_logits(ids)
        t3 = time.perf_counter()
        if rnd:  # round 0 warms up
            times["generation"].append(t1 - t0)
            times["rlp reward"].append(t2 - t1)
            times["full-logits reference"].append(t3 - t2)
            gains += [x for x in g if x is not None]
    anchor = statistics.median(times["generation"])
    n = len(prompts)
    print(f"model {args.model}; {args.prompts} contexts x G={args.generations}, context {args.context} tokens, "
          f"thought {args.thought} tokens; {args.repeats} rounds after 1 warm-up; 1 thread; medians")
    print(f"{'step':<24}{'seconds':>10}{'x generation':>14}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<24}{med:>10.2f}{med / anchor:>14.3f}")
    print(f"forward calls (policy + teacher, all rounds): {scorer.forward_calls}; samples per round: {n}")
    print(f"information gain over {len(gains)} thoughts: mean {statistics.mean(gains):.3f} nats, "
          f"positive {sum(x > 0 for x in gains) / len(gains):.1%}")
    ratios = {name: statistics.median(values) / anchor for name, values in times.items()}
    print(f"rlp_cost: reward_vs_generation={ratios['rlp reward']:.3f} "
          f"full_logits_vs_generation={ratios['full-logits reference']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
