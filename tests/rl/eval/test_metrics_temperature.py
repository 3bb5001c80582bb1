"""Temperature-fair metrics (rl/eval/metrics.py): the NLL at T, the fitted temperature, entropy
matching; a pure temperature change must show no calibrated-NLL or top-1 gain."""

from __future__ import annotations

import math

import pytest
import torch

from rl.eval.metrics import (at_match, distribution_stats, fit_temperature, match_temperature,
                             matched_temperature, mean_nll_at_temperature, nll_at_temperature, target_sets,
                             temperature_grid)


def _logits(n=300, v=40, seed=0, scale=3.0):
    """Random logits with targets drawn from softmax(logits / 1.3): the NLL-optimal T is near 1.3."""
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn((n, v), generator=gen)
    targets = torch.multinomial(torch.softmax(logits / 1.3, -1), 1, generator=gen)[:, 0]
    return logits, targets


def test_nll_at_temperature_is_the_log_softmax_of_scaled_logits_and_sums_target_sets():
    logits, targets = _logits(n=5, v=7)
    got = nll_at_temperature(logits, targets, 0.7)
    ref = -torch.log_softmax(logits / 0.7, -1).gather(1, targets[:, None])[:, 0]
    assert torch.allclose(got.float(), ref, atol=1e-5)
    sets = [[0, 3], [], [6], [1, 2, 4], [5]]
    got = nll_at_temperature(logits, sets, 2.0)
    p = torch.softmax(logits / 2.0, -1)
    for row, ids in enumerate(sets):
        if ids:
            assert float(got[row]) == pytest.approx(-math.log(float(p[row, ids].sum())), rel=1e-5)
        else:
            assert math.isnan(float(got[row]))  # no target: left out of means
    assert mean_nll_at_temperature(logits, sets, 2.0) == pytest.approx(float(got[[0, 2, 3, 4]].mean()), rel=1e-6)
    with pytest.raises(ValueError):
        nll_at_temperature(logits, targets, 0.0)


def test_fit_temperature_finds_the_minimum_of_the_mean_nll():
    logits, targets = _logits()
    t = fit_temperature(logits, targets)
    candidates = [math.exp(x / 500) for x in range(-500, 501)]  # T in [1/e, e]
    brute = min(((t, mean_nll_at_temperature(logits, targets, t)) for t in candidates), key=lambda pair: pair[1])
    assert t == pytest.approx(brute[0], rel=3e-3)
    assert mean_nll_at_temperature(logits, targets, t) <= brute[1] + 1e-9
    assert 1.0 < t < 1.8  # the targets were drawn at T = 1.3
    # the edge of the search range is returned when the optimum lies beyond it
    assert fit_temperature(logits, targets, low=0.1, high=0.5) == pytest.approx(0.5, rel=1e-5)
    with pytest.raises(ValueError):
        fit_temperature(logits, [[] for _ in range(len(logits))])


def test_a_pure_temperature_change_gains_nothing_calibrated_but_looks_like_a_gain_at_fixed_t():
    """The trained model is the base with its logits divided by c = 0.625 (sharper): its fitted T is the
    base's / c, so on held-out units its calibrated NLL and its top-1 equal the base's exactly, while
    its expected accuracy at the sampling temperature 0.8 rises."""
    base_cal, cal_targets = _logits(n=400, seed=1)
    base_held, held_targets = _logits(n=400, seed=2)
    c = 0.625
    sharp_cal, sharp_held = base_cal / c, base_held / c
    t_base = fit_temperature(base_cal, cal_targets)
    t_sharp = fit_temperature(sharp_cal, cal_targets)
    assert t_sharp == pytest.approx(t_base / c, rel=1e-6)
    nll_base = nll_at_temperature(base_held, held_targets, t_base)
    nll_sharp = nll_at_temperature(sharp_held, held_targets, t_sharp)
    assert float((nll_sharp - nll_base).mean()) == pytest.approx(0.0, abs=1e-6)
    top1_base = (base_held.argmax(-1) == held_targets).double().mean()
    top1_sharp = (sharp_held.argmax(-1) == held_targets).double().mean()
    assert float(top1_sharp - top1_base) == 0.0
    _, exp_base = distribution_stats(base_held, held_targets, 0.8)
    _, exp_sharp = distribution_stats(sharp_held, held_targets, 0.8)
    assert float(exp_sharp.mean() - exp_base.mean()) > 0.01  # the fixed-T "gain" is pure sharpening
    # and the NLL at T = 1 can move either way with sharpening: not a fair metric either
    assert float(nll_at_temperature(sharp_held, held_targets, 1.0).mean()) != pytest.approx(
        float(nll_at_temperature(base_held, held_targets, 1.0).mean()), abs=1e-3)


def test_entropy_matching_recovers_the_temperature_of_a_pure_sharpening():
    """The base at T = 0.8 * c has exactly the sharpened model's distributions at 0.8: the entropy
    match finds that T, and the sharpened model's expected accuracy gain over it is ~0."""
    base, targets = _logits(n=200, seed=3)
    c = 0.8
    sharp_entropy, sharp_expected = distribution_stats(base / c, targets, 0.8)
    grid = temperature_grid(0.8, step=0.02)
    assert any(t == pytest.approx(0.8) for t in grid) and grid == sorted(grid)
    stats = [distribution_stats(base, targets, t) for t in grid]
    match = match_temperature(grid, [float(e.mean()) for e, _ in stats], float(sharp_entropy.mean()))
    assert match is not None
    assert matched_temperature(grid, match) == pytest.approx(0.8 * c, rel=2e-3)
    base_at_match = at_match([float(x.mean()) for _, x in stats], match)
    assert float(sharp_expected.mean()) - base_at_match == pytest.approx(0.0, abs=2e-4)
    # outside the grid: no match
    assert match_temperature(grid, [float(e.mean()) for e, _ in stats], 1e9) is None


def test_target_sets_pads_and_masks():
    index, mask = target_sets([[3], [], [1, 2]])
    assert index.tolist() == [[3, 0], [0, 0], [1, 2]]
    assert mask.tolist() == [[True, False], [False, False], [True, True]]


def test_sample_token_logits_spreads_at_most_max_tokens_over_the_documents(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.eval.metrics import sample_token_logits

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["one two three four five six seven eight nine ten", "a b c d e f g h"]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    flat = [(d, j) for d, seq in enumerate(ids) for j in range(len(seq) - 1)]  # (document, predicting position)
    logits, targets = sample_token_logits(model, tok, texts, max_tokens=5)
    stride = -(-len(flat) // 5)
    picked = flat[::stride]
    assert len(targets) == len(picked) <= 5
    for row, (d, j) in enumerate(picked):
        with torch.no_grad():
            ref = model(torch.tensor([ids[d]])).logits[0, j].float()
        assert int(targets[row]) == ids[d][j + 1]
        assert torch.allclose(logits[row], ref, atol=1e-4)
    everything, all_targets = sample_token_logits(model, tok, texts, max_tokens=10_000)
    assert len(all_targets) == len(flat)
