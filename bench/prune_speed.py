"""Benchmark: `rl prune` candidate scoring, batched with the shared prefix cache vs one at a time.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.prune_speed [--quick] [--model builtin:smollm2-135m-instruct] [--smoke]

1. Exact-mode throughput. On the CHAMP chain whose length is closest to 150 tokens, the first greedy
   step's candidates (every `stride`-th chain position, so they spread over the chain like a full
   step's) are scored twice: by `score_candidates` (batches of `--batch-size`, one shared forward whose
   KV cache is every candidate's prefix) and by a loop of `score_kept` calls (one full forward per
   candidate, the anchor). Both in this run, alternating, so load from other jobs hits both alike;
   printed as candidates/s and the ratio, with the largest score difference (float noise only).
2. Approximate mode: the same chain pruned to 30% (`prune(..., stop_at=round(0.3 n))`) with the
   approx defaults; prints the wall time, candidates scored, and the answer log-likelihood of the
   pruned chain next to the full chain's.

Timings are noisy on a shared machine: read the ratio (anchor measured in the same run), not seconds.
Measured (2026-12-03, --quick, one thread, 2-core machine shared with ~8 other busy processes):
batched 0.34 vs anchor 0.23 candidates/s = 1.44x (1.87x in an earlier, less loaded run: 1.13 vs
0.60), largest score difference 9.7e-06 nats; approx 150 -> 45 tokens in 510 s (224 candidates),
answer log-likelihood -1.827 full vs -1.895 pruned. On CPU a forward is compute-bound, so batching
itself buys nothing; the gain is the shared prefix, bounded by (question + chain + answer) /
(chain / 2 + answer), about 2.3x here. The issue's >= 10x is a GPU (batched) target, not met on CPU.

Re-measured 2026-12-05 with the same `prune(..., stop_at=round(0.3 n))` call and approx settings
(16 candidates, 0.15 per step) on the same 150-token chain, one thread, the other core busy: 150 -> 45
tokens in 55.7 s (14 steps, 224 candidates): the "about a minute" goal holds when the machine is not
shared with ~8 other jobs. One shared forward of the 187-token sequence took 0.58 s; 16 candidates
whose shared prefix ends at the chain's start took 6.5 s (2.4 candidates/s), 16 at its end 1.0 s
(16/s): a candidate costs what its suffix costs, which is why exact mode gains ~2x, not 10x, on CPU.

`--smoke`: a tiny local model (bench/smoke.py) and one short arithmetic chain (the first worked
example of bench/forking_learning.py) instead of SmolLM2 and CHAMP; seconds, numbers that mean nothing.

The last line is `prune_speed: speedup=X approx_tokens=N->K approx_seconds=S`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    ap.add_argument("--target", type=int, default=150, help="chain length (tokens) of the CHAMP chain to use")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=16, help="approx mode: candidates per step")
    ap.add_argument("--per-step", type=float, default=0.15, help="approx mode: fraction deleted per step")
    ap.add_argument("--quick", action="store_true", help="fewer timed candidates")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny local model and one short arithmetic chain: checks that the bench runs")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.prune.chains import Chain, read_chains
    from rl.prune.pruner import (
        APPROX,
        PruneSettings,
        encode,
        prune,
        score_candidates,
        score_kept,
    )
    from rl.runtime.assets import resolve_model

    torch.manual_seed(0)
    smoke_dir = tempfile.TemporaryDirectory(prefix="prune-speed-smoke-") if args.smoke else None
    if smoke_dir is not None:
        from bench.forking_learning import WORKED_EXAMPLES
        from bench.smoke import tiny_model

        args.model, args.batch_size, args.candidates, args.quick = str(tiny_model(smoke_dir.name)), 8, 4, True
        chains = [Chain("smoke", *WORKED_EXAMPLES[0])]
        torch.set_num_threads(1)
    else:
        chains = read_chains("builtin:champ")
    path = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    encs = [(c.id, encode(tok, c.question, c.reasoning, c.answer)) for c in chains]
    cid, enc = min(encs, key=lambda e: (abs(len(e[1].chain_ids) - args.target), e[0]))
    n = len(enc.chain_ids)
    print(f"chain {cid}: {n} chain tokens, {enc.total_len} tokens with question and answer; "
          f"torch threads {torch.get_num_threads()}")

    kept = list(range(n))
    stride = 3 if not args.quick else 5
    cands = list(range(0, n, stride))
    settings = PruneSettings(batch_size=args.batch_size)
    score_kept(model, enc, kept)  # warm-up
    t_batched, t_loop, diff = 0.0, 0.0, 0.0
    n_loop = 0
    rounds = 2
    for r in range(rounds):
        t = time.perf_counter()
        batched = score_candidates(model, enc, kept, cands, settings)
        t_batched += time.perf_counter() - t
        sub = cands[r::rounds * (2 if args.quick else 1)]  # the anchor loop times a subset of the candidates
        t = time.perf_counter()
        loop = [score_kept(model, enc, kept[:j] + kept[j + 1:]) for j in sub]
        t_loop += time.perf_counter() - t
        n_loop += len(sub)
        diff = max([diff] + [abs(batched[cands.index(j)] - s) for j, s in zip(sub, loop)])
    rate_b = rounds * len(cands) / t_batched
    rate_l = n_loop / t_loop
    print(f"exact mode, batched + shared prefix cache: {rate_b:.2f} candidates/s ({rounds} x {len(cands)} candidates, "
          f"batch {args.batch_size})")
    print(f"exact mode, one candidate at a time (anchor): {rate_l:.2f} candidates/s ({n_loop} candidates)")
    print(f"speedup vs anchor: {rate_b / rate_l:.2f}x; largest score difference {diff:.2e} nats")

    approx = PruneSettings(mode=APPROX, candidates=args.candidates, per_step=args.per_step,
                           batch_size=args.batch_size)
    stop = round(0.3 * n)
    t = time.perf_counter()
    result = prune(model, enc, approx, stop_at=stop)
    seconds = time.perf_counter() - t
    print(f"approx mode ({approx.candidates} candidates/step, {approx.per_step:g} deleted/step): {n} -> "
          f"{result.curve[-1][0]} tokens (30%) in {seconds:.1f} s, {len(result.curve) - 1} steps, "
          f"{result.candidates_scored} candidates scored")
    print(f"answer log-likelihood: full chain {result.curve[0][1]:.3f}, pruned to 30% {result.curve[-1][1]:.3f}")
    print(f"anchor-equivalent: the one-at-a-time loop would take {result.candidates_scored / rate_l:.1f} s for "
          f"these candidates; exact greedy to 30% needs {sum(range(stop + 1, n + 1))} candidates "
          f"(~{sum(range(stop + 1, n + 1)) / rate_b:.0f} s batched)")
    print(f"prune_speed: speedup={rate_b / rate_l:.2f} approx_tokens={n}->{result.curve[-1][0]} "
          f"approx_seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
