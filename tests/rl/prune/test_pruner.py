"""Greedy pruning logic on a tiny random model (exactness against brute force, permutation, determinism)."""

from __future__ import annotations

import pytest
import torch

from rl.prune.pruner import (
    APPROX,
    JOINT,
    PruneSettings,
    encode,
    kept_positions,
    prune,
    random_order,
    score_candidates,
    score_kept,
    surprisal_order,
)

QUESTION = "How many strings of length 3 use digits 1 and 2?"
CHAIN = "Each of the 3 places has 2 choices, so 2^3 = 8."
ANSWER = "8"


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM, Qwen2Config

    from tests.tiny_models import gpt2_tokenizer

    tok = gpt2_tokenizer()
    # Large init so answer log-likelihoods differ clearly between candidates (no near-ties).
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.3, tie_word_embeddings=True)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def enc(tokenizer):
    return encode(tokenizer, QUESTION, CHAIN, ANSWER)


@pytest.mark.parametrize("objective", ["answer", JOINT])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batched_scores_equal_one_at_a_time(model, enc, objective, batch_size):
    kept = [i for i in range(len(enc.chain_ids)) if i not in (2, 5)]  # a chain mid-way through pruning
    settings = PruneSettings(objective=objective, batch_size=batch_size)
    batched = score_candidates(model, enc, kept, list(range(len(kept))), settings)
    brute = [score_kept(model, enc, kept[:j] + kept[j + 1:], objective) for j in range(len(kept))]
    assert batched == pytest.approx(brute, abs=1e-4)


@pytest.mark.parametrize("objective", ["answer", JOINT])
def test_exact_greedy_step_is_brute_force_argmax(model, enc, objective):
    n = len(enc.chain_ids)
    result = prune(model, enc, PruneSettings(objective=objective, batch_size=4), stop_at=n - 3)
    kept = list(range(n))
    for step in range(3):
        brute = [score_kept(model, enc, kept[:j] + kept[j + 1:], objective) for j in range(len(kept))]
        best = max(range(len(kept)), key=lambda j: (brute[j], -j))
        assert max(brute) - sorted(brute)[-2] > 1e-3  # the check is meaningful: no near-tie
        assert result.order[step] == kept[best]
        assert result.curve[step + 1][1] == pytest.approx(brute[best], abs=1e-4)
        kept.pop(best)


@pytest.mark.parametrize("settings", [PruneSettings(), PruneSettings(mode=APPROX, candidates=4, per_step=0.3)])
def test_deletion_order_is_a_permutation_and_deterministic(model, enc, settings):
    n = len(enc.chain_ids)
    first, second = prune(model, enc, settings), prune(model, enc, settings)
    assert sorted(first.order) == list(range(n))
    assert first.order == second.order and first.curve == second.curve
    assert first.curve[0][0] == n and first.curve[-1][0] == 0
    assert sorted(first.ranks()) == list(range(n))


def test_keep_ratios(model, enc):
    n = len(enc.chain_ids)
    result = prune(model, enc, PruneSettings(mode=APPROX, candidates=5, per_step=0.25))
    assert result.kept(1.0) == list(range(n))
    assert result.kept(0.0) == []
    half = result.kept(0.5)
    assert len(half) == round(n * 0.5) and half == sorted(half)
    assert set(half).isdisjoint(result.order[:n - len(half)])
    partial = prune(model, enc, stop_at=n - 2)
    with pytest.raises(ValueError):
        kept_positions(partial.order, n, 0.5)


def test_approx_scores_fewer_candidates(model, enc):
    n = len(enc.chain_ids)
    exact = prune(model, enc)
    approx = prune(model, enc, PruneSettings(mode=APPROX, candidates=4, per_step=0.2))
    assert exact.candidates_scored == n * (n + 1) // 2
    assert approx.candidates_scored < exact.candidates_scored / 3
    assert PruneSettings().approximations() == [] and len(PruneSettings(mode=APPROX).approximations()) == 2


def test_baselines(model, enc):
    n = len(enc.chain_ids)
    assert sorted(random_order(n, 1)) == list(range(n)) and random_order(n, 1) == random_order(n, 1)
    assert random_order(n, 1) != random_order(n, 2)
    order = surprisal_order(model, enc)
    assert sorted(order) == list(range(n))
