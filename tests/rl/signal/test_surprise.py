"""Titans surprise (rl/signal/surprise.py): closed form vs autograd, recursions vs an explicit loop."""

from __future__ import annotations

import random

import pytest
import torch

from rl.signal.surprise import momentary_surprise, past_surprise, surprisal


def test_momentary_surprise_is_the_cross_entropy_gradient_norm():
    torch.manual_seed(0)
    for scale in (0.1, 1.0, 8.0, 30.0):  # flat to near one-hot distributions
        logits = (torch.randn(17, 50, dtype=torch.float64) * scale).requires_grad_(True)
        targets = torch.randint(0, 50, (17,))
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")  # sum: per-row gradients
        (grad,) = torch.autograd.grad(loss, logits)
        want = grad.norm(dim=-1)
        got = momentary_surprise(logits.detach(), targets)
        assert torch.allclose(got, want, atol=1e-6, rtol=0), (scale, (got - want).abs().max())
        assert torch.allclose(surprisal(logits.detach(), targets),
                              torch.nn.functional.cross_entropy(logits.detach(), targets, reduction="none"), atol=1e-9)


def test_bounds_and_batch_shapes():
    logits = torch.tensor([[[20.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    u = momentary_surprise(logits, torch.tensor([[0, 1]]))
    assert u.shape == (1, 2) and u[0, 0] < 1e-6  # confident and right: no surprise
    assert abs(u[0, 1] - (2 / 3) ** 0.5) < 1e-6  # uniform over 3: sqrt(3/9 - 2/3 + 1)
    assert abs(momentary_surprise(torch.tensor([[20.0, 0.0]]), torch.tensor([1])) - 2 ** 0.5) < 1e-6
    assert momentary_surprise(logits.bfloat16(), torch.tensor([[0, 1]])).dtype == torch.float32
    with pytest.raises(ValueError, match="targets must have"):
        surprisal(torch.zeros(3, 4), torch.zeros(4, dtype=torch.long))


def test_past_surprise_matches_an_explicit_loop():
    rng = random.Random(0)
    u = [rng.uniform(0, 1.4) for _ in range(25)]
    for eta, alpha, theta in [(0.9, 0.0, 1.0), (0.5, 0.1, 0.3), (0.0, 1.0, 1.0), (1.0, 0.5, 2.0)]:
        s_prev, m_prev, want_s, want_m = 0.0, 0.0, [], []
        for t in range(len(u)):
            s_t = eta * s_prev + theta * u[t]
            m_t = (1 - alpha) * m_prev + s_t
            want_s.append(s_t)
            want_m.append(m_t)
            s_prev, m_prev = s_t, m_t
        got_s, got_m = past_surprise(u, eta=eta, alpha=alpha, theta=theta)
        assert got_s == pytest.approx(want_s, abs=1e-12) and got_m == pytest.approx(want_m, abs=1e-12)
    assert past_surprise([], 0.9) == ([], [])
    s, m = past_surprise([1.0, 0.0, 0.0], eta=0.5, alpha=0.0)
    assert s == [1.0, 0.5, 0.25] and m == [1.0, 1.5, 1.75]
    with pytest.raises(ValueError, match="eta"):
        past_surprise(u, eta=1.5)
