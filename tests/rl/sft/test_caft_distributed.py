"""CAFT under ZeRO-3 on 2 CPU ranks trains exactly like one process (the project's invariance standard).

`rl sft` stage `finetune` (full-parameter, heads' coefficient 0.5, constant schedule, so the heads' term
moves the update) for 2 optimizer steps: one plain process with gradient_accumulation_steps=2 against
`accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes 2` with 1 (same global
batch, same samples per step). Under ZeRO-3 the frozen heads are plain modules DeepSpeed partitions at
initialisation, the trunk's norm and LM head are gathered when the heads call them, and the saved policy
is the gathered 16-bit state dict without the heads. The losses (CE_0 plus each head's term, whose
denominator is the step's global token count) and the saved weights must agree to float rounding; a head
term normalised per rank or per micro-batch differs by far more (2 ranks with unequal token counts).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.ranks import launch_ranks

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess, pytest.mark.deepspeed]

ROOT = Path(__file__).resolve().parents[3]
PARAM_ATOL = 1e-5  # as tests/rl/train/test_distributed.py (2 AdamW steps at lr 1e-3, eps 1e-6)
LOSS_ATOL = 1e-5


def _recipe(tmp: Path, model_dir: Path, heads: Path) -> Path:
    rows = tmp / "rows.jsonl"
    # unequal lengths: per-rank token counts differ, so a per-rank denominator would show
    rows.write_text("".join(json.dumps({"prompt": f"Question {i}:" + " why" * (i % 3),
                                        "completion": " Because" + " it is so" * (1 + i % 4) + "."}) + "\n"
                            for i in range(8)))
    recipe = dict(model_name_or_path=str(model_dir), dtype="float32", use_peft=False, dataset_path=str(rows),
                  eval_fraction=0.0, aux_mtp="caft", caft_stage="finetune", caft_num_heads=2,
                  caft_heads_path=str(heads), caft_coefficient=0.5, caft_schedule="constant", max_steps=2,
                  per_device_train_batch_size=2, max_length=48, learning_rate=1e-3, adam_epsilon=1e-6,
                  lr_scheduler_type="constant", warmup_steps=0, activation_checkpointing=False, bf16=False,
                  logging_steps=1, save_strategy="no", report_to=["none"], seed=3, data_seed=3)
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _heads(tmp: Path, model_dir: Path) -> Path:
    from transformers import AutoModelForCausalLM

    from rl.sft.heads import build_heads, heads_state, model_identity, write_heads

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(0)
    heads = build_heads(model, 2, "decoder_layer")
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(0.05 * torch.randn_like(p))
    write_heads(tmp / "heads", heads_state(heads), heads, model_identity(model.config, str(model_dir)))
    return tmp / "heads"


def _run(name: str, tmp: Path, recipe: Path, ranks: int, gas: int) -> tuple[Path, list[float]]:
    out = tmp / f"run-{name}"
    target = ["-m", "rl.cli", "sft", "--config", str(recipe), "--output_dir", str(out),
              "--gradient_accumulation_steps", str(gas)]
    proc = launch_ranks(target, ranks=ranks, config="zero3" if ranks > 1 else None, timeout=600)
    log = proc.stdout + proc.stderr
    (tmp / f"{name}.log").write_text(log)
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{log[-4000:]}"
    losses = [float(line.split("'loss': '")[1].split("'")[0]) for line in log.splitlines() if "'loss': '" in line]
    return out, losses


def _params(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert not hasattr(model, "caft_heads")
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_zero3_two_ranks_match_one_process(tmp_path, tiny_model_dir):
    heads = _heads(tmp_path, tiny_model_dir)
    recipe = _recipe(tmp_path, tiny_model_dir, heads)
    one, one_losses = _run("one", tmp_path, recipe, ranks=1, gas=2)
    two, two_losses = _run("zero3", tmp_path, recipe, ranks=2, gas=1)
    assert len(one_losses) == len(two_losses) == 2, (one_losses, two_losses)
    for a, b in zip(one_losses, two_losses):
        assert abs(a - b) <= LOSS_ATOL + 1e-3 * abs(a), (one_losses, two_losses)  # logged with 4 digits
    init, ref, got = _params(tiny_model_dir), _params(one), _params(two)
    moved = max((ref[n] - init[n]).abs().max().item() for n in ref)
    assert moved > 1e-4, "the run did not train"
    worst = max((ref[n] - got[n]).abs().max().item() for n in ref)
    assert worst <= PARAM_ATOL, f"ZeRO-3 differs from one process by {worst:.2e} (update {moved:.2e})"
