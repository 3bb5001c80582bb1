"""Evidence bench: does DAPO's dynamic sampling help GRPO at an equal number of generated samples? (not a test)

DAPO (arXiv 2503.14476) drops groups whose completions all score the same (zero advantage) and samples
again until the batch is full of informative groups; "Beyond the 80/20 Rule" trained with it. Extra
generation is not free, so the fair comparison is at an equal number of *generated samples*, not steps.

* Task, model, prompts and held-out scoring: bench/forking_learning.py's (few-shot 3-term addition,
  builtin SmolLM2-135M-Instruct + LoRA r 16, greedy held-out success, paired bootstrap over problems).
* Arms (same seeds, same hyper-parameters, loss dapo, beta 0): `grpo` (TRL's GRPO: every group trained),
  `ds` (dynamic_sampling, up to 4 generation batches per step), `ds_top20` (`ds` plus the step-scope
  forking mask at 0.2). Each arm trains until it has generated the same number of completions
  (`--samples`, default steps x prompts x completions): `grpo` spends it in that many steps, the
  dynamic-sampling arms in fewer steps of full informative batches. They stop at the end of the step
  that reaches the budget, so they may overshoot it by up to 3 generation batches: the `generated`
  column says by how much.
* Reported: held-out success per arm, each vs `grpo` as a paired difference with a 95% CI, the steps each
  arm took, its generation batches per step and share of groups dropped.

    .venv/bin/python -m bench.dapo_sampling --seeds 1 2 --steps 15   # the evidence run (about 2 h here)
    .venv/bin/python -m bench.dapo_sampling --smoke                  # a tiny local model: checks that it runs

`--smoke` swaps the builtin model for a tiny random one (bench/smoke.py) and adds a shaping reward (the
share of even token ids) so that a random model's groups vary at all; one seed, a budget of 3 steps of
2 prompts x 2 completions, 4 held-out problems: the same code path, numbers that mean nothing.

Measured 2026-12-07, a first small reading (`--seeds 1 --steps 4 --prompts 2 --heldout 32`, 32 completions per
arm, 4 min at load ~18): base 0.250; grpo 0.375 (4 steps); ds 0.438 (+0.062 [-0.062, +0.188] vs grpo) and
ds_top20 0.438 (+0.062 [-0.062, +0.188]), each 1 step: 88% of the base model's groups of 4 scored all-equal,
so the budget bought one step of 4 generation batches that still held only 1 of its 2 groups (short, trained
on 4 samples). No difference is shown at this size; the budget is far too small to say more.

Measured 2026-12-07 (`--seeds 1 2 --steps 8 --prompts 2 --heldout 64`, 64 completions per arm, 19 min at load
~18): base 0.266; grpo 0.695 (8 steps); ds 0.617, -0.078 [-0.164, +0.008] vs grpo (3.5 steps, 80 generated,
2.96 generation batches per step, 63% of groups dropped); ds_top20 0.602, -0.094 [-0.180, -0.008]. Per seed
(grpo / ds / ds_top20): 0.750 / 0.453 / 0.438 and 0.641 / 0.781 / 0.766: seed 1 favours grpo, seed 2 dynamic
sampling, and pooled the CI of ds touches 0. At this small budget dynamic
sampling is not better (worse pooled): it spends the same samples on fewer updates (3.5 instead of 8) and overshoots
the budget by 25%; the step-scope mask on top changes little. DAPO's gain is reported at scale, where the
batch is large and most groups vary; this setting (a 135M model, 2 prompts per step) does not reproduce it.

The last line is `dapo_sampling: ds_vs_grpo=D [L, H] ds_top20_vs_grpo=D [L, H] samples=N`.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

from bench.forking_learning import arithmetic_reward, make_problems, success  # noqa: E402

ARMS = {  # name: EntropyGRPOConfig overrides
    "grpo": {"top_entropy_quantile": 1.0},
    "ds": {"top_entropy_quantile": 1.0, "dynamic_sampling": True, "dynamic_sampling_max_batches": 4},
    "ds_top20": {"top_entropy_quantile": 0.2, "dynamic_sampling": True, "dynamic_sampling_max_batches": 4},
}


def even_share_reward(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
    """Smoke only: the share of even token ids (a random model's groups vary in it)."""
    return [sum(t % 2 == 0 for t in ids) / max(1, len(ids)) for ids in completion_ids]


def budget_trainer(budget: int):
    """EntropyGRPOTrainer that counts the completions it generates and stops at the step where the count
    reaches `budget` (every generation round counts, kept or dropped)."""
    from transformers import TrainerCallback

    from rl.train.trainer import EntropyGRPOTrainer

    class Stop(TrainerCallback):
        def __init__(self, trainer):
            self.trainer = trainer

        def on_step_end(self, args, state, control, **kwargs):
            if self.trainer.bench_generated >= budget:
                control.should_training_stop = True
            return control

    class Budgeted(EntropyGRPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.bench_generated = 0
            self.add_callback(Stop(self))

        def _generation_round(self, inputs):
            out = super()._generation_round(inputs)
            if self.model.training:
                self.bench_generated += len(inputs) * self.accelerator.num_processes
            return out

    return Budgeted


def train_arm(arm: str, seed: int, model_path: str, tok, train_rows, args, out_dir: Path, rewards):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from transformers.trainer_callback import PrinterCallback

    from rl.train.config import EntropyGRPOConfig

    per_step = args.prompts * args.generations
    config = EntropyGRPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=per_step, gradient_accumulation_steps=1,
        num_generations=args.generations, max_completion_length=args.max_new, learning_rate=args.lr,
        lr_scheduler_type="constant", warmup_steps=0, loss_type="dapo", beta=0.0, temperature=1.0, bf16=False,
        gradient_checkpointing=False, use_cpu=True, max_steps=-(-args.samples // per_step), logging_steps=1,
        save_strategy="no", report_to=["none"], seed=seed, data_seed=seed, disable_dropout=True,
        dataloader_num_workers=0, disable_tqdm=True, **ARMS[arm])
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    trainer = budget_trainer(args.samples)(model=model, reward_funcs=rewards, args=config,
                                           train_dataset=Dataset.from_list(train_rows), processing_class=tok,
                                           peft_config=lora)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    logs = trainer.state.log_history
    batches = [e["dynamic_sampling/generation_batches"] for e in logs if "dynamic_sampling/generation_batches" in e]
    dropped = [e["dynamic_sampling/dropped_share"] for e in logs if "dynamic_sampling/dropped_share" in e]
    stats = {"steps": trainer.state.global_step, "generated": trainer.bench_generated,
             "batches_per_step": sum(batches) / len(batches) if batches else 1.0,
             "dropped_share": sum(dropped) / len(dropped) if dropped else float("nan")}
    return trainer, stats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="a tiny local model, a budget of 3 small steps per arm, 4 held-out problems: checks that the "
                        "bench runs (its numbers mean nothing)")
    p.add_argument("--model", default="builtin:smollm2-135m-instruct", help="policy model (builtin, hub id or dir)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="training seeds")
    p.add_argument("--steps", type=int, default=15, help="GRPO steps the sample budget buys")
    p.add_argument("--samples", type=int, default=None, help="generated completions per arm (default: steps x "
                   "prompts x generations)")
    p.add_argument("--heldout", type=int, default=128, help="held-out problems")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--generations", type=int, default=4, help="completions per prompt")
    p.add_argument("--max-new", type=int, default=32, help="max completion tokens (train and eval)")
    p.add_argument("--lr", type=float, default=1e-4, help="LoRA learning rate")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    rewards = [arithmetic_reward]
    if args.smoke:
        args.seeds, args.steps, args.prompts, args.heldout, args.generations, args.max_new = [1], 3, 2, 4, 2, 8
        rewards = [arithmetic_reward, even_share_reward]
    args.samples = args.samples or args.steps * args.prompts * args.generations
    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.eval.stats import paired_bootstrap
    from rl.runtime.assets import resolve_model

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    smoke_dir = tempfile.TemporaryDirectory(prefix="dapo-sampling-smoke-") if args.smoke else None
    if smoke_dir is not None:
        from bench.smoke import tiny_model

        args.model = str(tiny_model(smoke_dir.name, chat_template=False))
    model_path = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(model_path)
    heldout = make_problems(args.heldout, seed=1000)
    base_model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    base = success(base_model, tok, heldout, args.max_new)
    del base_model
    scores = {a: [] for a in ARMS}
    stats = {a: [] for a in ARMS}
    with tempfile.TemporaryDirectory(prefix="dapo-sampling-") as tmp:
        for seed in args.seeds:
            # enough fresh problems for the extra generation batches (up to 4 per step)
            train_rows = make_problems(4 * args.steps * args.prompts, seed=seed)
            for arm in ARMS:
                t0 = time.perf_counter()
                trainer, st = train_arm(arm, seed, model_path, tok, train_rows, args, Path(tmp) / f"{arm}-{seed}",
                                        rewards)
                scores[arm] += success(trainer.model, tok, heldout, args.max_new)
                stats[arm].append(st)
                print(f"  seed {seed} {arm}: held-out {sum(scores[arm][-len(heldout):]) / len(heldout):.3f}, "
                      f"{st['steps']} steps, {st['generated']} generated ({time.perf_counter() - t0:.0f} s)",
                      file=sys.stderr)
                del trainer
                gc.collect()
    groups = list(range(len(heldout))) * len(args.seeds)
    print(f"\ndynamic sampling at equal generated samples: {args.model} + LoRA, 3-term addition, seeds {args.seeds}, "
          f"budget {args.samples} completions per arm ({args.prompts} prompts x {args.generations} per batch), "
          f"held-out greedy success on {len(heldout)} problems (x {len(args.seeds)} seeds); 95% CIs: paired "
          "bootstrap over problems")
    print(f"{'arm':<9} {'held-out':>9} {'vs grpo (95% CI)':>28} {'steps':>6} {'generated':>10} {'batches/step':>13} "
          f"{'dropped':>8}")
    print(f"{'base':<9} {sum(base) / len(base):>9.3f}")
    vs = {}
    for arm in ARMS:
        st = stats[arm]
        diff = paired_bootstrap(scores["grpo"], scores[arm], groups) if arm != "grpo" else None
        vs[arm] = f"{diff.diff:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]" if diff else ""
        print(f"{arm:<9} {sum(scores[arm]) / len(scores[arm]):>9.3f} {vs[arm]:>28} "
              f"{sum(s['steps'] for s in st) / len(st):>6.1f} {sum(s['generated'] for s in st) / len(st):>10.0f} "
              f"{sum(s['batches_per_step'] for s in st) / len(st):>13.2f} "
              f"{sum(s['dropped_share'] for s in st) / len(st):>8.2f}")
    print(f"total bench time {time.perf_counter() - start:.0f} s")
    print(f"dapo_sampling: ds_vs_grpo={vs['ds']} ds_top20_vs_grpo={vs['ds_top20']} samples={args.samples}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
