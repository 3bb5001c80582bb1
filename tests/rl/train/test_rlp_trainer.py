"""RLP inside the real trainer: a short GRPO run on a tiny model with the `rlp` reward (real
generation, EMA teacher updated per optimizer step, logged information gain), the G/(G-1)
advantage option against TRL's `scale_rewards: none`, and the recipe fields' one-line errors."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from rewards.rlp import rlp_reward
from rl.errors import UserError

pytestmark = pytest.mark.timeout(600)

DOCS = [
    ("The cat sat on the mat and looked at", " the"),
    ("One, two, three, four, five,", " six"),
    ("She opened the door and walked into", " the"),
    ("Water boils at one hundred degrees", " Celsius"),
]


def rlp_rows(use_chat: bool):
    from rewards.rlp import rlp_prompt

    rows = []
    for context, nxt in DOCS:
        cont = nxt + " and more"
        rows.append({"prompt": rlp_prompt(context, use_chat), "context": context, "continuation": cont,
                     "boundaries": [len(nxt.encode()), len(cont.encode())]})
    return Dataset.from_list(rows)


def make_rlp_trainer(model_dir, out, *, teacher="ema", use_peft=False, max_steps=2, **extra):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.train.config import EntropyGRPOConfig
    from rl.train.trainer import EntropyGRPOTrainer

    fields = dict(
        output_dir=str(out), per_device_train_batch_size=4, gradient_accumulation_steps=1, num_generations=4,
        max_completion_length=8, learning_rate=1e-2, optim="adamw_torch", lr_scheduler_type="constant", beta=0.0,
        scale_rewards="none", bf16=False, gradient_checkpointing=False, use_cpu=True, max_steps=max_steps,
        logging_steps=1, save_strategy="no", seed=0, temperature=1.0, disable_dropout=True,
        dataloader_num_workers=0, rlp_teacher=teacher, rlp_ema_decay=0.5, rlp_score_batch_size=3,
        report_to=["none"])
    config = EntropyGRPOConfig(**{**fields, **extra})
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_config = None
    if use_peft:
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                 task_type="CAUSAL_LM")
    return EntropyGRPOTrainer(model=model, reward_funcs=[rlp_reward], args=config, processing_class=tok,
                              train_dataset=rlp_rows(bool(tok.chat_template)), peft_config=peft_config)


@pytest.mark.parametrize("use_peft", [False, True])
def test_short_grpo_run_logs_information_gain_and_updates_ema(tiny_model_dir_plain, tmp_path, use_peft):
    trainer = make_rlp_trainer(tiny_model_dir_plain, tmp_path, use_peft=use_peft)
    teacher = trainer.rlp_teacher
    assert teacher.kind == "ema" and teacher.adapter_only == use_peft
    trainer.train()
    assert teacher.updates == 2  # one update per optimizer step
    logs = [e for e in trainer.state.log_history if "rlp/info_gain" in e]
    assert len(logs) == 2
    for e in logs:
        assert math.isfinite(e["rlp/info_gain"]) and 0.0 <= e["rlp/positive_share"] <= 1.0
        assert 0 < e["rlp/thought_tokens"] <= 8 + 2  # a thought cut at </think> may re-tokenize
        assert e["rlp/info_gain"] == pytest.approx(e["rlp/policy_logp"] - e["rlp/teacher_logp"], abs=1e-4)
        assert e["rewards/rlp_reward/mean"] == pytest.approx(e["rlp/info_gain"], abs=1e-4)
    # the EMA moved towards the trained policy and is not the policy
    live = dict(trainer.model.named_parameters())
    if use_peft:
        moved = [n for n, e in teacher.shadow.items() if not torch.equal(e, live[n])]
    else:
        moved = [n for n, e in teacher.copy.named_parameters() if not torch.equal(e, live[n])]
    assert moved
    assert trainer._rlp.forward_calls > 0


def test_advantage_group_scaling_is_the_paper_formula(tiny_model_dir_plain, tmp_path):
    trainer = make_rlp_trainer(tiny_model_dir_plain, tmp_path, teacher="none", max_steps=1)
    trainer.model.train()
    rows = [dict(r) for r in trainer.train_dataset for _ in range(trainer.num_generations)][:4]
    torch.manual_seed(3)
    plain = trainer._generate_and_score_completions(rows)["advantages"].clone()
    trainer.args.advantage_group_scaling = True
    torch.manual_seed(3)
    scaled = trainer._generate_and_score_completions(rows)["advantages"]
    g = trainer.num_generations
    # TRL's scale_rewards none: r - mean, groups sum to 0; ours multiplies by G/(G-1)
    assert plain.view(-1, g).sum(-1).abs().max() < 1e-5
    assert plain.abs().max() > 0
    torch.testing.assert_close(scaled, plain * g / (g - 1))


@pytest.mark.parametrize("field,value,match", [
    ("rlp_teacher", "mean", "rlp_teacher: expected"),
    ("rlp_ema_decay", 1.0, "rlp_ema_decay: must be in"),
    ("rlp_next_tokens", 0, "rlp_next_tokens: must be at least 1"),
    ("rlp_score_batch_size", 0, "rlp_score_batch_size: must be at least 1"),
    ("rlp_table_steps", -1, "rlp_table_steps: must be >= 0"),
])
def test_config_errors_are_one_line(tmp_path, field, value, match):
    from rl.train.config import EntropyGRPOConfig

    with pytest.raises(UserError, match=match) as info:
        EntropyGRPOConfig(output_dir=str(tmp_path), **{field: value})
    assert "\n" not in str(info.value)


def test_advantage_scaling_needs_groups(tmp_path):
    from rl.train.config import EntropyGRPOConfig

    with pytest.raises(UserError, match="num_generations >= 2"):
        EntropyGRPOConfig(output_dir=str(tmp_path), advantage_group_scaling=True, num_generations=1,
                          per_device_train_batch_size=1)


def test_rpt_format_rlp_accepted_and_checked():
    from rl.train.config import ScriptArguments

    assert ScriptArguments(rpt_format="rlp").rpt_format == "rlp"
    with pytest.raises(UserError, match="rpt_format: expected"):
        ScriptArguments(rpt_format="rlpp")


def test_wandb_table_of_best_and_worst_thoughts(tiny_model_dir_plain, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    from wandb.sdk.wandb_run import Run

    logged = []
    real_log = Run.log

    def spy(self, data, *args, **kwargs):  # the W&B boundary: record what reaches it, then log for real
        logged.append(data)
        return real_log(self, data, *args, **kwargs)

    monkeypatch.setattr(Run, "log", spy)  # wandb.init rebinds wandb.log to the run's method
    trainer = make_rlp_trainer(tiny_model_dir_plain, tmp_path / "out", teacher="base", report_to=["wandb"],
                               rlp_table_steps=1)
    try:
        trainer.train()
    finally:
        wandb.finish()
    tables = [d["rlp_thoughts"] for d in logged if "rlp_thoughts" in d]
    assert len(tables) == 2  # one per step with rlp_table_steps 1
    table = tables[-1]
    assert table.columns == ["kind", "step", "info_gain", "context_tail", "thought", "next_tokens"]
    best = [r[2] for r in table.data if r[0] == "best"]
    worst = [r[2] for r in table.data if r[0] == "worst"]
    assert best and worst and max(best) >= min(worst)
    assert all(r[5] == " the" or r[5].startswith(" ") for r in table.data)  # the true next token


def _ema_weights(teacher) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in teacher.state_dict()["weights"].items()}


@pytest.mark.parametrize("use_peft", [False, True])
def test_ema_teacher_is_checkpointed_and_resumed(tiny_model_dir_plain, tmp_path, use_peft):
    """An interrupted run resumed from checkpoint-1 ends with the same EMA as an uninterrupted one:
    the average is training state, saved in the checkpoint (listed in its COMPLETE manifest)."""
    from rl.runtime.checkpoint import CheckpointCallback
    from rl.train.rlp_trainer import TEACHER_STATE

    save = {"save_strategy": "steps", "save_steps": 1}
    whole = make_rlp_trainer(tiny_model_dir_plain, tmp_path / "whole", use_peft=use_peft, **save)
    whole.add_callback(CheckpointCallback())
    whole.train()
    ckpt = tmp_path / "whole" / "checkpoint-1"
    assert TEACHER_STATE in (ckpt / "COMPLETE").read_text()
    saved = torch.load(ckpt / TEACHER_STATE, weights_only=True)
    assert saved["updates"] == 1 and saved["adapter_only"] == use_peft

    resumed = make_rlp_trainer(tiny_model_dir_plain, tmp_path / "resumed", use_peft=use_peft, **save)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.rlp_teacher.updates == whole.rlp_teacher.updates == 2
    want, got = _ema_weights(whole.rlp_teacher), _ema_weights(resumed.rlp_teacher)
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=0, msg=name)


def test_ema_state_from_another_model_is_one_line(tiny_model_dir_plain, tmp_path):
    full = make_rlp_trainer(tiny_model_dir_plain, tmp_path / "full", max_steps=1).rlp_teacher
    lora = make_rlp_trainer(tiny_model_dir_plain, tmp_path / "lora", use_peft=True, max_steps=1).rlp_teacher
    with pytest.raises(UserError, match="adapter_only") as info:
        lora.load_state_dict(full.state_dict(), where="ckpt/rlp_teacher.pt")
    assert "\n" not in str(info.value)
    state = full.state_dict()
    state["weights"].popitem()
    with pytest.raises(UserError, match="does not fit this model"):
        full.load_state_dict(state, where="ckpt/rlp_teacher.pt")


def test_rl_train_refuses_a_teacher_zero3_cannot_hold_before_loading(tiny_model_dir_plain, tmp_path, monkeypatch):
    """ZeRO-3 (stood in for by its detector: a real launch is in test_rlp_distributed.py) and a
    full-model `ema`: one line before any weights load."""
    import transformers.integrations.deepspeed as hf_deepspeed

    import rl.train.command as command
    from tests.kit import tiny_recipe, write_jsonl, write_yaml

    data = write_jsonl(tmp_path / "rlp.jsonl", [dict(r) for r in rlp_rows(False)])
    recipe = write_yaml(tmp_path / "r.yaml", tiny_recipe(tiny_model_dir_plain, tmp_path / "run", dataset_path=str(data),
                                                        reward_funcs=["rlp"], rlp_teacher="ema"))
    monkeypatch.setattr(hf_deepspeed, "is_deepspeed_zero3_enabled", lambda: True)
    monkeypatch.setattr(command, "build_trainer", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(UserError, match="`ema` without LoRA needs a whole copy"):
        command.train(["--config", str(recipe)])
