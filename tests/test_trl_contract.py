"""What entropy-rl relies on in TRL's internals (rl/train/trainer.py, rl/train/forking.py, rl/train/losses.py,
rewards/registry.py, rl/runtime/checkpoint.py). pyproject pins `trl>=1.16,<1.17`; when a TRL release
changes one of these, the test named after it fails, before any training run does.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
import torch
from trl import GRPOTrainer
from trl.trainer import utils as trl_utils

from rewards.registry import TRL_CALL_ARGS, TRL_EXTRA_KWARGS
from rl.train.losses import LOSS_VARIANTS


def _source(func) -> str:
    return textwrap.dedent(inspect.getsource(func))


def _params(func) -> list[str]:
    return list(inspect.signature(func).parameters)


def _aggregation_branches() -> dict[str, str]:
    """loss type -> source of its branch in the if/elif chain of `_compute_loss` that aggregates
    the per-token loss (the chain whose branches set `policy_loss = loss.detach()`)."""
    tree = ast.parse(_source(GRPOTrainer._compute_loss))
    branches: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.If) or "self.loss_type" not in ast.unparse(node.test):
            continue
        body = "\n".join(ast.unparse(stmt) for stmt in node.body)
        if "policy_loss = loss.detach()" not in body:
            continue
        for c in ast.walk(node.test):
            if isinstance(c, ast.Constant) and isinstance(c.value, str):
                branches.setdefault(c.value, body)
    return branches


def _denominator(branch: str) -> str:
    if "max_completion_length" in branch:
        return "constant"
    if "num_items_in_batch" in branch:
        return "global"
    if ".sum(-1)" in branch:
        return "row"
    if "mask.sum().clamp" in branch:
        return "local"
    return "unknown"


def test_trl_loss_types_match_the_loss_registry():
    branches = _aggregation_branches()
    assert set(branches) == set(LOSS_VARIANTS), (
        "TRL's _compute_loss aggregates loss types {} but rl/train/losses.py registers {}: register the new ones "
        "(or drop the removed ones)".format(sorted(branches), sorted(LOSS_VARIANTS)))


@pytest.mark.parametrize("loss_type", sorted(LOSS_VARIANTS))
def test_trl_denominator_of_each_loss_type_matches_the_registry(loss_type):
    branch = _aggregation_branches().get(loss_type, "")
    assert _denominator(branch) == LOSS_VARIANTS[loss_type].denominator, branch


def test_compute_loss_hands_entropy_mask_to_get_high_entropy_mask():
    src = _source(GRPOTrainer._compute_loss)
    assert "self.get_high_entropy_mask(" in src and "self._get_per_token_logps_and_entropies(" in src
    assert "per_token_loss = per_token_loss * entropy_mask" in src  # the mask multiplies the policy loss only


@pytest.mark.parametrize("method, params", [
    ("_compute_loss", ["self", "model", "inputs"]),
    ("compute_loss", ["self", "model", "inputs", "return_outputs", "num_items_in_batch"]),
    ("get_high_entropy_mask", ["self", "entropies", "mask", "threshold"]),
    ("_generate_and_score_completions", ["self", "inputs"]),
    ("log", ["self", "logs", "start_time"]),
    ("_save_checkpoint", ["self", "model", "trial"]),  # RLP writes its EMA teacher beside HF's checkpoint
])
def test_signature_of_overridden_method(method, params):
    assert _params(getattr(GRPOTrainer, method)) == params


def test_signature_of_get_per_token_logps_and_entropies():
    params = _params(GRPOTrainer._get_per_token_logps_and_entropies)
    assert params[:8] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size",
                          "compute_entropy", "compute_aux_loss"]
    from rl.train.trainer import _MM_KEYS

    assert set(params[8:]) <= set(_MM_KEYS), f"new multimodal inputs: {set(params[8:]) - set(_MM_KEYS)}"


def test_trainer_attributes_read_by_the_forking_mask_are_set_by_trl():
    init = _source(GRPOTrainer.__init__)
    for attr in ("beta", "loss_type", "temperature", "num_iterations", "top_entropy_quantile", "use_vllm",
                 "importance_sampling_level", "off_policy_mask_threshold", "aux_loss_enabled",
                 "vllm_importance_sampling_correction", "_entropy_bonus_enabled", "_metrics"):
        assert f"self.{attr} =" in init, attr


def test_one_old_logprob_call_per_generation_batch_under_the_condition_we_mirror():
    """`EntropyGRPOTrainer._trl_computes_old_logps` mirrors this condition, and the capture serves exactly one call."""
    src = _source(GRPOTrainer._generate_and_score_completions)
    assert src.count("old_per_token_logps, _, _ = self._get_per_token_logps_and_entropies(") == 1
    assert "generate_every = self.args.steps_per_generation * self.num_iterations" in src
    assert "self.args.gradient_accumulation_steps % generate_every != 0" in src
    assert "self.use_vllm and self.vllm_importance_sampling_correction" in src
    # the very tensor our scan returned (carrying its entropies as an attribute) reaches the batch
    assert 'output["old_per_token_logps"] = old_per_token_logps' in src


def test_calculate_rewards_returns_every_ranks_rewards():
    """Dynamic sampling (rl/train/dynamic_sampling_trainer.py) decides which groups to keep from what
    `_calculate_rewards` returns: it must be the gathered (all ranks) matrix, so every rank decides alike;
    and the sampler's batch layout (groups of num_generations consecutive rows) is what `_refill_rows` copies."""
    src = " ".join(_source(GRPOTrainer._calculate_rewards).split())
    assert src.endswith("rewards_per_func = gather(rewards_per_func) return rewards_per_func")
    assert "for index in chunk: for _ in range(self.mini_repeat_count): yield index" in " ".join(
        _source(trl_utils.RepeatSampler.__iter__).split())


def test_extra_fields_of_generate_reach_the_input_rows():
    """The sampler's entropies leave `_generate` in its extra fields (one value per completion row);
    TRL merges those into the batch's input rows, where `EntropyGRPOTrainer._batch_entropy` takes them."""
    score = " ".join(_source(GRPOTrainer._generate_and_score_completions).split())
    assert "for i, inp in enumerate(inputs): for key, values in extra_fields.items():" in score
    assert "if isinstance(values, list) and i < len(values): inp[key] = values[i]" in score


def test_reward_functions_get_the_keywords_the_registry_lists():
    src = _source(GRPOTrainer._calculate_rewards)
    for name in TRL_EXTRA_KWARGS:
        assert f'reward_kwargs["{name}"]' in src, name
    assert "prompts=prompts, completions=completions, completion_ids=completion_ids_list" in src
    assert TRL_CALL_ARGS == ("prompts", "completions", "completion_ids")
    assert 'key not in ["prompt", "completion", "completion_ids"]' in src  # every other column is passed


def test_completions_for_rewards_come_out_of_generate_as_we_replace_them():
    """`EntropyGRPOTrainer._generate` replaces the completions (4th of `_generate`'s results, decoded alone
    by TRL) with the text the model wrote (rl/signal/decoding.py): a plain-text prompt's, and a chat
    completion TRL decoded with `batch_decode` (not `parse_response`, which a response schema selects);
    the rewards and the completions log must read exactly that list."""
    assert _params(GRPOTrainer._generate) == ["self", "prompts"]
    src = _source(GRPOTrainer._generate)
    assert "prompt_ids, images, multimodal_fields = self._tokenize_prompts(prompts)" in src
    assert "completions = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)" in src
    assert "contents = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)" in src
    assert 'completions = [[{"role": "assistant", "content": content}] for content in contents]' in src
    assert 'getattr(self._tokenizer, "response_template", None) is not None' in src
    assert 'getattr(self._tokenizer, "response_schema", None) is not None' in src
    assert ("return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, "
            "tool_images") in src
    score = " ".join(_source(GRPOTrainer._generate_and_score_completions).split())
    assert ("prompt_ids_list, completion_ids_list, tool_mask_list, completions, sampling_per_token_logps_list, "
            "extra_fields, images, tool_images, ) = self._generate(prompts)") in score
    assert "self._calculate_rewards(inputs, prompts, completions, completion_ids_list)" in score
    assert 'self._logs["completion"].extend(gather_object(completions))' in score


def test_zero_dim_tensors_pass_through_shuffle_and_split():
    """ForkingStep's population counts are 0-dim tensors: every micro-batch must get them whole."""
    batch = {"mask": torch.arange(8).reshape(4, 2), "total": torch.tensor(7), "none": None}
    shuffled = trl_utils.shuffle_sequence_dict(batch)
    assert torch.equal(shuffled["total"], torch.tensor(7)) and shuffled["none"] is None
    parts = trl_utils.split_tensor_dict(shuffled, 2)
    assert len(parts) == 2 and all(p["total"].ndim == 0 and int(p["total"]) == 7 for p in parts)
    assert sorted(torch.cat([p["mask"] for p in parts]).flatten().tolist()) == list(range(8))


def test_prepare_inputs_shuffles_then_splits_the_generation_batch():
    src = _source(GRPOTrainer._prepare_inputs)
    assert "shuffle_sequence_dict(generation_batch)" in src
    assert "split_tensor_dict(generation_batch, self.args.steps_per_generation)" in src


def test_repeat_sampler_still_exists_for_epoch_replay():
    """rl/runtime/checkpoint.py replays TRL's RepeatSampler's per-epoch shuffle on resume."""
    params = _params(trl_utils.RepeatSampler.__init__)
    assert {"mini_repeat_count", "batch_size", "repeat_count", "shuffle", "seed"} <= set(params)
