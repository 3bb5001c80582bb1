"""Evidence: does CAFT (auxiliary multi-token heads in fine-tuning) teach multi-token concepts better?

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.caft [--quick | --smoke] [--seeds N] [--out DIR]

Task (generated, its answers are multi-token concepts): a one-letter amino-acid string, answered with
the hyphenated three-letter codes ("MKV" -> "Met-Lys-Val"); SmolLM2's tokenizer splits most codes
into 2 tokens, so each concept has a first token and internal tokens. Prompt "Sequence: MKV\\nCodes:",
completion " Met-Lys-Val" (completion-only loss). Held-out sequences come from another seed and
never occur in training.

Arms, same data order, steps, learning rate and seed per pair (LoRA r 8, alpha 16, all attention
projections, the builtin SmolLM2-135M-Instruct):
* plain: TRL SFT, next-token loss only;
* caft: CE_0 + sum_k 0.01 * 0.8^k * sin(pi/2 (S-s)/S) * CE_k with 4 frozen decoder-layer heads
  trained first (stage 1: the base model's own greedy answers to the training prompts, trunk
  frozen, sum_k 0.8^k CE_k, lr 1e-4).

Measured (held-out): exact match of the greedy answer (paired over seeds x items, bootstrap CI over
items); NLL per token of plain text (CHAMP solutions, must not get worse); next-token entropy at
concept-first vs concept-internal answer tokens (teacher-forced), base and each arm; each head's
top-1 per offset after stage 1. Last line:
`caft: seeds=N steps=S exact_match_caft_minus_plain=D [L, H] nll_caft_minus_plain=D [L, H]`.

Sizes: `--smoke` (tiny random model, seconds: the same code path), `--quick` (24 training items, 16 held out,
1 seed x 16 steps: a check that the arms run and move, not evidence), default (~90 min: 256 / 96 items, 3 seeds x
80 steps). At 135M a 0.01-weighted auxiliary loss may show nothing; the table says what comes out.

Measured 2026-12-07, `--quick` (one run, 21 min on this 2-core machine shared at load ~18; the full mode
has not been run):

    stage-1 heads, held-out top-1 (self-distilled answers): t+2: 10.3% (n=398), t+3: 11.8%, t+4: 7.8%, t+5: 10.8%
              exact match  text NLL  H(first)  H(internal)
    base             0.0%    1.8952     4.376        1.664
    plain            0.0%    1.9073     4.088        1.357
    caft             0.0%    1.9071     4.101        1.372
    exact match caft - plain: +0.00 pts [+0.00, +0.00] (16 items)
    plain-text NLL caft - plain: -0.0002 [-0.0004, -0.0000] (nats/token)

Read: 16 LoRA steps teach neither arm the task (0 of 16 exact); both lower the entropy at concept-first
and internal tokens by about the same amount; CAFT's plain-text NLL is 0.0002 nats/token below plain's
(both are ~0.012 above the base). Eight stage-1 steps leave the heads weak (top-1 ~10%), so the 0.01-
weighted term had little to say. Nothing here shows a CAFT effect either way.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
from pathlib import Path

AMINO = {"A": "Ala", "R": "Arg", "N": "Asn", "D": "Asp", "C": "Cys", "E": "Glu", "Q": "Gln", "G": "Gly",
         "H": "His", "I": "Ile", "L": "Leu", "K": "Lys", "M": "Met", "F": "Phe", "P": "Pro", "S": "Ser",
         "T": "Thr", "W": "Trp", "Y": "Tyr", "V": "Val"}
SIZES = {"smoke": dict(train=8, test=4, heads_steps=1, steps=1, seeds=1, length=(2, 3), nll_docs=2),
         "quick": dict(train=24, test=16, heads_steps=8, steps=16, seeds=1, length=(3, 4), nll_docs=4),
         "full": dict(train=256, test=96, heads_steps=60, steps=80, seeds=3, length=(3, 6), nll_docs=16)}


def items(n: int, seed: int, length: tuple[int, int], avoid: set[str] = frozenset()) -> list[tuple[str, str]]:
    """n distinct (sequence, answer) pairs; sequences in `avoid` are skipped."""
    rng, out, seen = random.Random(seed), [], set(avoid)
    letters = sorted(AMINO)
    while len(out) < n:
        seq = "".join(rng.choice(letters) for _ in range(rng.randint(*length)))
        if seq not in seen:
            seen.add(seq)
            out.append((seq, "-".join(AMINO[c] for c in seq)))
    return out


def prompt_of(seq: str) -> str:
    return f"Convert one-letter amino-acid codes to three-letter codes.\nSequence: {seq}\nCodes:"


def sft_args(out: Path, seed: int, steps: int, lr: float, **caft):
    from rl.sft.config import CaftSFTConfig

    return CaftSFTConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=lr,
                         lr_scheduler_type="cosine", warmup_steps=max(1, steps // 10), max_length=96, seed=seed,
                         data_seed=seed, report_to=[], use_cpu=True, bf16=False, activation_checkpointing=False,
                         save_strategy="no", logging_steps=max(1, steps // 5), disable_tqdm=True, **caft)


def train_heads(model_dir: str, tok, rows, heldout_rows, out: Path, steps: int) -> tuple[Path, dict]:
    import datasets

    from rl.sft.trainer import CaftSFTTrainer

    args = sft_args(out / "stage1", 0, steps, 1e-4, aux_mtp="caft", caft_stage="heads")
    trainer = CaftSFTTrainer(model=model_dir, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             eval_dataset=datasets.Dataset.from_list(heldout_rows), processing_class=tok,
                             base_model_name=model_dir)
    trainer.train()
    top1 = trainer.heldout_top1()
    heads = out / "heads"
    trainer.export_heads(heads, {"heldout_top1": {str(k): v for k, (v, _) in top1.items()}})
    return heads, top1


def train_arm(model_dir: str, tok, rows, out: Path, seed: int, steps: int, heads: Path | None):
    import datasets
    from peft import LoraConfig

    from rl.sft.trainer import CaftSFTTrainer

    caft = dict(aux_mtp="caft", caft_stage="finetune", caft_heads_path=str(heads)) if heads else {}
    trainer = CaftSFTTrainer(model=model_dir, args=sft_args(out, seed, steps, 3e-4, **caft),
                             train_dataset=datasets.Dataset.from_list(rows), processing_class=tok,
                             peft_config=LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM",
                                                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
                             base_model_name=model_dir)
    trainer.train()
    return trainer.model.merge_and_unload().eval()


def exact_match(model, tok, test) -> list[float]:
    from rl.sft.data import generate_answers

    answers = generate_answers(model, tok, [prompt_of(s) for s, _ in test], 4 * 6 + 4, 16, chat=False)
    return [float(a["completion"].strip().split("\n")[0].strip() == ans) for a, (_, ans) in zip(answers, test)]


def concept_entropies(model, tok, test) -> tuple[list[float], list[float]]:
    """Next-token entropy (nats) at answer tokens that start a three-letter code vs tokens inside one."""
    import torch

    from rl.signal.entropy import token_entropy

    first, internal = [], []
    for seq, ans in test:
        text = prompt_of(seq) + " " + ans
        enc = tok(text, return_offsets_mapping=True, return_tensors="pt")
        answer_start = len(prompt_of(seq)) + 1  # after the space; code i fills [start + 4i, start + 4i + 3)
        with torch.inference_mode():
            ent = token_entropy(model(input_ids=enc["input_ids"]).logits[0].float())
        for j, (a, b) in enumerate(enc["offset_mapping"][0].tolist()):
            a = a + 1 if a < len(text) and text[a] == " " else a  # a leading space belongs to the code after it
            if j == 0 or a < answer_start or b <= a:
                continue
            where = (a - answer_start) % 4
            if where == 3:
                continue  # a hyphen token
            (first if where == 0 else internal).append(float(ent[j - 1]))
    return first, internal


def text_nll(model, tok, docs: list[str]) -> list[float]:
    """Per-token NLL (nats) of plain text, one value per token."""
    import torch
    import torch.nn.functional as F

    out = []
    for doc in docs:
        ids = tok(doc, return_tensors="pt", truncation=True, max_length=256)["input_ids"]
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, :-1].float()
        out += F.cross_entropy(logits, ids[0, 1:], reduction="none").tolist()
    return out


def mean(xs) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def main(argv=None) -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny random model, seconds (CI)")
    mode.add_argument("--quick", action="store_true", help="a small run: the arms train and move (minutes on an idle machine)")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--out", default=None, help="work dir (default: a temporary one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    size = dict(SIZES["smoke" if args.smoke else "quick" if args.quick else "full"])
    if args.seeds:
        size["seeds"] = args.seeds
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        return run(size, out, args.smoke)


def run(size: dict, out: Path, smoke: bool) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.data.corpus import read_corpus
    from rl.sft.data import generate_answers

    torch.manual_seed(0)
    if smoke:
        from bench.smoke import tiny_model

        model_dir = str(tiny_model(out, chat_template=False))
        docs = [f"The sum of {i} and {i} is {2 * i}, as every pupil learns." for i in range(size["nll_docs"])]
    else:
        from rl.runtime.assets import resolve_model

        model_dir = resolve_model("builtin:smollm2-135m-instruct")
        docs = [d.text for d, _ in zip(read_corpus("builtin:champ", max_chars=1200), range(size["nll_docs"]))]
    tok = AutoTokenizer.from_pretrained(model_dir)
    train = items(size["train"], 1, size["length"])
    test = items(size["test"], 2, size["length"], avoid={s for s, _ in train})
    rows = [{"prompt": prompt_of(s), "completion": " " + a} for s, a in train]

    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    own = generate_answers(base, tok, [prompt_of(s) for s, _ in train + test], 24, 16, chat=False)
    split = len(train)
    heads, top1 = train_heads(model_dir, tok, own[:split], own[split:], out, size["heads_steps"])
    before = {"em": exact_match(base, tok, test), "nll": text_nll(base, tok, docs),
              "ent": concept_entropies(base, tok, test)}
    del base
    results = {"plain": [], "caft": []}
    for seed in range(size["seeds"]):
        for arm in ("plain", "caft"):
            model = train_arm(model_dir, tok, rows, out / f"{arm}-{seed}", seed, size["steps"],
                              heads if arm == "caft" else None)
            results[arm].append({"em": exact_match(model, tok, test), "nll": text_nll(model, tok, docs),
                                 "ent": concept_entropies(model, tok, test)})
            print(f"seed {seed} {arm}: exact match {100 * mean(results[arm][-1]['em']):.1f}%", flush=True)
            del model
    report(size, before, results, top1, len(test))
    return 0


def report(size, before, results, top1, n_test) -> None:
    from rl.eval.stats import paired_bootstrap

    print(f"\nCAFT vs next-token-only SFT: {size['seeds']} seed(s) x {size['steps']} LoRA steps, {n_test} held-out "
          f"items, heads trained {size['heads_steps']} steps")
    print("stage-1 heads, held-out top-1 (self-distilled answers): " +
          ", ".join(f"t+{k + 1}: {100 * v:.1f}% (n={n})" for k, (v, n) in top1.items()))
    print(f"{'':8} {'exact match':>12} {'text NLL':>9} {'H(first)':>9} {'H(internal)':>12}")

    def row(name, rs):
        print(f"{name:8} {100 * mean([x for r in rs for x in r['em']]):11.1f}% "
              f"{mean([x for r in rs for x in r['nll']]):9.4f} {mean([x for r in rs for x in r['ent'][0]]):9.3f} "
              f"{mean([x for r in rs for x in r['ent'][1]]):12.3f}")

    row("base", [before])
    for arm in ("plain", "caft"):
        row(arm, results[arm])
    groups_em = [i for _ in results["plain"] for i in range(n_test)]
    em = paired_bootstrap([x for r in results["plain"] for x in r["em"]],
                          [x for r in results["caft"] for x in r["em"]], groups_em)
    nll_p = [x for r in results["plain"] for x in r["nll"]]
    nll = paired_bootstrap(nll_p, [x for r in results["caft"] for x in r["nll"]],
                           [i for r in results["plain"] for i in range(len(r["nll"]))])
    print(f"exact match caft - plain: {100 * em.diff:+.2f} pts [{100 * em.low:+.2f}, {100 * em.high:+.2f}] "
          f"(paired over seeds x items, CI over {em.groups} items)")
    print(f"plain-text NLL caft - plain: {nll.diff:+.4f} [{nll.low:+.4f}, {nll.high:+.4f}] (nats/token)")
    ok = all(math.isfinite(v) for v in (em.diff, nll.diff))
    print(f"caft: seeds={size['seeds']} steps={size['steps']} exact_match_caft_minus_plain={100 * em.diff:.2f} "
          f"[{100 * em.low:.2f}, {100 * em.high:.2f}] nll_caft_minus_plain={nll.diff:.4f} [{nll.low:.4f}, "
          f"{nll.high:.4f}]" + ("" if ok else " (not finite)"))


if __name__ == "__main__":
    raise SystemExit(main())
