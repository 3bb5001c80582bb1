"""Dynamic sampling in EntropyGRPOTrainer, one process (fake deterministic generation, tiny model): uniform
groups are dropped, fresh prompts refill the batch, the step-scope mask's population is the kept samples, a
capped batch trains on what there is, a reward that never varies stops in one line. The 2-rank test is
tests/rl/train/test_dynamic_sampling_distributed.py."""

from __future__ import annotations

import math

import pytest
import torch

from rl.errors import UserError
from tests.kit import build_sharp_model
from tests.rl.train.forking_worker import FLAT, PROMPTS, half_flat_reward, make_trainer
from tests.rl.train.test_trainer_forking import generation_batch, loss_and_grads

pytestmark = pytest.mark.timeout(600)

def flat_reward(prompts, completions, **kwargs):
    return [0.5 for _ in prompts]


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory, tiny_model_dir_plain):
    return build_sharp_model(tiny_model_dir_plain, tmp_path_factory.mktemp("sharp-model"))


def prompts_of(trainer, out) -> list[str]:
    tok = trainer.processing_class
    return [tok.decode(ids[mask.bool()]) for ids, mask in zip(out["prompt_ids"], out["prompt_mask"])]


def test_uniform_groups_are_dropped_and_refilled(sharp_model_dir, tmp_path):
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=8, ga=2, n_prompts=8, reward_funcs=[half_flat_reward],
                           dynamic_sampling=True, dynamic_sampling_max_batches=6)
    out = generation_batch(trainer, n_prompts=4)  # round 0: "The sum ..." is flat, 3 groups vary
    texts = prompts_of(trainer, out)
    assert len(texts) == 16  # the full generation batch: 4 groups of 4
    assert not any(t.startswith(FLAT) for t in texts)  # round 0's flat group replaced by a refilled one
    metrics = trainer._metrics["train"]
    assert metrics["dynamic_sampling/generation_batches"][-1] >= 2
    assert 0 < metrics["dynamic_sampling/dropped_share"][-1] < 1
    assert metrics["dynamic_sampling/prompts"][-1] == 4 * metrics["dynamic_sampling/generation_batches"][-1]
    assert metrics["dynamic_sampling/short"][-1] == 0
    # every kept group varies, so its advantages are not all zero; mask population = kept samples
    adv = out["advantages"]
    assert (adv.view(-1, 4).abs().sum(-1) > 0).all()
    assert int(out["forking_valid_total"]) == int(out["completion_mask"].sum())
    assert int(out["num_items_in_batch"]) == int(out["completion_mask"].sum())
    assert int(out["forking_kept_total"]) == -(-int(out["forking_valid_total"]) * 2 // 10)  # ceil(0.2 N)
    loss, grads = loss_and_grads(trainer, out)
    assert torch.isfinite(loss) and grads


def test_without_dynamic_sampling_the_flat_group_stays(sharp_model_dir, tmp_path):
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=8, ga=2, n_prompts=8, reward_funcs=[half_flat_reward])
    out = generation_batch(trainer, n_prompts=4)
    assert sum(t.startswith(FLAT) for t in prompts_of(trainer, out)) == 4
    assert "dynamic_sampling/generation_batches" not in trainer._metrics["train"]


def test_before_the_start_step_nothing_is_dropped(sharp_model_dir, tmp_path):
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=8, ga=2, n_prompts=8, reward_funcs=[half_flat_reward],
                           dynamic_sampling=True, dynamic_sampling_start_step=1, max_steps=3)
    out = generation_batch(trainer, n_prompts=4)
    assert sum(t.startswith(FLAT) for t in prompts_of(trainer, out)) == 4
    trainer.state.global_step = 1
    out = generation_batch(trainer, n_prompts=4)
    assert not any(t.startswith(FLAT) for t in prompts_of(trainer, out))


def test_at_the_cap_it_trains_on_what_there_is(sharp_model_dir, tmp_path, caplog):
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=4, ga=2, n_prompts=8, reward_funcs=[half_flat_reward],
                           dynamic_sampling=True, dynamic_sampling_max_batches=1)
    out = generation_batch(trainer, n_prompts=2)  # "The sum" flat, "A prime" varies: 4 samples, 2 micro-batches
    assert prompts_of(trainer, out) == [PROMPTS[1]] * 4
    assert trainer._metrics["train"]["dynamic_sampling/short"][-1] == 1
    assert "only 1 of 2 groups varied" in caplog.text
    caplog.clear()
    generation_batch(trainer, n_prompts=2)
    assert "varied" not in caplog.text  # warned once


def test_a_reward_that_never_varies_stops_in_one_line(sharp_model_dir, tmp_path):
    """A step without any informative group trains on advantage-0 filler (one sample per micro-batch: a rare
    reward may leave one step empty); EMPTY_STEPS_STOP such steps in a row stop the run in one line."""
    from rl.train.dynamic_sampling_trainer import EMPTY_STEPS_STOP

    trainer = make_trainer(sharp_model_dir, tmp_path, bs=4, ga=2, n_prompts=8, reward_funcs=[flat_reward],
                           dynamic_sampling=True, dynamic_sampling_max_batches=2)
    for _ in range(EMPTY_STEPS_STOP - 1):
        out = generation_batch(trainer, n_prompts=2)
        assert out["completion_ids"].shape[0] == 2 and not out["advantages"].any()  # 2 micro-batches of 1
        assert trainer._metrics["train"]["dynamic_sampling/kept_groups"][-1] == 0
    with pytest.raises(UserError, match="never varying: `flat_reward`") as info:
        generation_batch(trainer, n_prompts=2)
    assert "\n" not in str(info.value) and f"{EMPTY_STEPS_STOP} steps in a row (2 generation batches" in str(info.value)


def test_an_informative_step_resets_the_empty_count(sharp_model_dir, tmp_path):
    from rl.train.dynamic_sampling_trainer import EMPTY_STEPS_STOP

    trainer = make_trainer(sharp_model_dir, tmp_path, bs=4, ga=1, n_prompts=8, reward_funcs=[half_flat_reward],
                           dynamic_sampling=True, dynamic_sampling_max_batches=1)
    trainer.model.train()
    trainer._dynamic_empty_steps = EMPTY_STEPS_STOP - 1
    trainer._generate_and_score_completions([{"prompt": PROMPTS[1]} for _ in range(4)])  # this group varies
    assert trainer._dynamic_empty_steps == 0
    for _ in range(EMPTY_STEPS_STOP - 1):  # "The sum ..." never varies
        trainer._generate_and_score_completions([{"prompt": PROMPTS[0]} for _ in range(4)])
    with pytest.raises(UserError, match="never varying"):
        trainer._generate_and_score_completions([{"prompt": PROMPTS[0]} for _ in range(4)])


def test_unknown_metric_reward_is_refused_by_the_trainer(sharp_model_dir, tmp_path):
    with pytest.raises(UserError, match="dynamic_sampling_metric: 'nope'"):
        make_trainer(sharp_model_dir, tmp_path, reward_funcs=[half_flat_reward], dynamic_sampling=True,
                     dynamic_sampling_metric="nope")
    trainer = make_trainer(sharp_model_dir, tmp_path, reward_funcs=[half_flat_reward], dynamic_sampling=True,
                           dynamic_sampling_metric="half_flat_reward")
    assert trainer._dynamic_metric == 0


def test_trains_with_lora_iterations_and_more_micro_batches_than_accumulation(sharp_model_dir, tmp_path):
    """num_iterations 2 (TRL's old-log-prob pass, served by the forking scan, in every round), steps_per_generation
    4 > gradient_accumulation_steps 2 (a generation batch spans 2 optimizer steps), LoRA: the filtered batch
    splits into TRL's 4 micro-batches of 4 and the run trains."""
    trainer = make_trainer(sharp_model_dir, tmp_path, bs=4, ga=2, n_prompts=8, reward_funcs=[half_flat_reward],
                           dynamic_sampling=True, num_iterations=2, steps_per_generation=4, use_peft=True,
                           max_steps=4, lr=1e-2)
    assert trainer._trl_computes_old_logps()
    out = generation_batch(trainer, n_prompts=4)
    assert out["completion_ids"].shape[0] == 16 and "old_per_token_logps" in out
    assert out["old_per_token_logps"].shape == out["completion_ids"].shape
    assert not any(t.startswith(FLAT) for t in prompts_of(trainer, out))
    trainer.train()
    logs = [e for e in trainer.state.log_history if "dynamic_sampling/generation_batches" in e]
    assert trainer.state.global_step == 4 and logs and all(math.isfinite(e["loss"]) for e in logs)
