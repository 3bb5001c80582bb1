"""How fast `rl data rpt` scores a corpus, against the physical limit for that step, in the same run.

Not a test. Two arms over the same documents, the same proxy, the same threads:

* `build`: `rl data rpt` itself (`build_rpt_dataset`: tokenize, score every window, choose positions,
  write the rows block by block, merge), the proxy loaded once before (its loading is not timed);
* `forward`: a bare batched no-grad forward of the same proxy over the same windows (the builder's
  window plan, sorted by length, the same batch size), full logits, nothing else.

tokens/s counts the document tokens scored (each position once). The ratio build / forward is what
the builder keeps of the bare forward (the issue's goal: >= 0.8). `--processes 2` adds the same
build as 2 shards in 2 processes (one thread each) against 1 process (one thread), wall time.
`--memory 100,10000`: the peak RSS of one build process over 100 and 10,000 synthetic documents (rows
go to disk block by block, so it should not grow with the corpus).

    .venv/bin/python -m bench.rpt_build_speed                       # builtin SmolLM2, 64 CHAMP documents
    .venv/bin/python -m bench.rpt_build_speed --shape qwen3-0.6b    # a random Qwen3-0.6B-shaped proxy
    .venv/bin/python -m bench.rpt_build_speed --smoke               # tiny model and corpus: seconds

Last line: `rpt_build_speed: build_tok_s=B forward_tok_s=F ratio=R[ rss_ratio=M]`.

Measured (docs/bench/rpt_build_speed.md, this 2-core CPU, one thread): SmolLM2 build 270 tokens/s vs bare
forward 262 (1.03) at load 2; peak RSS 781 MiB at 100 documents, 804 MiB at 2,000 (tiny model).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QWEN3_06B = {"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": True,
             "vocab_size": 151936, "max_position_embeddings": 4096}


def _shaped_model(root: Path, shape: str) -> Path:
    """A random model of `shape` with the tiny models' GPT-2 tokenizer, saved under `root`."""
    from tests.tiny_models import build_tiny_model

    if shape == "tiny":
        return build_tiny_model(root / "tiny-model", chat_template=False)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    base = build_tiny_model(root / "tokenizer-source", chat_template=False)
    config = AutoConfig.for_model(**QWEN3_06B)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    out = root / shape
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def _windows(cfg, tokenizer, documents) -> list[list[int]]:
    """The windows the builder scores (its plan over the same documents), sorted by length as it sorts them."""
    from rl.data.rpt import window_plan
    from rl.signal.scoring import text_prefix

    prefix = text_prefix(tokenizer)
    window = max(2, cfg.window_tokens - len(prefix))
    out = []
    for doc in documents:
        ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        if len(ids) >= cfg.min_context_tokens + 1:
            out += [prefix + ids[s:e] for s, e, _, _ in window_plan(len(ids), window)]
    return sorted(out, key=len, reverse=True)


def bare_forward(model, windows, batch: int, pad_id: int) -> float:
    """Seconds for one batched no-grad forward over every window (right padding, full logits)."""
    import torch

    device = next(model.parameters()).device
    start = time.perf_counter()
    with torch.inference_mode():
        for at in range(0, len(windows), batch):
            rows = windows[at: at + batch]
            longest = max(map(len, rows))
            ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, w in enumerate(rows):
                ids[r, :len(w)], mask[r, :len(w)] = torch.tensor(w), 1
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float().sum().item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def processes_wall(argv: list[str], shards: int) -> float:
    """Wall seconds of `rl data rpt ARGV` as `shards` concurrent shard processes (one thread each)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "rl.cli", *argv, "--num-shards", str(shards), "--shard-index",
                               str(i)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(shards)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"a shard failed: {err[-2000:]}")
    return time.perf_counter() - start


def peak_rss_mib(argv: list[str]) -> float:
    """Peak resident memory (MiB) of one `rl data rpt ARGV` process (one thread), from its own rusage."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "rl.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"the build failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024


def synthetic_corpus(path: Path, documents: int) -> Path:
    """`documents` JSONL documents of 150-400 words (seeded), for the memory arm."""
    import json
    import random

    rng = random.Random(0)
    words = ("the of and to in is that for it as was with be by on not he this are or his from at which but have "
             "an they you were her all she there would their we him been has when who will more no if out so").split()
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(documents):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(150, 400)))}) + "\n")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy-model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--shape", choices=["qwen3-0.6b"], default=None, help="a random proxy of this shape instead")
    parser.add_argument("--corpus", default="builtin:champ")
    parser.add_argument("--documents", type=int, default=64)
    parser.add_argument("--proxy-batch-size", type=int, default=8)
    parser.add_argument("--window-tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's choice)")
    parser.add_argument("--processes", type=int, default=1, help="also time N shard processes against 1")
    parser.add_argument("--memory", default="100,10000",
                        help="document counts whose builds' peak RSS is compared (synthetic corpus; '' to skip)")
    parser.add_argument("--memory-proxy", choices=["tiny", "same"], default="tiny",
                        help="the memory arm's proxy: `tiny` (a tiny random model: what grows with the corpus is the "
                             "pipeline's memory, not the model's, and 10,000 documents take minutes, not hours), or "
                             "`same` (the proxy of the speed arms)")
    parser.add_argument("--smoke", action="store_true", help="tiny model and corpus, one round: checks that it runs")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from rl.data.corpus import read_corpus
    from rl.data.proxy import load_proxy
    from rl.data.rpt import build_rpt_dataset
    from rl.data.settings import RPTBuildConfig

    with tempfile.TemporaryDirectory(prefix="rpt-build-speed-") as tmp:
        tmp = Path(tmp)
        proxy, corpus = args.proxy_model, args.corpus
        if args.smoke:
            from bench.smoke import tiny_corpus

            proxy, corpus = str(_shaped_model(tmp, "tiny")), str(tiny_corpus(tmp))
            args.documents, args.repeats, args.window_tokens, args.processes = 16, 1, 32, min(args.processes, 2)
            args.memory = "16,64" if args.memory else ""
        elif args.shape:
            proxy = str(_shaped_model(tmp, args.shape))
        cfg = RPTBuildConfig(corpus=corpus, proxy_model=proxy, min_entropy=1.0, max_documents=args.documents,
                             proxy_batch_size=args.proxy_batch_size, window_tokens=args.window_tokens,
                             min_context_tokens=4 if args.smoke else 16)
        start = time.perf_counter()
        model, tokenizer = load_proxy(proxy)
        load_s = time.perf_counter() - start
        documents = list(read_corpus(corpus))[: args.documents]
        windows = _windows(cfg, tokenizer, documents)
        tokens = sum(len(tokenizer(d.text, add_special_tokens=False)["input_ids"]) - 1 for d in documents)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        bare_forward(model, windows[: args.proxy_batch_size], args.proxy_batch_size, pad)  # warm-up
        best = {"build": float("inf"), "forward": float("inf")}
        for r in range(args.repeats):
            start = time.perf_counter()
            build_rpt_dataset(cfg, tmp / f"out{r}", proxy=(model, tokenizer))
            best["build"] = min(best["build"], time.perf_counter() - start)
            best["forward"] = min(best["forward"], bare_forward(model, windows, args.proxy_batch_size, pad))
        build_tps, forward_tps = tokens / best["build"], tokens / best["forward"]
        print(f"proxy {proxy if not args.shape else args.shape} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
              f"params, {next(model.parameters()).dtype}, {next(model.parameters()).device}); loaded in {load_s:.1f} s")
        print(f"{len(documents)} documents, {tokens} tokens scored, {len(windows)} windows of <= {args.window_tokens}, "
              f"batch {args.proxy_batch_size}, torch threads {torch.get_num_threads()}, best of {args.repeats}, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'arm':10} {'seconds':>8} {'tokens/s':>10}")
        print(f"{'build':10} {best['build']:8.2f} {build_tps:10.1f}")
        print(f"{'forward':10} {best['forward']:8.2f} {forward_tps:10.1f}")
        if args.processes > 1:
            common = ["data", "rpt", "--corpus", corpus, "--proxy-model", proxy, "--min-entropy", "1.0",
                      "--max-documents", str(args.documents), "--proxy-batch-size", str(args.proxy_batch_size),
                      "--window-tokens", str(args.window_tokens), "--min-context-tokens", str(cfg.min_context_tokens)]
            one = processes_wall([*common, "--output", str(tmp / "p1")], 1)
            many = processes_wall([*common, "--output", str(tmp / "pn")], args.processes)
            print(f"processes: 1 -> {one:.1f} s, {args.processes} -> {many:.1f} s wall ({one / many:.2f}x), "
                  "loading and imports included")
        rss = ""
        if args.memory:
            counts = [int(n) for n in args.memory.split(",")]
            corpus_m = synthetic_corpus(tmp / "memory.jsonl", max(counts))
            proxy_m = proxy if args.memory_proxy == "same" or args.smoke else str(_shaped_model(tmp, "tiny"))
            start = time.perf_counter()
            peaks = [peak_rss_mib(["data", "rpt", "--corpus", str(corpus_m), "--proxy-model", proxy_m, "--output",
                                   str(tmp / f"m{n}"), "--max-documents", str(n), "--min-entropy", "1.0",
                                   "--window-tokens", str(args.window_tokens)]) for n in counts]
            print(f"peak RSS of one build process ({args.memory_proxy} proxy, {time.perf_counter() - start:.0f} s): "
                  + ", ".join(f"{n} documents {p:.0f} MiB" for n, p in zip(counts, peaks)))
            rss = f" rss_ratio={peaks[-1] / peaks[0]:.2f}"
        print(f"rpt_build_speed: build_tok_s={build_tps:.1f} forward_tok_s={forward_tps:.1f} "
              f"ratio={build_tps / forward_tps:.2f}{rss}")


if __name__ == "__main__":
    main()
