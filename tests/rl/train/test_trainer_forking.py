"""EntropyGRPOTrainer's forking mask on a tiny model, one process (fake, deterministic generation).

The selective LM head must give the loss and gradients of TRL's full head; the step mask must be
the exact top fraction of the generation batch; TRL's own old-log-prob pass must be shared.
"""

from __future__ import annotations

import math

import pytest
import torch
from trl import GRPOTrainer
from trl.trainer.utils import split_tensor_dict

import rl.train.forking
from rl.signal.entropy import token_entropy
from tests.kit import build_sharp_model
from tests.rl.train.forking_worker import PROMPTS, make_trainer

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory, tiny_model_dir_plain):
    return build_sharp_model(tiny_model_dir_plain, tmp_path_factory.mktemp("sharp-model"))


def generation_batch(trainer, n_prompts=4):
    trainer.model.train()
    rows = [{"prompt": p} for p in PROMPTS[:n_prompts] for _ in range(trainer.num_generations)]
    return trainer._generate_and_score_completions(rows)


def loss_and_grads(trainer, inputs):
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def full_entropies(trainer, out):
    """Entropies of softmax(logits / T) from a plain forward with full logits (independent path)."""
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    am = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    P = out["prompt_ids"].shape[1]
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=am).logits
    return token_entropy(logits[:, P - 1:-1], temperature=trainer.temperature)


@pytest.mark.parametrize("variant", ["dapo", "lora", "fp32_head", "grpo", "grad_ckpt", "bf16"])
def test_selective_head_same_loss_and_gradients_as_full_head(sharp_model_dir, tmp_path, monkeypatch, variant):
    kwargs = {"loss_type": "grpo" if variant == "grpo" else "dapo", "use_peft": variant == "lora"}
    if variant == "fp32_head":
        kwargs["cast_lm_head_to_fp32"] = True
    if variant == "grad_ckpt":  # TRL's default: the backbone recomputes its layers in the backward
        kwargs["gradient_checkpointing"] = True
    if variant == "bf16":  # CPU autocast: both heads project in bf16 and reduce in fp32
        kwargs["bf16"] = True
    # bf16: each path rounds the logits to bf16 in its own order (TRL: 32k-column tiles, ours: chunks)
    rtol, atol = (2e-2, 1e-2) if variant == "bf16" else (1e-5, 5e-6)
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=8, ga=2, **kwargs)
    assert trainer.forking_selective_reason is None
    out = generation_batch(trainer)
    micro = split_tensor_dict(out, 2)[1]
    assert 0 < int(micro["forking_mask"].sum()) < int(micro["completion_mask"].sum())
    # Old log-probs away from the current ones, so the loss value depends on the log-probs at the
    # kept positions (with old == current it would be sum(weights x advantages), whatever they are).
    ids = torch.cat([micro["prompt_ids"], micro["completion_ids"]], 1)
    am = torch.cat([micro["prompt_mask"], micro["completion_mask"]], 1)
    with torch.no_grad():
        logps, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(
            trainer, trainer.model, ids, am, micro["completion_ids"].shape[1])
    noise = 0.3 * torch.randn(logps.shape, generator=torch.Generator().manual_seed(0))
    micro["old_per_token_logps"] = logps + noise

    selected_rows = []
    real = rl.train.forking.selected_logps

    def spy(head, hidden, *args, **kw):
        selected_rows.append(hidden.shape[0])
        return real(head, hidden, *args, **kw)

    monkeypatch.setattr(rl.train.forking, "selected_logps", spy)
    loss_sel, grads_sel = loss_and_grads(trainer, micro)
    assert selected_rows == [int(micro["forking_mask"].sum())]  # head ran on kept rows only
    trainer.forking_selective_head = False
    loss_full, grads_full = loss_and_grads(trainer, micro)
    assert selected_rows == [int(micro["forking_mask"].sum())]  # ... and not at all on the full path

    assert torch.allclose(loss_sel, loss_full, rtol=rtol, atol=1e-7), (loss_sel, loss_full)
    assert abs(float(loss_full)) > 1e-3
    assert grads_sel.keys() == grads_full.keys() and grads_full
    if variant == "lora":
        assert all("lora" in n for n in grads_full)
    scale = max(g.abs().max() for g in grads_full.values())
    assert scale > 0
    for name, g in grads_full.items():
        assert torch.allclose(grads_sel[name], g, rtol=rtol, atol=atol * scale), name


def test_step_mask_is_exact_top_fraction_of_the_generation_batch(sharp_model_dir, tmp_path):
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=4, ga=4)
    out = generation_batch(trainer)
    valid = out["completion_mask"].bool()
    ent = out["forking_entropy"]
    assert torch.allclose(ent[valid], full_entropies(trainer, out)[valid], rtol=1e-4, atol=1e-5)
    kept = out["forking_mask"]
    n = int(valid.sum())
    assert int(kept.sum()) == math.ceil(0.2 * n) and not (kept & ~valid).any()
    assert ent[kept].min() >= ent[valid & ~kept].max()
    assert float(out["forking_valid_total"]) == n and float(out["forking_kept_total"]) == int(kept.sum())
    assert float(out["num_items_in_batch"]) == n
    m = trainer._metrics["train"]
    assert m["forking/kept_fraction"][-1] == pytest.approx(int(kept.sum()) / n)
    assert m["forking/threshold"][-1] == pytest.approx(float(ent[kept].min()))
    assert m["forking/entropy_kept"][-1] > m["forking/entropy_all"][-1]
    # the mask rides along TRL's shuffle/split with the rows it belongs to
    for micro in split_tensor_dict(out, 4):
        assert not (micro["forking_mask"] & ~micro["completion_mask"].bool()).any()


def test_kept_normalisation_divides_by_kept_count(sharp_model_dir, tmp_path):
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=16, ga=1)
    out = generation_batch(trainer)
    loss_kept, _ = loss_and_grads(trainer, out)
    trainer.args.entropy_mask_normalize = "all"
    loss_all, _ = loss_and_grads(trainer, out)
    n, k = float(out["forking_valid_total"]), float(out["forking_kept_total"])
    assert torch.allclose(loss_kept, loss_all * n / k, rtol=1e-5)
    assert abs(float(loss_all)) > 0


def test_micro_batch_scope_keeps_exact_count_where_trl_quantile_keeps_fewer(sharp_model_dir, tmp_path):
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=16, ga=1, scope="micro_batch")
    out = generation_batch(trainer)
    assert "forking_mask" not in out  # selected at loss time, like TRL
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    am = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        _, ent, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, am, ids.shape[1] - out[
            "prompt_ids"].shape[1], compute_entropy=True)
    mask = out["completion_mask"]
    trainer._forking_loss_inputs = out
    ours = trainer.get_high_entropy_mask(ent, mask, 0.8) > 0
    trainer._forking_loss_inputs = None
    trl = GRPOTrainer.get_high_entropy_mask(trainer, ent, mask, 0.8)
    n = int(mask.sum())
    assert int(ours.sum()) == math.ceil(0.2 * n)
    assert int(trl.sum()) == math.floor(0.2 * n + 1 - 0.2)  # torch.quantile's rule on tie-free data
    assert not (trl & ~ours).any()  # both take the highest entropies
    assert ent[ours].min() >= ent[mask.bool() & ~ours].max()


def test_trl_old_logprob_pass_is_replaced_by_one_scan(sharp_model_dir, tmp_path):
    """num_iterations=2 makes TRL compute old log-probs; our scan serves them and the entropies."""
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=16, ga=1, num_iterations=2)
    assert trainer._trl_computes_old_logps()
    calls = []
    real = trainer._forking_scan
    trainer._forking_scan = lambda *a, **k: calls.append(1) or real(*a, **k)
    out = generation_batch(trainer)
    assert len(calls) == 1 and "old_per_token_logps" in out
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    am = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    T = out["completion_ids"].shape[1]
    with torch.no_grad():
        ref_logps, ref_ent, _ = GRPOTrainer._get_per_token_logps_and_entropies(
            trainer, trainer.model, ids, am, T, batch_size=16, compute_entropy=True)
    valid = out["completion_mask"].bool()
    assert torch.allclose(out["old_per_token_logps"][valid], ref_logps[valid], rtol=1e-5, atol=1e-5)
    assert torch.allclose(out["forking_entropy"][valid], ref_ent[valid], rtol=1e-5, atol=1e-5)
    loss, grads = loss_and_grads(trainer, out)  # selective head with old log-probs present
    assert math.isfinite(float(loss)) and grads


@pytest.mark.parametrize("order", ["trl", "reference_pass_first"])
def test_old_logprob_capture_takes_the_policys_pass_with_peft_and_beta(sharp_model_dir, tmp_path, monkeypatch, order):
    """PEFT + beta != 0: TRL's reference pass calls the same method on the same object, with the
    adapter disabled. The step's entropies must be the policy's (adapter on) whatever the order."""
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=16, ga=1, num_iterations=2, use_peft=True, beta=0.04)
    assert trainer._trl_computes_old_logps()
    torch.manual_seed(0)
    with torch.no_grad():  # a non-zero adapter, so the policy and the reference (adapter off) differ
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    if order == "reference_pass_first":  # as if TRL ran the reference pass first: the capture takes it
        real_generate = GRPOTrainer._generate_and_score_completions

        def reordered(self, inputs):
            ids = torch.randint(0, 50, (2, 6))
            with torch.no_grad(), self.model.disable_adapter():
                self._get_per_token_logps_and_entropies(self.model, ids, torch.ones_like(ids), 3)
            return real_generate(self, inputs)

        monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", reordered)
    out = generation_batch(trainer)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    am = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    T = out["completion_ids"].shape[1]
    with torch.no_grad():
        pol_logps, pol_ent, _ = GRPOTrainer._get_per_token_logps_and_entropies(
            trainer, trainer.model, ids, am, T, batch_size=16, compute_entropy=True)
        with trainer.model.disable_adapter():
            ref_logps, ref_ent, _ = GRPOTrainer._get_per_token_logps_and_entropies(
                trainer, trainer.model, ids, am, T, batch_size=16, compute_entropy=True)
    valid = out["completion_mask"].bool()
    assert not torch.allclose(pol_ent[valid], ref_ent[valid], atol=1e-3)  # the test can tell them apart
    assert torch.allclose(out["forking_entropy"][valid], pol_ent[valid], rtol=1e-5, atol=1e-5)
    assert torch.allclose(out["old_per_token_logps"][valid], pol_logps[valid], rtol=1e-5, atol=1e-5)
    assert torch.allclose(out["ref_per_token_logps"][valid], ref_logps[valid], rtol=1e-5, atol=1e-5)


def test_micro_batch_without_kept_tokens_backpropagates_zero(sharp_model_dir, tmp_path):
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=8, ga=2)
    out = generation_batch(trainer)
    micro = split_tensor_dict(out, 2)[0]
    micro["forking_mask"] = torch.zeros_like(micro["forking_mask"])
    loss, grads = loss_and_grads(trainer, micro)
    assert float(loss) == 0.0 and grads and all(torch.equal(g, torch.zeros_like(g)) for g in grads.values())


def test_mask_off_is_plain_trl(sharp_model_dir, tmp_path):
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=16, ga=1, ratio=1.0)
    assert trainer.forking_selective_reason == "mask off"
    out = generation_batch(trainer)
    assert not any(k.startswith("forking") for k in out)


def test_unsupported_settings_fall_back_to_full_head(sharp_model_dir, tmp_path):
    assert "beta" in make_trainer(sharp_model_dir, tmp_path, beta=0.04).forking_selective_reason
    assert "micro_batch" in make_trainer(sharp_model_dir, tmp_path, scope="micro_batch").forking_selective_reason
    assert "sequence" in make_trainer(sharp_model_dir, tmp_path, importance_sampling_level="sequence"
                                      ).forking_selective_reason


def test_training_logs_forking_metrics_and_wandb_table(sharp_model_dir, tmp_path, monkeypatch):
    import wandb
    from wandb.sdk.wandb_run import Run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logged = []
    real_log = Run.log  # wandb.init rebinds the module-level wandb.log to the run's method
    monkeypatch.setattr(Run, "log", lambda self, data, *a, **k: logged.append(data) or real_log(self, data, *a, **k))
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=4, ga=2, n_prompts=8, max_steps=2,
                           report_to=("wandb",), forking_table_steps=2)
    trainer.train()
    wandb.finish()
    steps = [e for e in trainer.state.log_history if "loss" in e]
    assert len(steps) == 2
    for e in steps:
        assert 0.19 < e["forking/kept_fraction"] < 0.3 and e["forking/threshold"] > 0
        assert e["forking/entropy_kept"] > e["forking/entropy_all"]
    tables = [d["forking_tokens"] for d in logged if "forking_tokens" in d]
    assert len(tables) == 1  # every 2 steps
    table = tables[0]
    assert table.columns == ["token", "token_id", "count", "occurrences", "kept_rate", "mean_entropy"]
    counts = [row[2] for row in table.data]
    assert counts == sorted(counts, reverse=True) and all(c >= 1 for c in counts)
    assert all(0 < row[4] <= 1 for row in table.data)


@pytest.mark.slow
def test_rpt_recipe_trains_with_step_mask_and_lora(tmp_path, tiny_model_dir):
    """`rl train` end to end with the RPT reward, LoRA and the forking mask."""
    import json

    from rl.cli import main as rl_main
    from tests.rl.train.test_command import write_recipe

    recipe = write_recipe(tmp_path, tiny_model_dir, top_entropy_quantile=0.2, use_peft=True, lora_r=4,
                          lora_target_modules=["q_proj", "v_proj"], gradient_accumulation_steps=2)
    assert rl_main(["train", "--config", str(recipe)]) == 0
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    steps = [e for e in state["log_history"] if "loss" in e]
    assert len(steps) == 2 and all(math.isfinite(e["loss"]) for e in steps)
    assert all(0 < e["forking/kept_fraction"] <= 0.5 for e in steps)
    assert any("rewards/rpt_reward/mean" in e for e in steps)
