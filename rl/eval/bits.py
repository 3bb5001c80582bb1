"""`rl profile bits`: the command (check outputs, score, cut patches, write JSON + PNGs, print).

The numbers come from rl/eval/patch_report.py, the patching from rl/eval/patches.py and the
surprise from rl/signal/surprise.py; this module only orders the work and draws the plots.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from rl.errors import UserError
from rl.eval.patch_report import bits_stats, generated_documents, score_documents
from rl.eval.patches import BLT_THRESHOLD, count_patches, patch_starts, threshold_for_target
from rl.runtime.outputs import check_output_dir, replace_dir, written_files
from rl.runtime.values import check_number
from rl.signal.sampling import SamplingSettings
from rl.signal.scoring import token_texts
from rl.data.corpus import CorpusStats, read_corpus
from rl.eval.next_token import load_model
from rl.runtime.models import check_model_arg, quiet_long_input_warning

BITS_COMMAND = "rl profile bits"


def patch_modes(threshold: float, threshold_add: float, max_patch_length: int | None, docs: list[dict],
                target_bytes_per_patch: float | None, targets: list[dict] | None = None) -> list[dict]:
    """The modes to cut, each as patch_starts keyword arguments. With a byte target, theta of each
    threshold mode is found by bisection; topk then targets the global mode's mean patch size.
    `targets`: filled with one record per bisected mode (mode, theta, mean bytes per patch reached,
    `reached`: False when no theta gives patches that long, e.g. under max_patch_length)."""
    extra = {"max_patch_length": max_patch_length} if max_patch_length else {}
    seqs = [d["entropy"] for d in docs]
    modes = []
    for mode, kw in (("global", {}), ("monotonic", {}), ("threshold_add", {"threshold_add": threshold_add})):
        theta = threshold
        if target_bytes_per_patch:
            theta, got, reached = threshold_for_target(seqs, sum(b for d in docs for b in d["bytes"]),
                                                       target_bytes_per_patch, mode, **kw, **extra)
            if targets is not None:
                targets.append({"mode": mode, "threshold": theta, "target_bytes_per_patch": target_bytes_per_patch,
                                "mean_patch_bytes": got, "reached": reached})
        modes.append({"mode": mode, "threshold": theta, **kw, **extra})
    n = sum(len(s) for s in seqs)
    size = n / max(1, count_patches(seqs, **modes[0]))
    modes.append({"mode": "topk", "threshold": 0.0, "target_patch_size": size, **extra})
    return modes


def save_plots(docs: list[dict], stats: dict, texts: list[str], out: Path, title: str) -> dict[str, str]:
    """patch_trace.png (entropy and surprisal of the first document's first 160 tokens, global-mode
    patch starts marked) and patch_lengths.png (patch length histogram per mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = next(m for m in stats["patches"] if m["mode"] == "global")
    d = docs[0]
    n = min(160, len(d["ids"]))
    kw = {k: g[k] for k in ("threshold", "max_patch_length") if g.get(k) is not None}
    starts = [s for s in patch_starts(d["entropy"], "global", **kw) if s < n]
    fig, ax = plt.subplots(figsize=(14, 4.5))
    ax.plot(range(n), d["entropy"][:n], color="#4C72B0", label="entropy (nats)")
    ax.plot(range(n), d["surprisal"][:n], color="#DD8452", alpha=0.6, label="surprisal -log p(y) (nats)")
    ax.axhline(g["threshold"], color="#C44E52", linestyle="--", label=f"theta = {g['threshold']:.3f}")
    for s in starts:
        ax.axvline(s, color="gray", alpha=0.35, linewidth=0.8)
    ax.set_xticks(range(n), [texts[i].replace("\n", "\\n") for i in range(n)], rotation=90, fontsize=5)
    ax.set_ylabel("nats")
    ax.set_title(f"{title}: {len(starts)} patches in {n} tokens (grey lines: patch starts, global mode)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    trace = out / "patch_trace.png"
    fig.savefig(trace, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    top = max(max(m["_lengths"]) for m in stats["patches"])
    bins = range(1, min(top, 60) + 2)
    for m in stats["patches"]:
        ax.hist([min(x, 60) for x in m["_lengths"]], bins=bins, histtype="step", linewidth=1.5,
                label=f"{m['mode']} (mean {m['mean_patch_tokens']:.2f})")
    ax.set_xlabel("patch length (tokens; longer than 60 drawn at 60)")
    ax.set_ylabel("patches")
    ax.set_yscale("log")
    ax.set_title(f"patch lengths: {title}")
    ax.legend()
    fig.tight_layout()
    hist = out / "patch_lengths.png"
    fig.savefig(hist, dpi=110)
    plt.close(fig)
    return {"trace": str(trace), "lengths": str(hist)}


def _v(token: str) -> str:
    return repr(token)[1:-1].replace(" ", "␣") or "∅"


def target_lines(result: dict) -> list[str]:
    """One line per threshold mode whose --target-bytes-per-patch could not be reached (result["targets"])."""
    lines = []
    for t in result.get("targets") or []:
        if not t["reached"]:
            cap = (result.get("settings") or {}).get("max_patch_length")
            why = f" with --max-patch-length {cap}" if cap else ""
            lines.append(f"target NOT reached: {t['mode']} patches average at most {t['mean_patch_bytes']:.2f} bytes"
                         f"{why}, below --target-bytes-per-patch {t['target_bytes_per_patch']:g} (theta "
                         f"{t['threshold']:.3f} is the coarsest cut)")
    return lines


def format_bits(result: dict) -> str:
    s = result["stats"]
    lines = [(f"where the bits are: {result['model']} on {result['source']['path']} "
             f"({s['documents']} documents or completions, {s['tokens']} tokens, {s['bytes']} bytes)"),
             (f"{'mode':14} {'theta':>7} {'patches/token':>13} {'mean len':>8} {'p90 len':>7} "
             f"{'mean B':>7} {'p90 B':>6} {'starts forking':>14} {'forking starting':>16}")]
    for m in s["patches"]:
        theta = "-" if m["threshold"] is None else f"{m['threshold']:.3f}"
        lines.append(f"{m['mode']:14} {theta:>7} {m['patches_per_token']:13.3f} {m['mean_patch_tokens']:8.2f} "
                     f"{m['p90_patch_tokens']:7.1f} {m['mean_patch_bytes']:7.2f} {m['p90_patch_bytes']:6.1f} "
                     f"{100 * m['starts_that_are_forking']:13.1f}% {100 * m['forking_that_start_patches']:15.1f}%")
    lines += target_lines(result)
    g = s["patches"][0]
    lines.append(f"share of tokens with entropy above theta {g['threshold']:.4f}: {100 * g['share_above_threshold']:.1f}% "
                 f"(below or equal: {100 * (1 - g['share_above_threshold']):.1f}%)")
    lines.append("global-mode patch starts by kind: " + ", ".join(
        f"{k} {100 * v:.1f}%" for k, v in g["start_kinds"].items() if v))
    lines.append("most frequent patch-start tokens: " + ", ".join(
        f"{_v(t['token'])} {t['count']}" for t in g["top_start_tokens"][:12]))
    for name, dist in s["distributions"].items():
        lines.append(f"{name:28} mean {dist['mean']:.3f}  p50 {dist['p50']:.3f}  p90 {dist['p90']:.3f}")
    for name, dis in s["disagreement"].items():
        lines.append(f"top-20% by entropy that are also top-20% by {name}: {100 * dis['overlap_share']:.1f}%")
    dis = s["disagreement"]["surprisal"]
    for label, key in (("surprised but confident", "high_surprise_low_entropy"),
                       ("uncertain but unsurprised", "high_entropy_low_surprise")):
        lines.append(f"{label}:")
        for ex in dis[key][:4]:
            lines.append(f"  ...{_v(ex['context'][-40:])} [{_v(ex['token'])}] H={ex['entropy']:.2f} "
                         f"-log p={ex['surprisal']:.2f} (model's guess [{_v(ex.get('top_guess', '?'))}])")
    return "\n".join(lines)


@dataclass(frozen=True)
class BitsSettings:
    """What `rl profile bits` reads, cuts and writes: one field per flag. `check()` refuses bad
    values, naming the flag, before anything is read."""

    data: str | None = None  # a corpus (teacher-forced), or
    generate: str | None = None  # prompts whose completions the model samples
    samples: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0
    limit: int | None = None
    output_dir: str | Path = "runs/bits-profile"
    threshold: float | None = None  # None: BLT's, unless target_bytes_per_patch finds one
    threshold_add: float = 0.0
    max_patch_length: int | None = None
    target_bytes_per_patch: float | None = None
    eta: float = 0.9
    alpha: float = 0.1
    window_tokens: int = 1024
    batch_size: int = 4
    max_documents: int | None = None
    max_tokens: int | None = None
    device: str | None = None
    overwrite: bool = False
    text_field: str = "text"

    def check(self) -> None:
        if (self.data is None) == (self.generate is None):
            raise UserError("rl profile bits: give exactly one of --data CORPUS or --generate PROMPTS")
        check_number("--temperature", self.temperature, 0)
        check_number("--threshold", self.threshold)
        check_number("--threshold-add", self.threshold_add)
        check_number("--target-bytes-per-patch", self.target_bytes_per_patch, 0, low_open=True)
        if self.temperature < 0 or (self.temperature == 0 and self.samples > 1):
            raise UserError(f"--temperature: must be >= 0 (0 = one greedy sample), got {self.temperature} "
                            f"with {self.samples} samples")
        for name, value in (("--samples", self.samples), ("--max-new-tokens", self.max_new_tokens),
                            ("--limit", self.limit), ("--window-tokens", self.window_tokens),
                            ("--batch-size", self.batch_size), ("--max-patch-length", self.max_patch_length),
                            ("--max-tokens", self.max_tokens), ("--max-documents", self.max_documents)):
            if value is not None and value < (2 if name == "--window-tokens" else 1):
                raise UserError(f"{name}: too small ({value})")
        if self.target_bytes_per_patch is not None and not self.target_bytes_per_patch > 0:
            raise UserError(f"--target-bytes-per-patch: must be > 0, got {self.target_bytes_per_patch}")
        if self.target_bytes_per_patch is not None and self.threshold is not None:
            raise UserError("--threshold and --target-bytes-per-patch: give one (the target finds theta by bisection)")
        if not (0 <= self.eta <= 1 and 0 <= self.alpha <= 1):
            raise UserError(f"--eta and --alpha: must be in [0, 1], got {self.eta} and {self.alpha}")

    def sampling(self) -> SamplingSettings:
        """`--generate`'s sampling: plain temperature sampling, `batch_size` prompts per call, seed 0."""
        return SamplingSettings(samples=self.samples, max_new_tokens=self.max_new_tokens,
                                temperature=self.temperature, top_p=1.0, top_k=0, batch_size=self.batch_size,
                                seed=0)

    def record(self) -> dict:
        """The settings the JSON reports."""
        return {"threshold": self.threshold, "threshold_add": self.threshold_add,
                "max_patch_length": self.max_patch_length, "target_bytes_per_patch": self.target_bytes_per_patch,
                "eta": self.eta, "alpha": self.alpha, "samples": self.samples, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "window_tokens": self.window_tokens,
                "max_documents": self.max_documents, "max_tokens": self.max_tokens}


def _scored(model_path: str, s: BitsSettings, model, tokenizer, progress: bool, check_out) -> tuple:
    """(docs, source, tokenizer): the corpus or the model's own completions, scored; inputs are read
    (and refused) before the weights load."""
    from rl.eval.profile import read_prompts

    check_out()
    if model is None:
        check_model_arg(model_path, "--model")
    corpus_stats = CorpusStats()
    documents = (read_corpus(s.data, stats=corpus_stats, text_field=s.text_field)  # spec errors before loading
                 if s.data is not None else None)
    if documents is not None:  # and a corpus with no usable document (e.g. a wrong --text-field) too
        documents = itertools.chain([next(documents)], documents)
    prompts = read_prompts(s.generate, s.limit) if s.generate is not None else None
    if model is None:
        model, tokenizer = load_model(model_path, s.device)
    quiet_long_input_warning(tokenizer)
    if documents is not None:
        docs = score_documents(model, tokenizer, documents, window_tokens=s.window_tokens, batch_size=s.batch_size,
                               max_documents=s.max_documents, max_tokens=s.max_tokens, progress=progress)
        return docs, {"kind": "corpus (teacher-forced)", "path": s.data, "documents": len(docs),
                      "corpus": corpus_stats.summary()}, tokenizer
    docs = generated_documents(model, tokenizer, prompts, s.sampling(), progress=progress)
    return docs, {"kind": "generated (scored at T=1)", "path": s.generate, "prompts": len(prompts),
                  "completions": len(docs)}, tokenizer


def profile_bits(model_path: str, settings: BitsSettings, *, model=None, tokenizer=None,
                 progress: bool = True) -> dict:
    """Check the output and settings, score the corpus (`data`) or the model's own completions of
    `generate` prompts, compute `bits_stats`, write JSON + PNGs."""
    s = settings
    s.check()

    def check_out():
        return check_output_dir(s.output_dir, "--output-dir", BITS_COMMAND, overwrite=s.overwrite,
                                inputs={"--data": s.data, "--generate": s.generate, "--model": model_path},
                                containers={"--data": s.data})

    docs, source, tokenizer = _scored(model_path, s, model, tokenizer, progress, check_out)
    texts = [t for d in docs for t in d["texts"]]  # each token's piece of the text (they reassemble it)
    targets: list[dict] = []
    modes = patch_modes(BLT_THRESHOLD if s.threshold is None else s.threshold, s.threshold_add, s.max_patch_length,
                        docs, s.target_bytes_per_patch, targets)
    stats = bits_stats(docs, texts, modes=modes, eta=s.eta, alpha=s.alpha)
    for dis in stats["disagreement"].values():
        for key in ("high_surprise_low_entropy", "high_entropy_low_surprise"):
            for ex in dis[key]:
                ex["top_guess"] = token_texts(tokenizer, [ex["top_guess_id"]])[0]
    out = Path(s.output_dir)
    result = {"model": str(model_path), "written_by": BITS_COMMAND, "source": source, "settings": s.record(),
              "targets": targets, "stats": stats}
    with replace_dir(out, BITS_COMMAND, recheck=check_out) as tmp:
        files = save_plots(docs, stats, texts, tmp, Path(str(model_path)).name)
        result["files"] = {k: str(out / Path(v).name) for k, v in files.items()}
        result["files"]["json"] = str(out / "bits_profile.json")
        public = json.loads(json.dumps(result, default=str))
        for m in public["stats"]["patches"]:
            m.pop("_lengths", None)
        (tmp / "bits_profile.json").write_text(json.dumps(public, indent=2, ensure_ascii=False), encoding="utf-8")
    result["written"] = written_files(out)
    return result
