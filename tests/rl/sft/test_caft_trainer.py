"""rl/sft/trainer.py: coefficient 0 is plain TRL SFT (loss and gradients), the heads' term is really added,
stage `heads` trains only the heads, LoRA never reaches the heads, the policy checkpoint leaves them out."""

from __future__ import annotations

import datasets
import pytest
import torch
from trl import SFTTrainer

from rl.sft.config import CaftSFTConfig
from rl.sft.heads import build_heads, heads_of, heads_state, model_identity, write_heads
from rl.sft.trainer import CaftSFTTrainer

ROWS = [{"prompt": f"Question {i}: what follows {i}?", "completion": f" The number {i + 1} follows {i}."}
        for i in range(6)]


def _args(tmp_path, **fields):
    base = dict(output_dir=str(tmp_path / "run"), per_device_train_batch_size=3, max_length=48, report_to=[],
                use_cpu=True, bf16=False, activation_checkpointing=False, seed=0, learning_rate=1e-3, max_steps=1,
                save_strategy="no", logging_steps=1)
    return CaftSFTConfig(**{**base, **fields})


@pytest.fixture(scope="module")
def heads_dir(tiny_model_dir_plain, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir_plain)
    torch.manual_seed(0)
    heads = build_heads(model, 2, "decoder_layer")
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("heads")
    write_heads(path, heads_state(heads), heads, model_identity(model.config, str(tiny_model_dir_plain)))
    return path


def _trainer(cls, model_dir, args, **kwargs):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    extra = {"base_model_name": str(model_dir)} if cls is CaftSFTTrainer else {}
    return cls(model=str(model_dir), args=args, train_dataset=datasets.Dataset.from_list(ROWS), processing_class=tok,
               **extra, **kwargs)


def _loss_and_grads(trainer):
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _caft(tmp_path, heads_dir, **fields):
    return _args(tmp_path, aux_mtp="caft", caft_stage="finetune", caft_num_heads=2, caft_heads_path=str(heads_dir),
                 **fields)


def test_coefficient_zero_is_plain_sft(tiny_model_dir_plain, heads_dir, tmp_path):
    plain_loss, plain_grads = _loss_and_grads(_trainer(SFTTrainer, tiny_model_dir_plain, _args(tmp_path)))
    caft = _trainer(CaftSFTTrainer, tiny_model_dir_plain, _caft(tmp_path, heads_dir, caft_coefficient=0.0))
    loss, grads = _loss_and_grads(caft)
    assert torch.equal(loss, plain_loss)
    assert set(grads) == set(plain_grads)  # the frozen heads get no gradient
    for name, grad in grads.items():
        assert torch.equal(grad, plain_grads[name]), name
    assert caft._metrics["train"]["caft/top1_1"], "the heads still run for their metrics"

    weighted = _trainer(CaftSFTTrainer, tiny_model_dir_plain, _caft(tmp_path, heads_dir, caft_coefficient=0.5,
                                                                     caft_schedule="constant"))
    loss_w, grads_w = _loss_and_grads(weighted)
    ce = [weighted._metrics["train"][f"caft/ce_{k}"][-1] for k in (1, 2)]
    assert loss_w > plain_loss + 0.5 * 0.8 * ce[0] * 0.5  # the heads' term is really there (each term ~ mean CE)
    assert any(not torch.equal(g, plain_grads[n]) for n, g in grads_w.items())


def test_heads_stage_trains_only_the_heads(tiny_model_dir_plain, tmp_path):
    trainer = _trainer(CaftSFTTrainer, tiny_model_dir_plain,
                       _args(tmp_path, aux_mtp="caft", caft_stage="heads", caft_num_heads=2))
    loss, grads = _loss_and_grads(trainer)
    assert grads and all(".caft_heads." in f".{n}" for n in grads), sorted(grads)[:3]
    assert loss.item() > 0


def test_lora_never_reaches_the_heads_and_the_adapter_leaves_them_out(tiny_model_dir_plain, heads_dir, tmp_path):
    from peft import LoraConfig

    trainer = _trainer(CaftSFTTrainer, tiny_model_dir_plain, _caft(tmp_path, heads_dir, caft_coefficient=0.5),
                       peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    heads = heads_of(trainer.model)
    assert not any("lora" in n for n, _ in heads.named_modules()), "a head got LoRA layers"
    assert not any(p.requires_grad for p in heads.parameters())
    _, grads = _loss_and_grads(trainer)
    assert grads and all("lora" in n for n in grads)
    trainer.save_model(str(tmp_path / "adapter"))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "caft" in k]


def test_full_policy_checkpoint_is_a_plain_model(tiny_model_dir_plain, heads_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    trainer = _trainer(CaftSFTTrainer, tiny_model_dir_plain, _caft(tmp_path, heads_dir))
    trainer.save_model(str(tmp_path / "policy"))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    assert not hasattr(reloaded, "caft_heads")
    assert set(reloaded.state_dict()) == {k for k in trainer.model.state_dict() if "caft_heads" not in k}
