"""Evidence: SFT on reasoning chains pruned by likelihood vs random deletion vs surprisal deletion.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.prune_sft [--task champ|arithmetic] [--keep 0.5] [--quick] [--smoke]

The claim under test (arXiv 2601.03066): a student fine-tuned on chains pruned by the pruner's answer
likelihood does better than one trained on chains cut to the same length by other rules.

Tasks (`--task`):
* champ (default): CHAMP's human solutions (builtin:champ). Held out: every 5th problem in the
  dataset's order, the first `--heldout` of them (any chain length: the student writes its own
  chain). Training set: the `--train` shortest chains (by tokens, then id) among the other problems,
  short because likelihood pruning costs about two scored candidates per deleted token on this CPU.
* arithmetic: the builtin model's own correct chains (`rl prune --sample`'s code, rl/prune/samples.py):
  `--train` generated 3-term additions, 8 samples each at T 0.5 after 3 worked examples, the math
  reward, the first correct chain per question; held out: `--heldout` additions from another seed.
  Here the student can actually solve the task, so own-answer accuracy means something.
Each training chain is pruned to round(keep n) tokens (`--keep`, default 0.5) three ways (same kept
count): likelihood (`rl.prune.pruner.prune`, builtin model as pruner, approx mode: `--candidates`
scored per step, at most half of them deleted per step; labelled in the output); random (a different
order per seed); surprisal (the most predictable tokens in the full chain deleted first). A fourth,
reference arm trains on the unpruned chains.
Student: the builtin model (SmolLM2-135M-Instruct) with LoRA (r 16, all linear layers), TRL's
SFTTrainer on prompt = "Question: Q\\nReasoning:\\n", completion = pruned chain + "\\nAnswer: A"
(completion-only loss), `--epochs` epochs, same hyperparameters and seed per method; 3 seeds.

Metrics (held-out problems, zero-shot in the trained frame): the student writes its own chain
(greedy, up to `--max-new-tokens`, cut at "\\nAnswer"), then "\\nAnswer:" and the reference answer
are appended and the answer's log-likelihood (sum over its tokens, nats) is read off the student
(higher is better); and whether the student's own "Answer:" line is right (math reward). Reported
per method (mean over seeds x problems) and as paired differences (likelihood minus random, likelihood
minus surprisal) with 95% paired bootstrap CIs over problems (rl.eval.stats; each problem's seeds stay
together). The untrained model is scored once for reference.

Measured (2026-12-05, `--task arithmetic`, keep 0.5: 27 chains from 48 questions (122/384 samples
correct), 48 held-out, 3 epochs, 3 seeds, one thread, 49 min): answer log-likelihood base -8.88,
likelihood -10.28, random -4.93, surprisal -4.97, full -1.80; accuracy 0.000 / 0.000 / 0.000 / 0.007
for the pruned arms and 0.847 for the unpruned chains. likelihood - random -5.34 [-5.94, -4.74],
likelihood - surprisal -5.30 [-5.89, -4.70] nats. Halving a 21-token chain ("30 + 4 = 34. 34 + 8 =
42.") leaves nothing a student can learn the sum from, by any rule; likelihood pruning keeps the
result digits ("30 +434  42"), so its students learn to end a short digit string with a number and
copy it, confidently and wrongly, which the answer log-likelihood punishes hardest.

Measured (2026-12-05, `--task arithmetic --keep 0.8`, the same 27 chains, 3 seeds, two threads, 35
min): own-answer accuracy likelihood 0.174, random 0.083, surprisal 0.576, unpruned 0.840; answer
log-likelihood -7.72 / -6.50 / -2.30 / -2.03. likelihood - random: accuracy +0.090 [-0.021, +0.208]
(includes 0), log-likelihood -1.22 [-2.33, -0.05]; likelihood - surprisal: accuracy -0.403 [-0.542,
-0.264]. At a mild ratio, deleting the most predictable tokens first (spaces, repeated operators)
keeps most of the skill; likelihood pruning with a 135M pruner spends its deletions on the
intermediate results ("30 + 4 = 34. 3  42.") and keeps the final number.

Measured (2026-12-05, champ, full size: 16 training chains of at most 82 tokens (1,021 in all), 16
held-out, 3 epochs, 3 seeds, one thread, 32 min): answer log-likelihood base -13.29, likelihood
-12.60, random -10.90, surprisal -12.15, full (unpruned) -10.95; accuracy 0 in every arm (CHAMP is
far beyond a 135M model). likelihood - random -1.70 [-2.52, -0.80] (CI excludes 0), likelihood -
surprisal -0.45 [-1.46, +0.46] (includes 0). An earlier --quick run (8 chains, 2 epochs) pointed the
same way: likelihood - random -1.47 [-1.93, -1.10]. Neither task is the paper's setting (frontier
teacher, larger students, thousands of chains).

`--smoke`: a tiny local model as pruner and student, 4 written-out addition chains ("a + b = s. s + c
= t.", not sampled: a random model has no correct chains) and 2 held-out additions, 1 epoch, 1 seed,
the same pruning, training, scoring and report: checks that the bench runs (numbers mean nothing).

The last line is `prune_sft: likelihood_minus_random=D [L, H] likelihood_minus_surprisal=D [L, H]`
(held-out answer log-likelihood, nats).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
METHODS = ("likelihood", "random", "surprisal")  # pruned to 50%, compared with paired CIs
REFERENCE = "full"  # the unpruned chains, a reference row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 train chains, 8 held-out problems, 2 epochs")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny local model, 4 written-out addition chains, 2 held-out, 1 epoch, 1 seed: checks that "
                         "the bench runs (its numbers mean nothing)")
    ap.add_argument("--task", choices=["champ", "arithmetic"], default="champ",
                    help="champ: CHAMP's human solutions; arithmetic: the builtin model's own correct chains on "
                    "generated 3-term additions (rl prune --sample)")
    ap.add_argument("--train", type=int, default=None, help="train chains (arithmetic: questions sampled)")
    ap.add_argument("--heldout", type=int, default=None)
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--keep", type=float, default=0.5, help="keep ratio of the pruned chains (all three methods)")
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args(argv)
    if args.smoke:
        args.train, args.heldout, args.epochs, args.seeds, args.candidates, args.max_new_tokens = 4, 2, 1, 1, 4, 8
    q = args.quick
    arith = args.task == "arithmetic"
    args.train = args.train or (8 if q else 48 if arith else 16)
    args.heldout = args.heldout or (8 if q else 48 if arith else 16)
    args.epochs = args.epochs or (2 if q else 3)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.prune.pruner import (
        APPROX,
        PROMPT_TEMPLATE,
        SEP,
        PruneSettings,
        kept_positions,
        prune,
        pruned_text,
        random_order,
        surprisal_order,
    )
    from rl.runtime.assets import resolve_model

    torch.manual_seed(0)
    smoke_dir = tempfile.TemporaryDirectory(prefix="prune-sft-smoke-") if args.smoke else None
    if smoke_dir is not None:
        from bench.smoke import tiny_model

        torch.set_num_threads(1)
        path = str(tiny_model(smoke_dir.name, chat_template=False))
        args.task = "smoke"
    else:
        path = resolve_model("builtin:smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    t = time.perf_counter()
    task = {"arithmetic": arithmetic_task, "champ": champ_task, "smoke": smoke_task}[args.task]
    train, heldout = task(args, tok, base)
    print(f"task {args.task}, keep {args.keep}: {len(train)} train chains "
          f"({sum(len(e.chain_ids) for _, e in train)} tokens, at most "
          f"{max(len(e.chain_ids) for _, e in train)}), {len(heldout)} held-out problems; "
          f"torch threads {torch.get_num_threads()} ({time.perf_counter() - t:.0f} s)", flush=True)

    settings = PruneSettings(mode=APPROX, candidates=args.candidates, per_step=0.25)
    t = time.perf_counter()
    orders = {"likelihood": [], "surprisal": []}
    for c, e in train:
        n = len(e.chain_ids)
        orders["likelihood"].append(prune(base, e, settings, stop_at=round(args.keep * n)).order)
        orders["surprisal"].append(surprisal_order(base, e))
        print(f"  pruned {c.id} ({n} tokens) at {time.perf_counter() - t:.0f} s", flush=True)
    print(f"likelihood pruning of the training chains: {time.perf_counter() - t:.0f} s; "
          f"{'; '.join(settings.approximations())}")

    def dataset(method: str, seed: int) -> list[dict]:
        out = []
        for i, (c, e) in enumerate(train):
            n = len(e.chain_ids)
            if method == REFERENCE:
                kept = list(range(n))
            else:
                order = random_order(n, 1000 * seed + i) if method == "random" else orders[method][i]
                kept = kept_positions(order, n, args.keep)
            out.append({"prompt": PROMPT_TEMPLATE.format(question=c.question),
                        "completion": f"{pruned_text(e, kept, tok)}{SEP} {c.answer}"})
        return out

    print("example (first training chain):")
    for m in METHODS + (REFERENCE,):
        print(f"  {m:<10} {dataset(m, 0)[0]['completion']!r}")

    scores = {"base": evaluate(base, tok, heldout, args.max_new_tokens)}
    print(f"untrained model: mean held-out answer log-likelihood {mean(scores['base'][0]):.3f}")
    for method in METHODS + (REFERENCE,):
        scores[method] = ([], [], [])
        for seed in range(args.seeds):
            t = time.perf_counter()
            student = train_student(path, tok, dataset(method, seed), seed, args)
            lls, lens, right = evaluate(student, tok, heldout, args.max_new_tokens)
            for mine, new in zip(scores[method], (lls, lens, right)):
                mine.extend(new)
            print(f"{method:<10} seed {seed}: held-out answer log-likelihood {mean(lls):.3f}, "
                  f"own chain {mean(lens):.1f} tokens, own answer right {mean(right):.3f} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
    report(scores, [c.id for c, _ in heldout], args.seeds)


def champ_task(args, tok, base):
    """CHAMP's human solution chains: held out every 5th problem, train on the shortest others."""
    from rl.prune.chains import read_chains
    from rl.prune.pruner import encode

    rows = [(c, encode(tok, c.question, c.reasoning, c.answer)) for c in read_chains("builtin:champ")]
    heldout = rows[::5][:args.heldout]
    train = sorted((r for i, r in enumerate(rows) if i % 5), key=lambda r: (len(r[1].chain_ids), r[0].id))[:args.train]
    return train, heldout


def addition_problems(n: int, seed: int, written: bool = False):
    """n questions "What is a + b + c?" with their answers: the forking bench's additions (`written`: with
    the worked chain "a + b = s. s + c = t." as reasoning, else none)."""
    from bench.forking_learning import addition_terms
    from rl.prune.chains import Chain

    return [Chain(f"add{seed}-{i}", f"What is {a} + {b} + {c}?",
                  f"{a} + {b} = {a + b}. {a + b} + {c} = {a + b + c}." if written else "", str(a + b + c))
            for i, (a, b, c) in enumerate(addition_terms(n, seed))]


def smoke_task(args, tok, base):
    """--smoke: written-out addition chains (a random model samples no correct one) and held-out additions."""
    from rl.prune.pruner import encode

    train = [(c, encode(tok, c.question, c.reasoning, c.answer)) for c in addition_problems(args.train, 7, True)]
    heldout = [(c, encode(tok, c.question, "", c.answer)) for c in addition_problems(args.heldout, seed=1000)]
    return train, heldout


def arithmetic_task(args, tok, base):
    """The builtin model's own correct chains (8 samples per question at T 0.5 after 3 worked
    examples, the math reward, first correct chain per question: `rl prune --sample`'s code), and
    held-out questions from another generator seed."""
    from rewards.math import math_reward
    from rl.prune.chains import Chain
    from rl.prune.pruner import encode
    from rl.prune.samples import SampleSettings, few_shot_prefix, sample_chains

    from bench.forking_learning import WORKED_EXAMPLES

    settings = SampleSettings(samples=8, max_new_tokens=40, temperature=0.5,
                              prefix=few_shot_prefix([Chain("ex", q, r, a) for q, r, a in WORKED_EXAMPLES]))
    chains, records = sample_chains(base, tok, addition_problems(args.train, seed=7), math_reward, settings)
    print(f"policy samples: {sum(r['correct'] for r in records)}/{len(records)} correct; "
          f"{len(chains)} questions with a correct chain", flush=True)
    train = [(c, encode(tok, c.question, c.reasoning, c.answer)) for c in chains]
    heldout = [(c, encode(tok, c.question, "", c.answer)) for c in addition_problems(args.heldout, seed=1000)]
    return train, heldout


def mean(xs) -> float:
    return sum(xs) / len(xs)


def train_student(path, tok, rows, seed, args):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=4,
                           learning_rate=args.lr, lr_scheduler_type="constant", seed=seed, report_to="none",
                           save_strategy="no", logging_steps=1000, use_cpu=True, max_length=512,
                           disable_tqdm=True)
        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             peft_config=lora)
        trainer.train()
    return trainer.model.eval()


def evaluate(model, tok, heldout, max_new_tokens) -> tuple[list[float], list[int], list[float]]:
    """Per held-out problem: answer log-likelihood after the model's own greedy chain, the chain's
    length, and whether the model's own "Answer:" line is right (math reward, 0/1)."""
    import torch

    from rewards.math import math_reward
    from rl.prune.pruner import PROMPT_TEMPLATE, Encoded, score_kept
    from rl.prune.samples import split_sample

    lls, lens, right = [], [], []
    for c, e in heldout:
        ids = torch.tensor([e.prompt_ids])
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        full = tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
        text = full.split("\nAnswer")[0]
        own = tok(text, add_special_tokens=False)["input_ids"]
        enc = Encoded(tok(PROMPT_TEMPLATE.format(question=c.question), add_special_tokens=False)["input_ids"], own,
                      e.sep_ids, e.answer_ids)
        lls.append(score_kept(model, enc, list(range(len(own)))))
        lens.append(len(own))
        part = split_sample(full)  # no "Answer:" line counts as wrong
        right.append((math_reward(completions=[part[2]], solution=[c.answer])[0] or 0.0) if part else 0.0)
    return lls, lens, right


def report(scores, ids, seeds) -> None:
    from rl.eval.stats import paired_bootstrap

    groups = ids * seeds
    print("\nheld-out answer log-likelihood (nats, higher is better) and own-answer accuracy, mean over seeds x "
          "problems:")
    for m in ("base",) + METHODS + (REFERENCE,):
        print(f"  {m:<10} {mean(scores[m][0]):8.3f}   own chain {mean(scores[m][1]):5.1f} tokens   "
              f"accuracy {mean(scores[m][2]):.3f}")
    last = []
    for metric, i in (("answer log-likelihood", 0), ("accuracy", 2)):
        for other in ("random", "surprisal"):
            d = paired_bootstrap(scores[other][i], scores["likelihood"][i], groups)
            verdict = "CI excludes 0" if d.excludes_zero else "CI includes 0 (no detectable difference)"
            print(f"{metric}: likelihood - {other}: {d.diff:+.3f}, 95% CI [{d.low:+.3f}, {d.high:+.3f}] over "
                  f"{d.groups} problems x {seeds} seeds; {verdict}")
            if i == 0:
                last.append(f"likelihood_minus_{other}={d.diff:+.3f} [{d.low:+.3f}, {d.high:+.3f}]")
    print("prune_sft: " + " ".join(last))


if __name__ == "__main__":
    main()
