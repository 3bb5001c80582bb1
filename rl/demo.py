"""`make demo`: the main job on the embedded default, offline on CPU, and the evidence that it learned.

Trains SmolLM2-135M-Instruct with LoRA and the completion-format RPT reward on the CHAMP corpus
(recipes/rpt_smollm2_cpu.yaml: RPT data built at high-entropy positions, a signal check, GRPO),
then measures the base model and the trained one on the same units (rl/eval/learning_report.py):

* reward on a fixed probe set of training rows (same rows, same number of samples, paired);
* held-out documents (never trained on), at the RPT positions and at every token, by entropy split
  (the token splits by the proxy's entropy, so the hard split has hundreds of tokens):
  temperature-fair metrics (greedy top-1; NLL at each model's own temperature fitted on training
  data: tokens of training documents, training rows for the RPT positions), sharpening-inclusive ones (expected accuracy of the true token at the sampling
  temperature, NLL at T = 1), and the sharpening share (the base at the temperature where its
  mean entropy equals the trained model's), each with the paired difference and a 95% CI (paired
  bootstrap over documents);
* the per-step batch reward curve as a PNG, and everything as JSON, in the run directory.

The last line is for scripts (rl/eval/learning_report.py `learning_line` documents it exactly):
`learning: temperature-fair (held-out hard tokens, proxy entropy > 1.5, n=N): top-1 A% -> B% (diff D pts,
95% CI [L, H]), calibrated NLL A -> B (diff D, 95% CI [L, H]); sharpening-inclusive (all N held-out
tokens): expected accuracy at T=0.8 A% -> B% (diff D pts, 95% CI [L, H]), probe reward A -> B (diff D,
95% CI [L, H])` (on one line).
Any recipe field can be overridden (`python -m rl.demo --max_steps 10 --seed 3`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from rl.errors import UserError
from rl.data.corpus import read_corpus
from rl.data.loading import split_by_document
from rl.eval.learning_report import build_report, learning_line, model_values, plot_rewards, save_report
from rl.eval.next_token import load_model
from rl.eval.stats import paired_bootstrap
from rl.runtime.assets import resolve_model
from rl.runtime.library_noise import import_integrations_quietly
from rl.train.command import train
from rl.train.signal_check import combine_rewards, pick_rows, sample_completions, score_completions

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "rpt_smollm2_cpu.yaml"
PROBE_ROWS = 48  # training rows in the probe set
PROBE_SAMPLES = 16  # completions per probe row, for each model (1-token guesses: cheap)
CALIBRATION_ROWS = 512  # training rows the RPT positions' calibrated temperature is fitted on (logits held)
CALIBRATION_TOKENS = 1024  # tokens of training documents the held-out tokens' calibrated temperature is fitted on
CALIBRATION_DOCUMENTS = 12  # training documents those tokens are spread over (one forward pass each)


def probe_rewards(model, tokenizer, rows: list[dict], reward_funcs, reward_weights, *, samples: int,
                  max_new_tokens: int, temperature: float, top_p: float = 1.0, top_k: int | None = 0,
                  seed: int = 0) -> list[float]:
    """Total reward of `samples` completions per row (row-major), sampled and scored as the run does.

    It lives here, not in rl/eval, because it uses the training run's own sampling and reward
    combination (rl/train/signal_check.py), and eval sits below train."""
    prompts = [row["prompt"] for row in rows]
    completions, completion_ids = sample_completions(model, tokenizer, prompts, samples, max_new_tokens=max_new_tokens,
                                                     temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    return combine_rewards(score_completions(rows, completions, completion_ids, reward_funcs), reward_weights)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import_integrations_quietly()  # before the recipe's `env:` sets WANDB_MODE (its import-time banner)
    from rl.train.recipe import parse_recipe

    argv = list(sys.argv[1:] if argv is None else argv)
    args = ["--config", str(RECIPE), *argv]
    started = time.time()
    try:
        script_args, training_args, model_args = parse_recipe(args)
        code = train(args)
        if code:
            return code
        out = Path(training_args.output_dir)
        if not any((out / name).is_file() for name in ("adapter_config.json", "config.json")):
            raise UserError(f"demo: no final model in {out} (the run stopped early, e.g. preempted); rerun with "
                            "--resume_from_checkpoint auto to finish it, then the demo measures it")
        trained_at = time.time()
        report = measure(script_args, training_args, model_args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    wandb_runs = sorted((out / "wandb").glob("offline-run-*"))
    history = []
    if checkpoints:
        history = json.loads((checkpoints[-1] / "trainer_state.json").read_text()).get("log_history", [])
    rewards = [e["reward"] for e in history if "reward" in e and "train_runtime" not in e]
    curve = plot_rewards(history, out / "reward_curve.png", title=f"batch reward per step ({training_args.run_name})")
    summary_path = out / "demo_summary.json"
    save_report(report, summary_path, {"batch_rewards": rewards, "seed": training_args.seed,
                                       "max_steps": training_args.max_steps,
                                       "train_seconds": round(trained_at - started, 1),
                                       "total_seconds": round(time.time() - started, 1)})
    print("\n=== entropy-rl demo ===")
    print(f"RPT data:     {out / 'rpt-data'}")
    print(f"checkpoint:   {checkpoints[-1] if checkpoints else 'none'}")
    print(f"final model:  {out}")
    print(f"W&B run:      {wandb_runs[-1] if wandb_runs else 'none (report_to has no wandb)'}")
    if rewards:
        print(f"batch reward: first step {rewards[0]:.3f}, last step {rewards[-1]:.3f}, mean of the last "
              f"{min(10, len(rewards))} {sum(rewards[-10:]) / len(rewards[-10:]):.3f} ({len(rewards)} steps)")
    print(f"reward curve: {curve or 'none'}")
    print(f"summary JSON: {summary_path}")
    print(f"wall time:    {time.time() - started:.0f} s (training {trained_at - started:.0f} s)")
    print("\n" + report.format())
    print(learning_line(report))
    return 0


def measure(script_args, training_args, model_args):
    """Base vs trained model on the probe rows, held-out RPT positions and all held-out tokens."""
    from datasets import load_from_disk

    from rewards import get_reward_funcs
    from rl.eval.metrics import temperature_grid, token_metrics

    out = Path(training_args.output_dir)
    data = load_from_disk(str(out / "rpt-data"))
    train_rows, held_out = split_by_document(data, script_args.eval_fraction or 0.25, script_args.rpt_seed)
    probe = [dict(train_rows[i]) for i in pick_rows(len(train_rows), PROBE_ROWS)]
    calibration = [dict(train_rows[i]) for i in pick_rows(len(train_rows), CALIBRATION_ROWS)]
    heldout_rows = [dict(r) for r in held_out] if held_out is not None else []
    heldout_ids = {r["doc_id"] for r in heldout_rows}
    train_ids = {r.get("doc_id") for r in calibration}  # the calibrated NLL's temperature: training documents
    documents = [d for d in read_corpus(script_args.corpus, text_field=script_args.rpt_text_field,
                                        id_field=script_args.rpt_id_field)
                 if d.doc_id in heldout_ids or d.doc_id in train_ids]
    texts = [d.text for d in documents if d.doc_id in heldout_ids] if heldout_ids else []
    train_texts = [d.text for d in documents if d.doc_id in train_ids]
    train_texts = [train_texts[i] for i in pick_rows(len(train_texts), CALIBRATION_DOCUMENTS)]
    funcs = get_reward_funcs(script_args.reward_funcs)
    weights = training_args.reward_weights
    temperature = training_args.temperature
    context = script_args.rpt_max_context_tokens
    base = resolve_model(model_args.model_name_or_path)
    proxy_kind = (script_args.rpt_entropy, script_args.rpt_top_k)
    separate_proxy = bool(script_args.proxy_model) and resolve_model(script_args.proxy_model) != base
    proxy_entropy = None  # None: the base model is the proxy; its own pass gives the entropies
    if separate_proxy and texts:
        model, tokenizer = load_model(script_args.proxy_model, device="cpu")
        proxy_entropy = [d.get("proxy_entropy") for d in token_metrics(model, tokenizer, texts, proxy=proxy_kind)]
        del model
    grid = temperature_grid(temperature)
    results = {}
    for label, name in (("before", base), ("after", str(out))):
        model, tokenizer = load_model(name, device="cpu")
        results[label] = model_values(model, tokenizer, calibration_rows=calibration, heldout_rows=heldout_rows,
                                      texts=texts, temperature=temperature, max_context_tokens=context,
                                      grid=grid if label == "before" else None,
                                      proxy=proxy_kind if label == "before" and not separate_proxy else None,
                                      calibration_texts=train_texts, calibration_tokens=CALIBRATION_TOKENS)
        results[label]["probe"] = probe_rewards(
            model, tokenizer, probe, funcs, weights, samples=PROBE_SAMPLES,
            max_new_tokens=training_args.max_completion_length, temperature=temperature, top_p=training_args.top_p,
            top_k=training_args.top_k, seed=training_args.seed)
        del model
    groups = [row.get("doc_id") for row in probe for _ in range(PROBE_SAMPLES)]
    probe_diff = paired_bootstrap(results["before"]["probe"], results["after"]["probe"], groups,
                                  seed=training_args.seed) if probe else None
    return build_report(before=results["before"], after=results["after"], heldout_rows=heldout_rows,
                        proxy_entropy=proxy_entropy, temperature=temperature, probe=probe_diff,
                        probe_rows=len(probe), probe_samples=PROBE_SAMPLES, seed=training_args.seed)


if __name__ == "__main__":
    sys.exit(main())
