"""`make demo`: the main job on the embedded default, offline on CPU.

Builds RPT data from the CHAMP corpus with SmolLM2-135M-Instruct as proxy, trains the same model
with LoRA and the RPT reward (recipes/rpt_smollm2_cpu.yaml), then prints where the data,
checkpoint and W&B run are, and the mean reward of the first and last steps.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "rpt_smollm2_cpu.yaml"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rl.config import parse_recipe
    from rl.errors import UserError
    from rl.train import train

    argv = list(sys.argv[1:] if argv is None else argv)
    args = ["--config", str(RECIPE), *argv]
    started = time.time()
    try:
        script_args, training_args, model_args = parse_recipe(args)
        code = train(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(training_args.output_dir)
    table = _before_after_table(out, script_args, model_args)
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    wandb_runs = sorted((out / "wandb").glob("offline-run-*"))
    history = []
    if checkpoints:
        history = json.loads((checkpoints[-1] / "trainer_state.json").read_text()).get("log_history", [])
    rewards = [e["reward"] for e in history if "reward" in e]
    print("\n=== entropy-rl demo ===")
    print(f"RPT data:     {out / 'rpt-data'}")
    print(f"checkpoint:   {checkpoints[-1] if checkpoints else 'none'}")
    print(f"final model:  {out}")
    print(f"W&B run:      {wandb_runs[-1] if wandb_runs else 'none (report_to has no wandb)'}")
    if rewards:
        print(f"mean reward:  first step {rewards[0]:.3f}, last step {rewards[-1]:.3f} ({len(rewards)} steps)")
    print(f"wall time:    {time.time() - started:.0f} s")
    if table:
        print("\n" + table)
    return code


def _before_after_table(out: Path, script_args, model_args) -> str:
    """Standard-mode next-token accuracy on the held-out documents: base model vs the trained one."""
    from datasets import load_from_disk

    from rl.assets import resolve_model
    from rl.evaluate import evaluate_next_token, format_table
    from rl.data.loading import split_by_document

    data_dir = out / "rpt-data"
    if not data_dir.exists() or not (out / "adapter_config.json").exists() and not (out / "config.json").exists():
        return ""
    _, held_out = split_by_document(load_from_disk(str(data_dir)), script_args.eval_fraction or 0.25, script_args.rpt_seed)
    if held_out is None:
        return ""
    base = resolve_model(model_args.model_name_or_path)
    after = evaluate_next_token(str(out), held_out, mode="standard", progress=False, keep_rows=False)
    before = evaluate_next_token(base, held_out, mode="standard", progress=False, keep_rows=False)
    return "held-out documents, after (trained) vs before (base):\n" + format_table(after, compare=before)


if __name__ == "__main__":
    sys.exit(main())
