"""rl/sft/losses.py: head targets (offsets, ignored labels, packing boundaries), the schedule, the combination."""

from __future__ import annotations

import math

import torch

from rl.sft.losses import IGNORE, combine, head_targets, head_weights, sine_down


def test_head_k_targets_the_token_1_plus_k_ahead():
    labels = torch.tensor([[10, 11, 12, 13, 14, 15]])
    valid, target = head_targets(labels, 2)  # head 2 predicts t + 3
    assert valid.tolist() == [[True, True, True, False, False, False]]
    assert target[valid].tolist() == [13, 14, 15]
    valid0, target0 = head_targets(labels, 0)  # the model's own next token
    assert target0[valid0].tolist() == [11, 12, 13, 14, 15]


def test_ignored_labels_are_not_targets():
    labels = torch.tensor([[IGNORE, IGNORE, 12, 13, IGNORE]])  # prompt, completion, padding
    valid, target = head_targets(labels, 1)
    assert valid.tolist() == [[True, True, False, False, False]]
    assert target[valid].tolist() == [12, 13]


def test_packing_boundary_is_masked():
    # two sequences packed in one row: position ids restart at index 4
    labels = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    position_ids = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]])
    valid, target = head_targets(labels, 1, position_ids)  # t -> t + 2
    # positions 2, 3 would reach into the second sequence: masked
    assert valid.tolist() == [[True, True, False, False, True, True, False, False]]
    assert target[valid].tolist() == [3, 4, 7, 8]
    unpacked, _ = head_targets(labels, 1)  # without the position ids the boundary is invisible
    assert unpacked[0, 2] and unpacked[0, 3]


def test_sine_down_falls_from_one_to_zero():
    assert sine_down(0, 100) == 1.0
    assert sine_down(100, 100) == 0.0
    assert math.isclose(sine_down(50, 100), math.sin(math.pi / 4))
    assert head_weights(3, 0.8) == [0.8, 0.8 ** 2, 0.8 ** 3]


def test_scale_zero_adds_nothing_even_if_a_term_is_not_finite():
    ce0 = torch.tensor(2.0, requires_grad=True)
    assert combine(ce0, [torch.tensor(float("nan"))], [0.8], 0.0, include_ce0=True) is ce0
    total = combine(ce0, [torch.tensor(1.0), torch.tensor(2.0)], [0.8, 0.64], 0.5, include_ce0=True)
    assert math.isclose(total.item(), 2.0 + 0.5 * (0.8 + 1.28), rel_tol=1e-6)
    heads_only = combine(ce0, [torch.tensor(1.0)], [0.8], 1.0, include_ce0=False)
    assert math.isclose(heads_only.item(), 0.8, rel_tol=1e-6)
