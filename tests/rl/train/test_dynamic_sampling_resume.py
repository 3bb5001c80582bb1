"""Resume stays exact with dynamic sampling: extra generation batches draw fresh prompts as a pure function
of (seed, step, round), TRL's sampler order is untouched and the RNG after the extra sampling is in the
checkpoint, so `rl train` stopped after step 2 and resumed with `--resume_from_checkpoint auto` ends with
the same weights, bit for bit, and logs the same dynamic-sampling numbers as an uninterrupted run."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rl.cli import main as rl_main
from tests.kit import build_sharp_model, rpt_rows, tiny_recipe, write_jsonl, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def parity_flat_reward(prompts, completions, completion_ids, **kwargs) -> list[float]:
    """Flat (0.5) for the rows "Say hello N:" with N % 8 in (1, 3, 5) (the run trains on the odd rows: 3 of
    4), the share of even token ids otherwise: most groups never vary, so most steps need extra batches."""
    def flat(prompt) -> bool:
        digits = "".join(ch for ch in str(prompt) if ch.isdigit())
        return int(digits or zlib.crc32(str(prompt).encode())) % 8 in (1, 3, 5)

    return [0.5 if flat(p) else sum(t % 2 == 0 for t in ids) / max(1, len(ids)) for p, ids in zip(prompts, completion_ids)]


def recipe(tmp_path: Path, model_dir: Path, run: str) -> Path:
    data = write_jsonl(tmp_path / "data.jsonl", rpt_rows(16))
    fields = dict(dataset_path=str(data), reward_funcs=[f"{__name__}.parity_flat_reward"], max_steps=4,
                  save_steps=2, lr_scheduler_type="constant", learning_rate=1e-2, dynamic_sampling=True,
                  dynamic_sampling_max_batches=12, eval_fraction=0.0)
    return write_yaml(tmp_path / f"{run}.yaml", tiny_recipe(model_dir, tmp_path / run, **fields))


def ds_logs(run: Path) -> list[dict]:
    state = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())
    return [{k: v for k, v in e.items() if k.startswith("dynamic_sampling/") or k == "step"}
            for e in state["log_history"] if "dynamic_sampling/generation_batches" in e]


def test_resume_after_extra_generation_batches_is_bitwise(tmp_path, tiny_model_dir_plain):
    tiny_model_dir = build_sharp_model(tiny_model_dir_plain, tmp_path / "sharp")  # completions that differ
    assert rl_main(["train", "--config", str(recipe(tmp_path, tiny_model_dir, "full"))]) == 0
    resumed = recipe(tmp_path, tiny_model_dir, "resumed")
    assert rl_main(["train", "--config", str(resumed), "--max_steps", "2"]) == 0
    assert rl_main(["train", "--config", str(resumed), "--resume_from_checkpoint", "auto"]) == 0
    full_logs, resumed_logs = ds_logs(tmp_path / "full"), ds_logs(tmp_path / "resumed")
    assert [e["step"] for e in resumed_logs] == [1, 2, 3, 4]
    assert sum(e["dynamic_sampling/generation_batches"] for e in full_logs[2:]) > 2  # extra batches after step 2
    assert resumed_logs == full_logs
    a = load_file(tmp_path / "full" / "checkpoint-4" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoint-4" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    first = load_file(tmp_path / "resumed" / "checkpoint-2" / "model.safetensors")
    assert any(not torch.equal(a[k], first[k]) for k in a)  # steps 3-4 changed the weights
