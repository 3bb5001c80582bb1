"""Benchmark: TRL's `top_entropy_quantile=0.2` vs entropy-rl's step-scope forking mask (ratio 0.2).

    .venv/bin/python -m bench.forking_mask [--quick] [--shapes toy smollm2-135m qwen3-0.6b] [--repeats 2]
                                           [--gradient-checkpointing] [--threads 1] [--no-agreement] [--smoke]

Shapes (random init from the architecture's config; `--quick` shortens the completions):
  toy           Qwen2, hidden 64 x 2 layers, 8 x 512 completion tokens, vocab 50,257 and 151,936
                (the LM head is nearly all the work: the headline of the selective head);
  smollm2-135m  SmolLM2-135M's config (builtin:smollm2-135m-instruct: Llama, hidden 576, 30 layers),
                8 x 128 completion tokens, vocab 49,152 (its own) and 151,936;
  qwen3-0.6b    Qwen3-0.6B's config (hidden 1024, 28 layers, 16/8 heads, head_dim 128, tied),
                8 x 64 completion tokens, vocab 151,936; plain SGD (two trainers with AdamW state
                would not fit next to other jobs; the optimizer step is identical for both).
The other rows use GRPOConfig's default optimizer, fused AdamW (`adamw_torch_fused`, which runs on
CPU): the unfused one allocates a square-root and a quotient of each parameter's second moment per
step, which made the optimizer step, identical for both trainers, the peak of ours.
The last two are the "realistic" rows; the last line is
`realistic: min_speedup=X max_memory_ratio=Y` (the worst realistic row for each).
`--smoke` (seconds, to check that the bench runs, not to read): one `smoke` row (Qwen2, hidden 32 x 1
layer, 8 x 16 completion tokens, vocab 50,257) through the same children and trainers, one measured
step, and the agreement check on a tiny local model instead of SmolLM2; its last line reports that row.

For each (shape, vocab), the random-init model samples 8 completions once (2 prompts x 4, plain
KV-cache loop, ids of the GPT-2 tokenizer, no EOS). While sampling, the loop also records each
step's entropy of softmax(logits / T) for ours, exactly what the trainer's generation-time
recorder (rl/train/sampling_entropy.py `GenerationEntropy`) does inside `generate`; that cost is timed and
ADDED to ours' step time (TRL's sampling does not pay it). Then TRL's GRPOTrainer and
EntropyGRPOTrainer, loaded from the same weights, train on those same completions (generation is
replayed), loss dapo, beta 0, 4 per-device x 2 accumulation micro-batches per optimizer step. The
trainers alternate one optimizer step each per round (load from other processes hits both alike):
one warm-up round (optimizer state), then `--repeats` measured rounds; medians and range.

TRL's best settings for this phase: TRL 1.16 always computes log-probs and entropies through its
chunked fused LM-head kernel (trl/kernels/chunked_logprob.py; no full logits tensor) and exposes
no chunk-size or other fused-head option (Liger's fused linear cross-entropy is refused by the
GRPO trainer), so the TRL row is already its best head. bf16 is off for both (slower on CPU).
Gradient checkpointing (TRL's GRPOConfig default) is off for both unless `--gradient-checkpointing`:
it trades a second backbone forward for activation memory on both sides.

What is measured: everything after sampling in one optimizer step, i.e. from the trainer's
`on_step_begin` to `on_step_end` minus the time spent in the (replayed) sampling call: prompt
padding, rewards, advantages, the selection (ours), the loss forwards and backwards of both
micro-batches, gradient clipping and the optimizer step.

Processes: each (shape, vocab) row runs in two fresh child processes, one for time and one for
memory, so no row inherits another's heap. The timing child builds the model, samples, saves both,
and times the steps under glibc's default allocator.

Memory method: the `peak MiB` column is the peak of live memory, from a child whose large allocations
are unmapped on free (docs/bench/forking_mask.md says how, and why RSS under glibc's defaults is not).

Entropy agreement (`--agreement`, default on): the real builtin SmolLM2-135M-Instruct samples 8 x 64
tokens with transformers `generate` (top-k 50, T 0.7) with the recorder in place, then a plain
training-time forward of the finished batch (LM head in float32) gives the same entropies: the
bench prints their max / mean absolute difference and the overlap of the top-20% sets.

Measured figures (tables, with and without gradient checkpointing, where the memory goes, earlier
readings): docs/bench/forking_mask.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from bench.forking_agreement import entropy_agreement  # noqa: E402
from bench.peak_memory import PeakRSS, allocations_back_to_the_os  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]  # the per-row children run as `python -m bench.forking_mask` here

N_PROMPTS, N_GEN = 2, 4
PER_DEVICE_BS, GRAD_ACC = 4, 2
RATIO = 0.2
TEMPERATURE = 1.0

# name: (architecture overrides, completion length, quick completion length, vocabularies, optimizer, realistic)
SHAPES = {
    "toy": ({"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2}, 512, 256, (50257, 151936), "adamw_torch_fused",
            False),
    "smollm2-135m": ("builtin", 128, 64, (49152, 151936), "adamw_torch_fused", True),
    "qwen3-0.6b": ({"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
                    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "rope_theta": 1e6,
                    "rms_norm_eps": 1e-6}, 64, 32, (151936,), "sgd", True),
    "smoke": ({"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
               "num_attention_heads": 4, "num_key_value_heads": 2}, 16, 16, (50257,), "adamw_torch_fused", False),
}
BENCH_SHAPES = ("toy", "smollm2-135m", "qwen3-0.6b")  # the default rows; `smoke` is --smoke's only row


class StepMeter(TrainerCallback):
    """Wall time and peak memory of each optimizer step, minus the replayed sampling time."""

    def __init__(self, trainer_ref: dict):
        self.trainer_ref = trainer_ref
        self.mem = PeakRSS()
        self.times, self.cpu_times, self.peaks = [], [], []

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer_ref["sampling_s"] = 0.0
        self.mem.start()
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = time.perf_counter() - self.t0
        self.cpu_times.append(time.process_time() - self.c0)
        self.peaks.append(self.mem.stop())
        self.times.append(elapsed - self.trainer_ref["sampling_s"])


# ----------------------------------------------------------------------------------------------
# Model, completions, trainers


def model_config(shape: str, vocab: int, tokenizer):
    """The architecture's config at this vocabulary (SmolLM2's from the builtin checkpoint's config.json)."""
    from transformers import AutoConfig

    arch = SHAPES[shape][0]
    if arch == "builtin":
        from rl.runtime.assets import resolve_model

        config = AutoConfig.from_pretrained(resolve_model("builtin:smollm2-135m-instruct"))
    else:
        arch = dict(arch)
        config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    config.update({"vocab_size": vocab, "tie_word_embeddings": True, "max_position_embeddings": 4096,
                   "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id, "use_cache": True})
    return config


def smollm2_tokenizer():
    """SmolLM2's own tokenizer (49,152 ids) for the rows whose vocabulary is smaller than GPT-2's."""
    from transformers import AutoTokenizer

    from rl.runtime.assets import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("builtin:smollm2-135m-instruct"))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_model(shape: str, vocab: int, path: Path, tokenizer):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config(shape, vocab, tokenizer), dtype=torch.float32)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: list[str], length: int):
    """N_GEN samples of exactly `length` tokens per prompt, temperature TEMPERATURE, from the model,
    with each sampled token's entropy (as the trainer's generation-time recorder computes it).

    Returns (completions, entropies per row, seconds spent on the entropies). A plain KV-cache loop
    on one thread. Sampling is restricted to ids < len(tokenizer) so the completions decode, and
    EOS is never sampled; the entropy is of the raw logits (before that restriction), as in training.
    """
    from rl.train.sampling_entropy import GenerationEntropy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [p for p in prompts for _ in range(N_GEN)]
        enc = tokenizer(rows, return_tensors="pt", padding=True, padding_side="left").to(model.device)
        ids, am = enc["input_ids"], enc["attention_mask"]
        step_pos = (am.cumsum(-1) - 1).clamp(min=0)
        gen = torch.Generator(model.device).manual_seed(1)  # on the model's device (bench/device_check.py: CUDA)
        recorder, entropy_s = GenerationEntropy(TEMPERATURE), 0.0
        out, past, step_ids = [], None, ids
        for _ in range(length):
            res = model(input_ids=step_ids, attention_mask=am, position_ids=step_pos, past_key_values=past,
                        use_cache=True, logits_to_keep=1)
            past = res.past_key_values
            raw = res.logits[:, -1].float()
            t0 = time.perf_counter()
            recorder(None, raw)
            entropy_s += time.perf_counter() - t0
            logits = raw[:, : len(tokenizer)] / TEMPERATURE
            logits[:, tokenizer.eos_token_id] = -float("inf")
            gumbel = -torch.empty_like(logits).exponential_(generator=gen).log()  # Gumbel-max = softmax sampling
            nxt = (logits + gumbel).argmax(-1, keepdim=True)
            out.append(nxt)
            step_ids, step_pos = nxt, step_pos[:, -1:] + 1
            am = torch.cat([am, torch.ones_like(nxt)], dim=1)
        completions = torch.cat(out, dim=1).tolist()
        return completions, recorder.per_row([length] * len(rows)), entropy_s
    finally:
        torch.set_num_threads(threads)


def content_reward(completions, completion_ids, **kwargs):
    return [sum(1 for t in ids if t % 2 == 0) / max(1, len(ids)) for ids in completion_ids]


def replaying(base, completions: list[list[int]], entropies, meter_ref: dict, ours: bool):
    """`base` with generation replayed: the same completions every step and, for ours, the entropies its
    recorder would have kept while sampling them.

    Generation is replayed through TRL's `_generate_single_turn` (TRL has no public hook that injects
    completions without switching ours' recorder off: its `rollout_func` does, and ours would then pay a
    no-grad pre-pass and the row would measure something else); ours gets the recorded entropies through
    its public hook `sampling_entropies`. Fails loudly (the smoke test with it) when the hook is gone,
    instead of silently timing a pre-pass."""

    if ours and not hasattr(base, "sampling_entropies"):
        raise RuntimeError("EntropyGRPOTrainer has no `sampling_entropies` hook any more: update "
                           "bench/forking_mask.py `replaying` to hand it the sampling-time entropies")

    class Replay(base):
        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            t0 = time.perf_counter()
            out = [list(completions[i % len(completions)]) for i in range(len(prompt_ids))]
            meter_ref["sampling_s"] = meter_ref.get("sampling_s", 0.0) + time.perf_counter() - t0
            meter_ref["replayed"] = meter_ref.get("replayed", 0) + 1
            return out, None

        def sampling_entropies(self, recorders, completion_ids):  # what the recorder kept during sampling
            return [(entropies[i % len(entropies)], list(c)) for i, c in enumerate(completion_ids)]

    return Replay


def make_trainer(impl: str, model_dir: Path, tokenizer, prompts, completions, entropies, out_dir: Path,
                 length: int, optim: str, gradient_checkpointing: bool = False, **config):
    """A trainer whose every `train()` call runs exactly one optimizer step on the replayed completions.
    `config`: config fields over this bench's (bench/device_check.py: `use_cpu=False, bf16=True`)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from rl.train.config import EntropyGRPOConfig
    from rl.train.trainer import EntropyGRPOTrainer

    common = dict(output_dir=str(out_dir), per_device_train_batch_size=PER_DEVICE_BS,
                  gradient_accumulation_steps=GRAD_ACC, num_generations=N_GEN,
                  max_completion_length=length, learning_rate=1e-5, loss_type="dapo", beta=0.0, optim=optim,
                  top_entropy_quantile=RATIO, temperature=TEMPERATURE, bf16=False,
                  gradient_checkpointing=gradient_checkpointing,
                  use_cpu=True, max_steps=1, logging_steps=1, save_strategy="no", report_to=["none"],
                  seed=0, disable_dropout=True, dataloader_num_workers=0, disable_tqdm=True)
    common.update(config)
    if impl == "trl":
        args, base = GRPOConfig(**common), GRPOTrainer
    else:
        args, base = EntropyGRPOConfig(entropy_mask_scope="step", entropy_mask_normalize="kept", **common), \
            EntropyGRPOTrainer
    ref: dict = {}
    meter = StepMeter(ref)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = replaying(base, completions, entropies, ref, impl == "ours")(
        model=model, reward_funcs=[content_reward], args=args, train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer, callbacks=[meter])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # keep stdout to the table
    trainer.bench_meter, trainer.bench_prepass, trainer.bench_ref = meter, [], ref
    if impl == "ours":  # a pre-pass should not run (entropies come from sampling); time it if it does
        time_scans(model, trainer.bench_prepass)
    return trainer


def time_scans(model, totals: list[float]) -> None:
    """Add the wall time of every no-grad forking scan forward of `model` (a `ForkingRequest` in mode "scan":
    the pre-pass that sampling-time entropies make unnecessary) to `totals[-1]`, through the model's public
    forward hooks (the trainer offers no hook around its scan)."""
    started: list[float] = []

    def scanning(kwargs) -> bool:
        return getattr(kwargs.get("forking"), "mode", None) == "scan"

    def before(module, args, kwargs):
        if scanning(kwargs):
            started.append(time.perf_counter())

    def after(module, args, kwargs, output):
        if scanning(kwargs):
            totals[-1] += time.perf_counter() - started.pop()

    model.register_forward_pre_hook(before, with_kwargs=True)
    model.register_forward_hook(after, with_kwargs=True)


def measure(trainers: dict, rounds: int) -> None:
    """Alternate one optimizer step of each trainer per round (drift on a shared machine hits both)."""
    for _ in range(rounds):
        for trainer in trainers.values():
            trainer.bench_prepass.append(0.0)
            trainer.bench_ref["replayed"] = 0
            trainer.train()  # one optimizer step; the optimizer (and its state) persists across calls
            if not trainer.bench_ref["replayed"]:
                raise RuntimeError("the step sampled instead of replaying (TRL's _generate_single_turn renamed?): "
                                   "update bench/forking_mask.py `replaying`")
            gc.collect()


def row_trainers(shape: str, tokenizer, prompts, completions, entropies, row_dir: Path, run: str, length: int,
                 gradient_checkpointing: bool) -> dict:
    """TRL's trainer and ours for one row, from the row's saved model, replaying these completions."""
    optim = SHAPES[shape][4]
    return {impl: make_trainer(impl, row_dir / "model", tokenizer, prompts, completions, entropies,
                               row_dir / f"{run}-{impl}", length, optim, gradient_checkpointing)
            for impl in ("trl", "ours")}


def row_length(shape: str, quick: bool) -> int:
    """Completion tokens per row of this shape (`--quick`: the shorter length)."""
    return SHAPES[shape][2] if quick else SHAPES[shape][1]


def time_row(shape: str, vocab: int, tokenizer, prompts, row_dir: Path, quick: bool, repeats: int,
             gradient_checkpointing: bool = False) -> dict:
    """Timing child: build the model, sample the completions (saved for the memory child), then time
    `repeats` optimizer steps of each trainer after a warm-up step."""
    optim, realistic = SHAPES[shape][4:6]
    length = row_length(shape, quick)
    model = build_model(shape, vocab, row_dir / "model", tokenizer)
    t0 = time.perf_counter()
    completions, entropies, entropy_s = sample_completions(model, tokenizer, prompts, length)
    sample_s = time.perf_counter() - t0
    torch.save({"completions": completions, "entropies": entropies}, row_dir / "completions.pt")
    del model
    gc.collect()
    row = {"shape": shape, "vocab": vocab, "length": length, "optim": optim, "realistic": realistic,
           "sample_s": sample_s, "gen_entropy_s": entropy_s, "gradient_checkpointing": gradient_checkpointing}
    trainers = row_trainers(shape, tokenizer, prompts, completions, entropies, row_dir, "run", length,
                            gradient_checkpointing)
    measure(trainers, 1 + repeats)  # round 0 is the warm-up (optimizer state allocation)
    for impl, trainer in trainers.items():
        meter = trainer.bench_meter
        extra = entropy_s if impl == "ours" else 0.0  # sampling-time entropies are ours' cost
        times = [t + extra for t in meter.times[1:]]
        row[impl] = {"time": statistics.median(times), "times": times,
                     "cpu": statistics.median(meter.cpu_times[1:]), "rss": statistics.median(meter.peaks[1:]),
                     "prepass": statistics.median(trainer.bench_prepass[1:]),
                     "kept": [e.get("forking/kept_fraction") for e in trainer.state.log_history],
                     "reason": getattr(trainer, "forking_selective_reason", None)}
        row["method"] = meter.mem.method
    return row


def memory_row(shape: str, vocab: int, tokenizer, prompts, row_dir: Path, quick: bool,
               gradient_checkpointing: bool = False) -> dict:
    """Memory child (allocator set by `allocations_back_to_the_os` before anything was allocated): the
    timing child's model and completions, one warm-up step each, then the peak of one more step."""
    saved = torch.load(row_dir / "completions.pt")
    trainers = row_trainers(shape, tokenizer, prompts, saved["completions"], saved["entropies"], row_dir, "mem",
                            row_length(shape, quick), gradient_checkpointing)
    measure(trainers, 2)
    return {impl: {"peak": trainer.bench_meter.peaks[-1]} for impl, trainer in trainers.items()}


def one_row(args, repeats: int) -> int:
    """Child process: the timing (or, with --memory, the memory) half of one (shape, vocab) row, written
    as JSON into --row-dir."""
    import json

    if args.memory:
        allocations_back_to_the_os()
    from tests.tiny_models import gpt2_tokenizer

    shape, vocab = args.one_row.split(":")
    vocab = int(vocab)
    tokenizer = gpt2_tokenizer()
    tok = tokenizer if vocab >= len(tokenizer) else smollm2_tokenizer()  # ids must fit the vocab
    prompts = ["Let x be a real number such that", "The first sentence of the story was"]
    row_dir = Path(args.row_dir)
    if args.memory:
        out = memory_row(shape, vocab, tok, prompts, row_dir, args.quick, args.gradient_checkpointing)
    else:
        out = time_row(shape, vocab, tok, prompts, row_dir, args.quick, repeats, args.gradient_checkpointing)
    (row_dir / ("memory.json" if args.memory else "time.json")).write_text(json.dumps(out))
    return 0


def row_in_children(shape: str, vocab: int, args, tmp: Path) -> dict:
    """One row = two fresh processes: timing under glibc's default allocator, then memory in a process
    whose allocator returns every large block at free (so its peak RSS is the live peak). Neither
    inherits another row's heap."""
    import json
    import subprocess

    row_dir = tmp / f"{shape}-{vocab}"
    row_dir.mkdir()
    cmd = [sys.executable, "-m", "bench.forking_mask", "--one-row", f"{shape}:{vocab}", "--row-dir", str(row_dir),
           "--threads", str(args.threads)] + (["--quick"] if args.quick else []) + \
        (["--gradient-checkpointing"] if args.gradient_checkpointing else []) + \
        (["--repeats", str(args.repeats)] if args.repeats else [])
    for extra in ([], ["--memory"]):
        proc = subprocess.run(cmd + extra, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"row {shape} vocab {vocab} {'memory' if extra else 'timing'} failed "
                             f"(exit {proc.returncode})")
    row = json.loads((row_dir / "time.json").read_text())
    for impl, mem in json.loads((row_dir / "memory.json").read_text()).items():
        row[impl].update(mem)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=list(BENCH_SHAPES), choices=list(SHAPES))
    p.add_argument("--quick", action="store_true", help="shorter completions and 1 measured step")
    p.add_argument("--smoke", action="store_true",
                   help="only the tiny `smoke` row, 1 measured step, agreement on a tiny local model: checks that "
                        "the bench runs (its numbers mean nothing)")
    p.add_argument("--repeats", type=int, default=None,
                   help="measured optimizer steps per trainer after 1 warm-up (default 2, --quick 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for the training steps (see the module docstring)")
    p.add_argument("--no-agreement", dest="agreement", action="store_false",
                   help="skip the sampling-time vs training-time entropy comparison on the real SmolLM2")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="both trainers recompute the backbone's layers in the backward (TRL's GRPOConfig default)")
    p.add_argument("--one-row", metavar="SHAPE:VOCAB", help=argparse.SUPPRESS)  # the per-row child process
    p.add_argument("--row-dir", help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.shapes, args.repeats = ["smoke"], 1
    repeats = args.repeats or (1 if args.quick else 2)
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' gradient_checkpointing renames
    if args.one_row:
        return one_row(args, repeats)

    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="forking-bench-") as tmp:
        for shape in args.shapes:
            for vocab in SHAPES[shape][3]:
                results.append(row_in_children(shape, vocab, args, Path(tmp)))
                print(f"  done {shape} vocab {vocab} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
        agreement = None
        if args.agreement and args.smoke:
            from bench.smoke import tiny_model

            agreement = entropy_agreement(RATIO, n_rows=4, length=16, model=str(tiny_model(tmp)))
        elif args.agreement:
            agreement = entropy_agreement(RATIO)
    total = time.perf_counter() - start

    print(f"\nforking mask, post-generation work of one optimizer step: {N_PROMPTS * N_GEN} completions, ratio "
          f"{RATIO}, {PER_DEVICE_BS} x {GRAD_ACC} micro-batches, {args.threads} threads, gradient checkpointing "
          f"{'on' if args.gradient_checkpointing else 'off'} (both); time: median of "
          f"{repeats} steps after a warm-up; peak MiB: live memory, a second step in a fresh process whose large "
          f"allocations are unmapped on free; rss MiB: {results[0]['method']} of the timed steps (glibc keeps "
          f"freed memory); both above the step's start; ratios vs TRL measured in the same processes")
    header = (f"{'shape':<13} {'vocab':>7} {'T':>4} {'impl':<5} {'time s':>8} {'(min..max)':>15} {'cpu s':>7} "
              f"{'peak MiB':>9} {'rss MiB':>8} {'speedup':>8} {'mem ratio':>9}")
    print(header)
    print("-" * len(header))
    for r in results:
        trl, ours = r["trl"], r["ours"]
        for name, d in (("trl", trl), ("ours", ours)):
            speed = trl["time"] / d["time"]
            mem = d["peak"] / trl["peak"] if trl["peak"] > 0 else float("nan")
            spread = f"({min(d['times']):.2f}..{max(d['times']):.2f})"
            print(f"{r['shape']:<13} {r['vocab']:>7} {r['length']:>4} {name:<5} {d['time']:>8.2f} {spread:>15} "
                  f"{d['cpu']:>7.2f} {d['peak'] / 2**20:>9.0f} {d['rss'] / 2**20:>8.0f} {speed:>7.2f}x {mem:>9.2f}")
        kept = sorted({round(k, 4) for k in ours["kept"] if k is not None})
        print(f"{'':>13} ours: sampling-time entropies {r['gen_entropy_s']:.2f} s (added to ours), pre-pass "
              f"{ours['prepass']:.2f} s; kept fraction {kept}; selective head {ours['reason'] or 'on'}; "
              f"optimizer {r['optim']}; sampling {r['sample_s']:.1f} s (not counted)")
    if agreement:
        print(agreement)
    print(f"total bench time {total:.0f} s")
    real = [r for r in results if r["realistic"]] or results
    min_speedup = min(r["trl"]["time"] / r["ours"]["time"] for r in real)
    max_ratio = max(r["ours"]["peak"] / r["trl"]["peak"] for r in real)
    print(f"realistic: min_speedup={min_speedup:.2f} max_memory_ratio={max_ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
