"""Benchmark: TRL's `top_entropy_quantile=0.2` vs entropy-rl's step-scope forking mask (ratio 0.2).

    .venv/bin/python bench/forking_mask.py [--vocabs 50257 151936] [--repeats 3]

For each vocabulary size, one random-init tiny-backbone Qwen2 model (hidden 64, 2 layers, tied
embeddings) samples 8 completions of 512 tokens once (2 prompts x 4, sampling restricted to the
GPT-2 tokenizer's ids so they decode). Then TRL's GRPOTrainer and EntropyGRPOTrainer, loaded from
the same weights, train on those same completions (generation is replayed), loss dapo, beta 0,
AdamW, 4 per-device x 2 accumulation micro-batches = the 8 x 512 completion tokens per optimizer
step. The two trainers alternate one optimizer step each per round (so load from other processes
hits both alike): one warm-up round (optimizer state allocation), then `--repeats` measured
rounds; the table reports medians and the range.

What is measured: everything after sampling in one optimizer step, i.e. from the trainer's
`on_step_begin` to `on_step_end` minus the time spent in the (replayed) sampling call: prompt
padding, rewards, advantages, our entropy pre-pass and selection (ours only), the loss forwards
and backwards of both micro-batches, gradient clipping and the optimizer step.

Memory method: peak resident memory of the process above what it held when the step began. At
`on_step_begin` the bench collects garbage, calls glibc `malloc_trim(0)` (so pages freed earlier
are returned to the OS rather than silently reused), reads VmRSS and resets the kernel's peak-RSS
counter (writing 5 to /proc/self/clear_refs); at `on_step_end` it reads VmHWM. The kernel tracks the
peak exactly (no sampling gaps) and it covers every allocation: torch's CPU allocator is invisible
to tracemalloc, and the torch profiler misses BLAS workspaces. Where clear_refs is not writable the
bench falls back to a psutil thread sampling RSS every millisecond (may miss short spikes).
Time: wall-clock seconds (the table's `time s`, median and range; `speedup` = TRL's median / ours)
and, for reference, the process CPU seconds of the step (`cpu s`, all threads).

Threads: one torch intra-op thread by default (`--threads 2` uses both cores). On a 2-core machine
shared with other jobs, two OpenMP threads made step times swing 2-5x with the other jobs' load
(each parallel region waits for a descheduled thread, and our chunked head has many more regions
than TRL's few huge tiles), so medians of a few steps were unreliable; with one thread the
ranges stay within a few percent. Measured on a quiet machine with `--threads 2`: 50,257 vocab
5.6x faster at 0.08x the memory, 151,936 vocab 4.5x faster at 0.19x (one thread: 5.3x / 0.07x,
4.6x / 0.14x).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

HIDDEN, LAYERS = 64, 2
N_PROMPTS, N_GEN, COMPLETION_LEN = 2, 4, 512
PER_DEVICE_BS, GRAD_ACC = 4, 2
RATIO = 0.2


# ----------------------------------------------------------------------------------------------
# Memory


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakRSS:
    """Peak RSS (bytes) above the RSS at `start()`; kernel high-water mark, or a sampling thread."""

    def __init__(self):
        self._libc = ctypes.CDLL("libc.so.6")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM"
        except OSError:
            import psutil

            self.method, self._proc = "psutil-1ms", psutil.Process()
        self._thread = None

    def start(self):
        gc.collect()
        self._libc.malloc_trim(0)
        self.base = _status_kib("VmRSS") * 1024
        if self.method == "VmHWM":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        else:
            self._peak, self._stop = self.base, False
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self):
        while not self._stop:
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(0.001)

    def stop(self) -> int:
        if self.method == "VmHWM":
            peak = _status_kib("VmHWM") * 1024
        else:
            self._stop = True
            self._thread.join()
            peak = self._peak
        return peak - self.base


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


def build_model(vocab: int, path: Path, tokenizer):
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                         num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: list[str]) -> list[list[int]]:
    """N_GEN samples of exactly COMPLETION_LEN tokens per prompt, temperature 1, from the model.

    A plain KV-cache loop on one thread (tiny per-token ops; HF `generate` and OpenMP barriers
    under a loaded machine cost far more than the arithmetic). Sampling is restricted to
    ids < len(tokenizer) so the completions decode, and EOS is never sampled.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _sample(model, tokenizer, prompts)
    finally:
        torch.set_num_threads(threads)


def _sample(model, tokenizer, prompts):
    rows = [p for p in prompts for _ in range(N_GEN)]
    enc = tokenizer(rows, return_tensors="pt", padding=True, padding_side="left")
    ids, am = enc["input_ids"], enc["attention_mask"]
    position_ids = (am.cumsum(-1) - 1).clamp(min=0)
    gen = torch.Generator().manual_seed(1)
    out, past, step_ids, step_pos = [], None, ids, position_ids
    for _ in range(COMPLETION_LEN):
        res = model(input_ids=step_ids, attention_mask=am, position_ids=step_pos, past_key_values=past,
                    use_cache=True, logits_to_keep=1)
        past = res.past_key_values
        logits = res.logits[:, -1, : len(tokenizer)].float()
        logits[:, tokenizer.eos_token_id] = -float("inf")
        gumbel = -torch.empty_like(logits).exponential_(generator=gen).log()  # Gumbel-max = softmax sampling
        nxt = (logits + gumbel).argmax(-1, keepdim=True)
        out.append(nxt)
        step_ids, step_pos = nxt, step_pos[:, -1:] + 1
        am = torch.cat([am, torch.ones_like(nxt)], dim=1)
    return torch.cat(out, dim=1).tolist()


def content_reward(completions, completion_ids, **kwargs):
    return [sum(1 for t in ids if t % 2 == 0) / max(1, len(ids)) for ids in completion_ids]


def replaying(base, completions: list[list[int]], meter_ref: dict):
    class Replay(base):
        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            t0 = time.perf_counter()
            out = [list(completions[i % len(completions)]) for i in range(len(prompt_ids))]
            meter_ref["sampling_s"] = meter_ref.get("sampling_s", 0.0) + time.perf_counter() - t0
            return out, None

    return Replay


def make_trainer(impl: str, model_dir: Path, tokenizer, prompts, completions, out_dir: Path):
    """A trainer whose every `train()` call runs exactly one optimizer step on the replayed completions."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from rl.train.config import EntropyGRPOConfig
    from rl.train.trainer import EntropyGRPOTrainer

    common = dict(output_dir=str(out_dir), per_device_train_batch_size=PER_DEVICE_BS,
                  gradient_accumulation_steps=GRAD_ACC, num_generations=N_GEN,
                  max_completion_length=COMPLETION_LEN, learning_rate=1e-5, loss_type="dapo", beta=0.0,
                  top_entropy_quantile=RATIO, temperature=1.0, bf16=False, gradient_checkpointing=False,
                  use_cpu=True, max_steps=1, logging_steps=1, save_strategy="no", report_to=["none"],
                  seed=0, disable_dropout=True, dataloader_num_workers=0, disable_tqdm=True)
    if impl == "trl":
        args, base = GRPOConfig(**common), GRPOTrainer
    else:
        args, base = EntropyGRPOConfig(entropy_mask_scope="step", entropy_mask_normalize="kept", **common), \
            EntropyGRPOTrainer
    ref: dict = {}
    meter = StepMeter(ref)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = replaying(base, completions, ref)(model=model, reward_funcs=[content_reward], args=args,
                                                train_dataset=Dataset.from_dict({"prompt": prompts}),
                                                processing_class=tokenizer, callbacks=[meter])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # keep stdout to the table
    trainer.bench_meter, trainer.bench_prepass = meter, []
    if impl == "ours":  # time the entropy pre-pass (part of the measured step) separately
        scan = trainer._forking_scan

        def timed_scan(*a, **k):
            t0 = time.perf_counter()
            try:
                return scan(*a, **k)
            finally:
                trainer.bench_prepass[-1] += time.perf_counter() - t0

        trainer._forking_scan = timed_scan
    return trainer


def measure(trainers: dict, rounds: int) -> None:
    """Alternate one optimizer step of each trainer per round (drift on a shared machine hits both)."""
    for _ in range(rounds):
        for trainer in trainers.values():
            trainer.bench_prepass.append(0.0)
            trainer.train()  # one optimizer step; the optimizer (and its state) persists across calls
            gc.collect()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocabs", type=int, nargs="+", default=[50257, 151936])
    p.add_argument("--repeats", type=int, default=3, help="measured optimizer steps per trainer (after 1 warm-up)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for the training steps (see the module docstring)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' gradient_checkpointing renames
    from tests.tiny_models import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    prompts = ["Let x be a real number such that", "The first sentence of the story was"]
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="forking-bench-") as tmp:
        for vocab in args.vocabs:
            model_dir = Path(tmp) / f"model-{vocab}"
            model = build_model(vocab, model_dir, tokenizer)
            t0 = time.perf_counter()
            completions = sample_completions(model, tokenizer, prompts)
            sample_s = time.perf_counter() - t0
            del model
            row = {"vocab": vocab, "sample_s": sample_s}
            trainers = {impl: make_trainer(impl, model_dir, tokenizer, prompts, completions,
                                           Path(tmp) / f"run-{vocab}-{impl}") for impl in ("trl", "ours")}
            measure(trainers, 1 + args.repeats)  # round 0 is the warm-up (optimizer state allocation)
            for impl, trainer in trainers.items():
                meter = trainer.bench_meter
                row[impl] = {"time": statistics.median(meter.times[1:]), "times": meter.times[1:],
                             "cpu": statistics.median(meter.cpu_times[1:]),
                             "peak": statistics.median(meter.peaks[1:]),
                             "prepass": statistics.median(trainer.bench_prepass[1:]),
                             "kept": [e.get("forking/kept_fraction") for e in trainer.state.log_history],
                             "reason": getattr(trainer, "forking_selective_reason", None)}
                row["method"] = meter.mem.method
            del trainers
            gc.collect()
            results.append(row)
    total = time.perf_counter() - start

    print(f"\nforking mask, post-generation work of one optimizer step: {N_PROMPTS * N_GEN} x {COMPLETION_LEN} "
          f"completion tokens, ratio {RATIO}, hidden {HIDDEN} x {LAYERS} layers, {PER_DEVICE_BS} x {GRAD_ACC} "
          f"micro-batches, {torch.get_num_threads()} threads; median of {args.repeats} steps; "
          f"peak memory = {results[0]['method']} above the step's starting RSS")
    header = (f"{'vocab':>7} {'impl':<5} {'time s':>8} {'(min..max)':>15} {'cpu s':>7} {'peak MiB':>9} "
              f"{'speedup':>8} {'mem ratio':>9}")
    print(header)
    print("-" * len(header))
    for r in results:
        trl, ours = r["trl"], r["ours"]
        for name, d in (("trl", trl), ("ours", ours)):
            speed = trl["time"] / d["time"]
            mem = d["peak"] / trl["peak"] if trl["peak"] > 0 else float("nan")
            spread = f"({min(d['times']):.2f}..{max(d['times']):.2f})"
            print(f"{r['vocab']:>7} {name:<5} {d['time']:>8.2f} {spread:>15} {d['cpu']:>7.2f} "
                  f"{d['peak'] / 2**20:>9.0f} {speed:>7.2f}x {mem:>9.2f}")
        kept = sorted({round(k, 4) for k in ours["kept"] if k is not None})
        print(f"{'':>7} ours: of which entropy pre-pass {ours['prepass']:.2f} s; kept fraction {kept}; "
              f"selective head {ours['reason'] or 'on'}; sampling {r['sample_s']:.1f} s (not counted)")
    print(f"total bench time {total:.0f} s")
    last = results[-1]
    speedup = last["trl"]["time"] / last["ours"]["time"]
    ratio = last["ours"]["peak"] / last["trl"]["peak"]
    print(f"vocab={last['vocab']} speedup={speedup:.2f} memory_ratio={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
