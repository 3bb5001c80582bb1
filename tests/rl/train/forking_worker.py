"""One GRPO optimizer step with deterministic fake generation; shared by the forking tests.

As a library: `fake_generation_trainer(base)` subclasses a GRPOTrainer class so that generation
returns completions that are a pure function of (prompt token ids, global sample index), and
records which (sample, position) pairs the loss mask keeps. `content_reward` depends on the
completion's tokens, so the copies of a prompt get different rewards and non-zero advantages.

As a script (run plainly, or under `accelerate launch` for several ranks): build a trainer on a
tiny model, run exactly one optimizer step with SGD, and write (from rank 0) the parameter
update and the kept set to --out (torch.save). Layout (ranks x accumulation x micro-batch) comes
from the command line; the generation batch is the same in every layout.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import torch

PROMPTS = [
    "The sum of two and two is",
    "A prime number greater than ten is",
    "Once upon a time, in a small village by the sea, there lived",
    "To solve the equation x squared minus four equals zero, we",
    "The capital of France is",
    "In computer science, a hash table maps keys to",
    "Water boils at a temperature of",
    "Seven times eight equals",
]


def fake_completion(prompt_ids, gidx: int, vocab: int, eos_id: int, min_len: int = 5, max_len: int = 16) -> list[int]:
    """Deterministic completion for (prompt, global sample index); some end with EOS, some do not."""
    seed = int.from_bytes(hashlib.sha256(f"{list(prompt_ids)}|{gidx}".encode()).digest()[:8], "little")
    g = torch.Generator().manual_seed(seed)
    length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
    ids = torch.randint(0, min(vocab, 50000), (length,), generator=g).tolist()
    ids = [i if i != eos_id else i - 1 for i in ids]
    if length < max_len:  # finished early: ends with EOS
        ids[-1] = eos_id
    return ids


def content_reward(completions, completion_ids, **kwargs) -> list[float]:
    """Fraction of even token ids: depends only on the completion's tokens."""
    return [sum(1 for t in ids if t % 2 == 0) / max(1, len(ids)) for ids in completion_ids]


FLAT = ("The", "Seven")  # prompts starting with these get one reward for every completion (dynamic sampling tests)


def half_flat_reward(prompts, completions, completion_ids, **kwargs) -> list[float]:
    """Constant for prompts starting with FLAT (their groups never vary), `content_reward` otherwise."""
    varied = content_reward(completions, completion_ids)
    return [1.0 if str(p).startswith(FLAT) else v for p, v in zip(prompts, varied)]


def fake_generation_trainer(base):
    """Subclass of `base` with deterministic generation and a record of kept (sample, position) pairs."""

    class FakeGeneration(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.kept_records: list[tuple[int, int]] = []
            self.weight_records: list[tuple[int, int, float]] = []
            self._worker_inputs = None

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            offset = self.accelerator.process_index * len(prompt_ids)
            vocab = self.model.config.vocab_size
            eos = self._tokenizer.eos_token_id
            return [fake_completion(p, offset + i, vocab, eos) for i, p in enumerate(prompt_ids)], None

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            n = out["completion_ids"].shape[0]
            start = self.accelerator.process_index * n
            out["sample_gidx"] = torch.arange(start, start + n, device=out["completion_ids"].device)
            return out

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self._worker_inputs = inputs
            try:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                self._worker_inputs = None

        def get_high_entropy_mask(self, entropies, mask, threshold):
            weights = super().get_high_entropy_mask(entropies, mask, threshold)
            if self._worker_inputs is not None:
                gidx = self._worker_inputs["sample_gidx"]
                for r, c in (weights > 0).nonzero().tolist():
                    self.kept_records.append((int(gidx[r]), int(c)))
                    self.weight_records.append((int(gidx[r]), int(c), float(weights[r, c])))
            return weights

    FakeGeneration.__name__ = f"FakeGeneration{base.__name__}"
    return FakeGeneration


def prompt_dataset(n_prompts: int):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": PROMPTS[:n_prompts]})


def make_trainer(model_dir, output_dir, *, impl="ours", bs=4, ga=1, num_generations=4, n_prompts=4,
                 ratio=0.2, loss_type="dapo", scope="step", normalize="kept", lr=1.0, max_steps=1,
                 use_peft=False, seed=0, report_to=("none",), dtype=torch.float32, callbacks=(), reward_funcs=None,
                 **extra):
    """A fake-generation trainer (ours: EntropyGRPOTrainer, trl: GRPOTrainer) on the tiny model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rl.train.config import EntropyGRPOConfig
    from rl.train.trainer import EntropyGRPOTrainer

    common = dict(
        output_dir=str(output_dir), per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
        num_generations=num_generations, max_completion_length=16, learning_rate=lr, optim="sgd",
        lr_scheduler_type="constant", max_grad_norm=0.0, beta=0.0, loss_type=loss_type,
        top_entropy_quantile=ratio, bf16=False, gradient_checkpointing=False, use_cpu=True, max_steps=max_steps,
        logging_steps=1, save_strategy="no", report_to=list(report_to), seed=seed, data_seed=seed,
        temperature=0.7, disable_dropout=True, dataloader_num_workers=0,
    )
    common.update(extra)
    if impl == "ours":
        config = EntropyGRPOConfig(entropy_mask_scope=scope, entropy_mask_normalize=normalize, **common)
        base = EntropyGRPOTrainer
    else:
        config = GRPOConfig(**common)
        base = GRPOTrainer
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    peft_config = None
    if use_peft:
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                 task_type="CAUSAL_LM")
    cls = fake_generation_trainer(base)
    return cls(model=model, reward_funcs=list(reward_funcs or [content_reward]), args=config, train_dataset=prompt_dataset(n_prompts),
               processing_class=tok, peft_config=peft_config, callbacks=list(callbacks))


def trainable_state(trainer) -> dict[str, torch.Tensor]:
    """Full copies of the trainable parameters (gathered first under DeepSpeed ZeRO-3)."""
    import contextlib

    model = trainer.accelerator.unwrap_model(trainer.model)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    gather = contextlib.nullcontext()
    if any(hasattr(p, "ds_id") for _, p in params):
        import deepspeed

        gather = deepspeed.zero.GatheredParameters([p for _, p in params])
    with gather:
        return {n: p.detach().clone() for n, p in params}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--impl", default="ours", choices=["ours", "trl"])
    p.add_argument("--bs", type=int, default=4)
    p.add_argument("--ga", type=int, default=1)
    p.add_argument("--scope", default="step")
    p.add_argument("--normalize", default="kept")
    p.add_argument("--loss-type", default="dapo")
    p.add_argument("--no-selective", action="store_true")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--zero3", action="store_true", help="launched with recipes/accelerate/zero3.yaml (CPU ranks)")
    p.add_argument("--zero2", action="store_true", help="launched with recipes/accelerate/zero2.yaml (CPU ranks)")
    p.add_argument("--dynamic-sampling", action="store_true",
                   help="8 prompts, half_flat_reward, dynamic sampling on (up to 4 generation batches)")
    args = p.parse_args(argv)
    extra = {}
    if args.dynamic_sampling:
        extra.update(dynamic_sampling=True, dynamic_sampling_max_batches=4, n_prompts=8,
                     reward_funcs=[half_flat_reward])
    if args.zero3 or args.zero2:  # DeepSpeed on CPU ranks: the same workarounds as `rl train`
        from rl.runtime.cpu_distributed import apply_cpu_workarounds

        apply_cpu_workarounds()
        extra["use_cpu"] = False

    import torch.distributed as dist
    from accelerate.utils import gather_object

    import rl.train.forking

    selective_calls = []
    real_selected = rl.train.forking.selected_logps

    def counting_selected(head, hidden, *a, **k):
        selective_calls.append((hidden.shape[0], bool(k.get("grad_into_param"))))
        return real_selected(head, hidden, *a, **k)

    rl.train.forking.selected_logps = counting_selected
    torch.manual_seed(0)
    trainer = make_trainer(args.model_dir, Path(args.out).parent / f"run-{os.getpid()}", impl=args.impl, bs=args.bs,
                           ga=args.ga, scope=args.scope, normalize=args.normalize, loss_type=args.loss_type,
                           dtype=getattr(torch, args.dtype), **extra)
    if args.no_selective:
        trainer.forking_selective_head = False
    before = trainable_state(trainer)
    trainer.train()
    after = trainable_state(trainer)
    kept = sorted(set(sum(gather_object([trainer.kept_records]), [])))
    weights = sorted(sum(gather_object([trainer.weight_records]), []))
    world = trainer.accelerator.num_processes
    plugin = trainer.accelerator.state.deepspeed_plugin
    zero_stage = plugin.zero_stage if plugin is not None else None  # a layout that silently fell back shows here
    if trainer.accelerator.is_main_process:
        torch.save({"update": {n: after[n] - before[n] for n in after}, "kept": kept, "weights": weights,
                    "world": world, "zero_stage": zero_stage, "log": trainer.state.log_history,
                    "selective_calls": len(selective_calls),
                    "head_grad_into_param": sorted({in_place for _, in_place in selective_calls}),
                    "selective": getattr(trainer, "forking_selective_reason", "n/a")}, args.out)
    if dist.is_initialized():
        dist.barrier()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    sys.exit(main())
