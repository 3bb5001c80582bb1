"""Evidence bench: does GRPO on only the top 20% highest-entropy tokens still learn? (not a test)

"Beyond the 80/20 Rule" (arXiv 2506.01939; Qwen3-8B/14B/32B, DAPO) finds that training only on the
top-20% entropy ("forking") tokens matches or beats all-token training, while the bottom 80% alone
degrades. This is a small-scale, offline version on this machine:

* Task: generated multi-step integer arithmetic ("What is 37 + 18 + 9?"), few-shot raw-text prompt
  whose examples reason one addition at a time and end with "The answer is N."; reward 1 when the
  completion's first "The answer is N" matches (`arithmetic_reward`, TRL's reward signature).
  Train and held-out problems are disjoint draws (different generator seeds).
* Model: builtin SmolLM2-135M-Instruct with a LoRA adapter (r 16, attention and MLP projections).
* Arms (same seeds, same prompts in the same order, same steps, same hyper-parameters):
  `all` (every token), `top20` (entropy_mask_scope step, ratio 0.2), `bottom80` (the complement,
  entropy_mask_side bottom), and `top20_mb` (scope micro_batch, TRL's population: one prompt's 4
  completions per micro-batch, 4 accumulation steps) unless `--no-micro-batch`.
  All use loss dapo, beta 0, normalisation over the kept tokens (Eq. 6).
* Held-out success: greedy decoding of the held-out problems, base model and each trained arm;
  each arm vs base and top20/bottom80 vs all as paired differences with a 95% paired-bootstrap CI
  over problems (rl/eval/stats.py), pooled over seeds (problem x seed units, resampled by problem).
* The most frequent kept (forking) tokens of the top20 runs, as in the paper's table.

    .venv/bin/python -m bench.forking_learning --quick   # 1 seed, 4 steps, 32 held-out, 3 arms (~20 min)
    .venv/bin/python -m bench.forking_learning --seeds 1 2 --steps 15 --no-micro-batch   # 70 min here
    .venv/bin/python -m bench.forking_learning --seeds 1 2 --steps 15 --arms all top20_mb  # one arm + its anchor
    .venv/bin/python -m bench.forking_learning --smoke   # a tiny local model, 1 step per arm: checks that it runs

Cost on this 2-core CPU (one thread, the other core busy): 9-15 min per arm for 15 steps, so the
default (2 seeds x 30 steps x 4 arms) takes about 3 hours.

Measured 2026-12-05 (`--seeds 1 2 --steps 15 --no-micro-batch`, 4 prompts x 4 completions per step,
128 held-out problems, 70 min): base 0.227; all 0.738 (+0.512 [+0.422, +0.602] vs base), top20
0.699 (+0.473), bottom80 0.559 (+0.332); top20 - all -0.039 [-0.086, +0.012] (no detectable
difference), bottom80 - all -0.180 [-0.273, -0.086]: the paper's direction (top 20% matches all,
bottom 80% degrades), at a small scale. Per seed (all / top20 / bottom80): 0.656 / 0.609 / 0.500
and 0.820 / 0.789 / 0.617. The most frequent kept tokens were the line break, "Q" (the start of a
new example, every time), digits, " =", " The" and " +": where the sum is written and where the
answer is stated.

Measured 2026-12-06 (`--seeds 1 2 --steps 15 --arms all top20_mb`, 49 min): the micro-batch-scope
arm, one prompt's 4 completions per micro-batch. `all` reproduced the run above exactly (0.656 /
0.820 per seed), so both runs pair with it: top20_mb 0.750 (0.727 / 0.773 per seed), +0.523
[+0.438, +0.609] vs base and +0.012 [-0.027, +0.051] vs all. Selecting within each prompt's group
(every group keeps its own top 20%) matched all-token training here as the step scope did (top20
0.699, -0.039 [-0.086, +0.012]); the two were not paired with each other in one run.

Measured once with `--quick` (1 seed, 4 steps x 8 completions, 32 held-out, loaded machine, 21 min):
base 0.250; all 0.688, top20 0.719, bottom80 0.344; top20 - all +0.031 [+0.000, +0.094],
bottom80 - all -0.344 [-0.531, -0.188].

`--smoke` swaps the builtin model for a tiny random one (bench/smoke.py) and runs every arm for one
step of 2 prompts x 2 completions of 8 tokens, 4 held-out problems: the same code path, numbers
that mean nothing.

The forking-token table counts the kept tokens through the trainer's public `compute_loss` (the step's
selection travels in each micro-batch as `ForkingStep`), not through a private method.

The last line is `forking_learning: top20_vs_all=D [L, H] bottom80_vs_all=D [L, H] base=B`.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

# (question, worked chain, answer): the worked examples of both arithmetic benches (prune_sft.py too)
WORKED_EXAMPLES = [("What is 12 + 5 + 7?", "12 + 5 = 17. 17 + 7 = 24.", "24"),
                   ("What is 48 + 3 + 9?", "48 + 3 = 51. 51 + 9 = 60.", "60"),
                   ("What is 36 + 8 + 4?", "36 + 8 = 44. 44 + 4 = 48.", "48")]
FEW_SHOT = "".join(f"Q: {q}\nA: {r} The answer is {a}.\n\n" for q, r, a in WORKED_EXAMPLES)
ARMS = {  # name: EntropyGRPOConfig overrides
    "all": {"top_entropy_quantile": 1.0},
    "top20": {"top_entropy_quantile": 0.2, "entropy_mask_scope": "step"},
    "bottom80": {"top_entropy_quantile": 0.2, "entropy_mask_scope": "step", "entropy_mask_side": "bottom"},
    "top20_mb": {"top_entropy_quantile": 0.2, "entropy_mask_scope": "micro_batch"},
}
_ANSWER = re.compile(r"answer is\s*(-?\d+)")


def addition_terms(n: int, seed: int) -> list[tuple[int, int, int]]:
    """n additions (a, b, c): a two-digit, b and c one-digit; the same draws for the same seed."""
    rng = random.Random(seed)
    return [(rng.randint(10, 59), rng.randint(2, 9), rng.randint(2, 9)) for _ in range(n)]


def make_problems(n: int, seed: int) -> list[dict]:
    """n problems "a + b + c" (`addition_terms`): prompt and answer columns."""
    return [{"prompt": f"{FEW_SHOT}Q: What is {a} + {b} + {c}?\nA:", "answer": str(a + b + c)}
            for a, b, c in addition_terms(n, seed)]


def extract_answer(text: str) -> str | None:
    """The N of the first "answer is N" before the model starts another "Q:" example."""
    match = _ANSWER.search(text.split("\nQ:")[0])
    return match.group(1) if match else None


def arithmetic_reward(prompts, completions, completion_ids=None, answer=None, **kwargs) -> list[float]:
    """1.0 when the completion's stated answer equals the `answer` column, else 0.0."""
    return [float(extract_answer(c) == a) for c, a in zip(completions, answer)]


@torch.no_grad()
def success(model, tok, rows: list[dict], max_new: int, batch: int = 32) -> list[float]:
    """Greedy success (0/1) per problem."""
    model.eval()
    out = []
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        enc = tok([r["prompt"] for r in chunk], return_tensors="pt", padding=True, padding_side="left")
        seq = model.generate(**enc, do_sample=False, max_new_tokens=max_new, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(seq[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        out += arithmetic_reward(None, texts, answer=[r["answer"] for r in chunk])
    return out


def counting_trainer():
    """EntropyGRPOTrainer that also counts the kept tokens of every step (for the forking-token table).

    It reads the step's selection where the trainer hands it to the loss: each micro-batch's
    `ForkingStep` (step scope), in the public `compute_loss`. The micro-batches of a generation batch
    partition it, so the counts are those of the whole batch (num_iterations 1, as here)."""
    from rl.train.forking import ForkingStep
    from rl.train.trainer import EntropyGRPOTrainer

    class Counting(EntropyGRPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            step = ForkingStep.from_batch(inputs)
            if step is not None and self.model.training:
                ids, valid = inputs["completion_ids"], inputs["completion_mask"].bool()
                kept = step.mask & valid
                counts = self.__dict__.setdefault("bench_counts", (Counter(), Counter(), Counter()))
                counts[0].update(ids[kept].tolist())
                counts[1].update(ids[valid].tolist())
                for t, e in zip(ids[kept].tolist(), step.entropy[kept].tolist()):
                    counts[2][t] += e
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return Counting


def train_arm(arm: str, seed: int, model_path: str, tok, train_rows, args, out_dir: Path):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from rl.train.config import EntropyGRPOConfig

    # One micro-batch per step, except for the micro-batch-scope arm: with a single micro-batch its
    # population would be the step's and the arm would repeat top20. There each prompt's group is one
    # micro-batch (generations x prompts accumulation steps); the same completions are sampled (one
    # generation batch per step either way), and the other arms' updates do not depend on the layout
    # (step scope and DAPO's step-wide normalisation; tests/rl/train/test_forking_invariance.py).
    per_device, accumulation = args.prompts * args.generations, 1
    if ARMS[arm].get("entropy_mask_scope") == "micro_batch":
        per_device, accumulation = args.generations, args.prompts
    config = EntropyGRPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation, num_generations=args.generations, max_completion_length=args.max_new,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, loss_type="dapo", beta=0.0,
        temperature=1.0, bf16=False, gradient_checkpointing=False, use_cpu=True, max_steps=args.steps,
        logging_steps=1, save_strategy="no", report_to=["none"], seed=seed, data_seed=seed,
        disable_dropout=True, dataloader_num_workers=0, disable_tqdm=True, entropy_mask_normalize="kept",
        **ARMS[arm])
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    trainer = counting_trainer()(model=model, reward_funcs=[arithmetic_reward], args=config,
                                 train_dataset=Dataset.from_list(train_rows), processing_class=tok, peft_config=lora)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    return trainer, rewards


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="1 seed, 4 steps of 2 prompts, 32 held-out problems, no micro-batch arm")
    p.add_argument("--smoke", action="store_true",
                   help="a tiny local model, 1 step of 2 prompts x 2 completions per arm, 4 held-out problems: checks "
                        "that the bench runs (its numbers mean nothing)")
    p.add_argument("--model", default="builtin:smollm2-135m-instruct", help="policy model (builtin, hub id or dir)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 1 2; quick: 1)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per arm (default 30; quick: 4)")
    p.add_argument("--heldout", type=int, default=None, help="held-out problems (default 128; quick: 32)")
    p.add_argument("--prompts", type=int, default=None, help="prompts per step (default 4; quick: 2)")
    p.add_argument("--generations", type=int, default=4, help="completions per prompt")
    p.add_argument("--max-new", type=int, default=32, help="max completion tokens (train and eval)")
    p.add_argument("--lr", type=float, default=1e-4, help="LoRA learning rate")
    p.add_argument("--no-micro-batch", dest="micro_batch", action="store_false",
                   help="skip the top20 micro-batch-scope arm")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=None,
                   help="train only these arms (default: all four; `all` is the reference of the vs-all column, "
                        "and runs are deterministic per seed, so an arm run alone pairs with an earlier `all`)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.steps, args.prompts, args.heldout = [1], 1, 2, 4
        args.generations, args.max_new = 2, 8
    args.seeds = args.seeds or ([1] if args.quick else [1, 2])
    args.steps = args.steps or (4 if args.quick else 30)
    args.prompts = args.prompts or (2 if args.quick else 4)
    if args.quick:
        args.micro_batch = False
    args.heldout = args.heldout or (32 if args.quick else 128)
    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.eval.stats import paired_bootstrap
    from rl.runtime.assets import resolve_model
    from rl.train.forking import top_forking_tokens

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    smoke_dir = tempfile.TemporaryDirectory(prefix="forking-learning-smoke-") if args.smoke else None
    if smoke_dir is not None:
        from bench.smoke import tiny_model

        args.model = str(tiny_model(smoke_dir.name, chat_template=False))
    model_path = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(model_path)
    heldout = make_problems(args.heldout, seed=1000)
    base_model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    base = success(base_model, tok, heldout, args.max_new)
    del base_model
    print(f"base held-out success {sum(base) / len(base):.3f} ({len(base)} problems)", file=sys.stderr)
    arms = [a for a in ARMS if (args.micro_batch or a != "top20_mb") and (args.arms is None or a in args.arms)]
    scores: dict[str, list[float]] = {a: [] for a in arms}
    train_reward: dict[str, list[float]] = {a: [] for a in arms}
    table = (Counter(), Counter(), Counter())
    with tempfile.TemporaryDirectory(prefix="forking-learning-") as tmp:
        for seed in args.seeds:
            train_rows = make_problems(args.steps * args.prompts, seed=seed)
            for arm in arms:
                t0 = time.perf_counter()
                trainer, rewards = train_arm(arm, seed, model_path, tok, train_rows, args, Path(tmp) / f"{arm}-{seed}")
                scores[arm] += success(trainer.model, tok, heldout, args.max_new)
                train_reward[arm] += rewards
                if arm == "top20":
                    if not hasattr(trainer, "bench_counts"):  # the loss never saw a ForkingStep
                        raise SystemExit("top20: no step selection reached compute_loss (ForkingStep keys renamed?); "
                                         "update bench/forking_learning.py `counting_trainer`")
                    for mine, theirs in zip(table, trainer.bench_counts):
                        mine.update(theirs)
                print(f"  seed {seed} {arm}: held-out {sum(scores[arm][-len(heldout):]) / len(heldout):.3f}, "
                      f"train reward {sum(rewards) / max(1, len(rewards)):.3f} ({time.perf_counter() - t0:.0f} s)",
                      file=sys.stderr)
                del trainer
                gc.collect()
    n_seeds = len(args.seeds)
    base_all = base * n_seeds
    groups = list(range(len(heldout))) * n_seeds  # resample problems; a problem's seeds stay together

    print(f"\nforking-token learning: {args.model} + LoRA, 3-term addition, seeds {args.seeds}, "
          f"{args.steps} steps x {args.prompts} prompts x {args.generations} completions, max {args.max_new} tokens, "
          f"lr {args.lr}; held-out greedy success on {len(heldout)} problems (x {n_seeds} seeds); "
          f"95% CIs: paired bootstrap over problems")
    print(f"{'arm':<10} {'held-out':>9} {'vs base (95% CI)':>28} {'vs all (95% CI)':>28} {'train reward':>13}")
    print(f"{'base':<10} {sum(base) / len(base):>9.3f}")
    rows = {}
    for arm in arms:
        vb = paired_bootstrap(base_all, scores[arm], groups)
        va = paired_bootstrap(scores["all"], scores[arm], groups) if arm != "all" and "all" in scores else None
        rows[arm] = va
        rr = train_reward[arm]
        vs_all = f"{va.diff:+.3f} [{va.low:+.3f}, {va.high:+.3f}]" if va else ""
        print(f"{arm:<10} {vb.after:>9.3f} {f'{vb.diff:+.3f} [{vb.low:+.3f}, {vb.high:+.3f}]':>28} {vs_all:>28} "
              f"{sum(rr) / max(1, len(rr)):>13.3f}")
    kept, valid, sums = table
    if kept:
        print("\nmost frequent kept (forking) tokens of the top20 runs:")
        print(f"{'token':<14} {'count':>6} {'occurs':>7} {'kept rate':>9} {'mean H':>7}")
        for text, _tid, count, occ, rate, mean_h in top_forking_tokens(kept, valid, sums, tok.decode, top=20):
            print(f"{text!r:<14} {count:>6} {occ:>7} {rate:>9.2f} {mean_h:>7.2f}")
    print(f"total bench time {time.perf_counter() - start:.0f} s")

    def vs_all(arm):
        r = rows.get(arm)
        return f"{r.diff:+.3f} [{r.low:+.3f}, {r.high:+.3f}]" if r else "n/a"

    extra = f" top20_mb_vs_all={vs_all('top20_mb')}" if "top20_mb" in rows else ""
    print(f"forking_learning: top20_vs_all={vs_all('top20')} bottom80_vs_all={vs_all('bottom80')}{extra} "
          f"base={sum(base) / len(base):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
