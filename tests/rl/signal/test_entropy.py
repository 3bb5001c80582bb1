"""Tests for rl/signal/entropy.py: entropies against float64 references, exact forking-token selection.

Selection over several ranks runs on real gloo process groups (2 and 4 ranks) in
tests/rl/train/test_entropy_distributed.py.
"""

from __future__ import annotations

import math
import time
from decimal import Decimal
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rl.signal.entropy import masked_stats, select_forking_tokens, token_entropy, topk_entropy


# ----------------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------------


def ref_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """float64 -sum p log p with 0 log 0 = 0, from the same (upcast) logits."""
    p = torch.softmax(logits.double() / temperature, dim=-1)
    return torch.special.entr(p).sum(-1)


def ref_topk_entropy(logits: torch.Tensor, k: int, temperature: float = 1.0) -> torch.Tensor:
    top = logits.double().sort(dim=-1, descending=True).values[..., :k]
    return ref_entropy(top, temperature)


def ref_select(e: torch.Tensor, valid: torch.Tensor, ratio: float, keys: torch.Tensor | None = None):
    """Brute force: sort valid tokens by (entropy desc, key asc), keep the first ceil(ratio*N)."""
    e = e.reshape(-1).double().numpy()
    valid = valid.reshape(-1).bool().numpy()
    keys = np.arange(e.size) if keys is None else keys.reshape(-1).numpy()
    idx = np.flatnonzero(valid)
    n_keep = math.ceil(Decimal(repr(ratio)) * idx.size)
    order = idx[np.lexsort((keys[idx], -e[idx]))]
    kept = np.zeros(e.size, dtype=bool)
    kept[order[:n_keep]] = True
    thr = e[order[n_keep - 1]] if n_keep else math.nan
    return torch.from_numpy(kept), thr


# ----------------------------------------------------------------------------------------------
# token_entropy
# ----------------------------------------------------------------------------------------------


def _logits(shape, dtype=torch.float32, scale=3.0, neg_inf_frac=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * scale
    x[torch.rand(shape, generator=g) < neg_inf_frac] = -math.inf
    x[..., 0] = torch.randn(shape[:-1], generator=g)  # at least one finite logit per row
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.6])
def test_token_entropy_matches_float64_reference(dtype, temperature):
    x = _logits((3, 5, 4099), dtype)
    h = token_entropy(x, temperature=temperature)
    assert h.shape == (3, 5) and h.dtype == torch.float32
    assert not torch.isnan(h).any()
    torch.testing.assert_close(h.double(), ref_entropy(x, temperature), atol=1e-5, rtol=0)


def test_token_entropy_large_logits_and_edge_rows():
    x = _logits((4, 1000), scale=200.0, neg_inf_frac=0.3, seed=1) + 1000.0  # big offsets cancel nothing
    torch.testing.assert_close(token_entropy(x).double(), ref_entropy(x), atol=1e-5, rtol=0)
    one_hot = torch.full((2, 7), -math.inf)
    one_hot[:, 3] = 5.0
    uniform = torch.zeros(1, 7)
    assert torch.equal(token_entropy(one_hot), torch.zeros(2))
    torch.testing.assert_close(token_entropy(uniform), torch.tensor([math.log(7)]))
    assert torch.isnan(token_entropy(torch.full((1, 7), -math.inf))).all()  # documented: no distribution
    assert token_entropy(torch.randn(0, 5)).shape == (0,)
    assert token_entropy(torch.randn(9)).shape == ()


def test_token_entropy_float64_stays_float64():
    x = _logits((6, 50), torch.float64)
    h = token_entropy(x, temperature=0.5)
    assert h.dtype == torch.float64
    torch.testing.assert_close(h, ref_entropy(x, 0.5), atol=1e-12, rtol=0)


@pytest.mark.parametrize("fn", [token_entropy, lambda x, **kw: topk_entropy(x, k=5, **kw)])
def test_chunking_invariance_and_non_contiguous(fn):
    x = _logits((4, 9, 301), torch.bfloat16, seed=2)
    full = fn(x, chunk_size=10_000)
    for cs in (1, 3, 7, 36, None):
        torch.testing.assert_close(fn(x, chunk_size=cs), full, atol=1e-6, rtol=0)
    shifted = x[:, :-1]  # the LM shift: not viewable as (-1, V)
    assert not shifted.is_contiguous()
    torch.testing.assert_close(fn(shifted, chunk_size=4), fn(shifted.contiguous()), atol=1e-6, rtol=0)
    transposed = x.transpose(0, 1)
    torch.testing.assert_close(fn(transposed, chunk_size=5), full.transpose(0, 1), atol=1e-6, rtol=0)


def test_token_entropy_gradient_matches_analytic_reference():
    """dH/dx_i = -p_i (log p_i + H) / T, with p = softmax(x / T) (and 0 where p = 0)."""
    x = _logits((3, 4, 37), seed=3).requires_grad_(True)
    w = torch.randn(3, 4)
    (token_entropy(x, temperature=0.8, chunk_size=5) * w).sum().backward()
    p = torch.softmax(x.detach().double() / 0.8, -1)
    logp = torch.log_softmax(x.detach().double() / 0.8, -1).nan_to_num(neginf=0.0)
    want = -p * (logp + ref_entropy(x.detach(), 0.8).unsqueeze(-1)) / 0.8 * w.double().unsqueeze(-1)
    assert torch.isfinite(x.grad).all()  # -inf logits get a zero gradient, not NaN
    neg = torch.isneginf(x.detach())
    assert neg.any() and not x.grad[neg].any()
    torch.testing.assert_close(x.grad.double(), want, atol=1e-6, rtol=1e-4)


def test_gradcheck_float64():
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: token_entropy(t, temperature=1.3, chunk_size=2), (x,))
    assert torch.autograd.gradcheck(lambda t: topk_entropy(t, k=3, chunk_size=2), (x,))


def test_no_grad_by_default_when_input_has_none():
    assert not token_entropy(torch.randn(2, 5)).requires_grad
    assert token_entropy(torch.randn(2, 5, requires_grad=True)).requires_grad


def test_invalid_arguments():
    with pytest.raises(ValueError):
        token_entropy(torch.randn(2, 3), temperature=0.0)
    with pytest.raises(ValueError):
        token_entropy(torch.randn(2, 3), chunk_size=0)
    with pytest.raises(ValueError):
        token_entropy(torch.randn(2, 0))
    with pytest.raises(TypeError):
        token_entropy(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        topk_entropy(torch.randn(2, 3), k=0)


# ----------------------------------------------------------------------------------------------
# topk_entropy
# ----------------------------------------------------------------------------------------------


def test_topk_entropy_is_renormalised_hand_case():
    x = torch.tensor([[3.0, 1.0, 2.0, 0.0, -1.0]])
    p = math.e / (math.e + 1)  # softmax([3, 2]) = (e, 1) / (e + 1)
    want = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert topk_entropy(x, k=2).item() == pytest.approx(want, abs=1e-6)
    # not the truncated full-softmax sum
    q = torch.softmax(x.double(), -1)[0]
    truncated = -(q[0] * q[0].log() + q[2] * q[2].log()).item()
    assert abs(truncated - want) > 0.04
    assert topk_entropy(x, k=1).item() == 0.0
    # temperature 2: softmax([1.5, 1.0])
    p2 = 1 / (1 + math.exp(-0.5))
    assert topk_entropy(x, k=2, temperature=2.0).item() == pytest.approx(
        -(p2 * math.log(p2) + (1 - p2) * math.log(1 - p2)), abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_topk_entropy_matches_reference(dtype):
    x = _logits((5, 7, 500), dtype, neg_inf_frac=0.97, seed=4)  # some rows have < 16 finite logits
    for k, t in ((16, 1.0), (16, 0.6), (3, 1.4)):
        h = topk_entropy(x, k=k, temperature=t)
        assert not torch.isnan(h).any() and (h <= math.log(k) + 1e-5).all()
        torch.testing.assert_close(h.double(), ref_topk_entropy(x, k, t), atol=1e-5, rtol=0)


def test_topk_entropy_k_at_least_vocab_is_full_entropy():
    x = _logits((4, 12), seed=5)
    assert torch.equal(topk_entropy(x, k=12), token_entropy(x))
    assert torch.equal(topk_entropy(x, k=100, temperature=0.9), token_entropy(x, temperature=0.9))


# ----------------------------------------------------------------------------------------------
# select_forking_tokens: local
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ratio", [0.2, 0.3, 0.5, 0.01, 1.0])
def test_selection_matches_brute_force(seed, ratio):
    g = torch.Generator().manual_seed(seed)
    shape = (7, 1 + seed * 13)
    e = torch.rand(shape, generator=g) * 4
    if seed % 2:  # heavy ties, including -0.0 vs +0.0
        e = torch.randint(0, 4, shape, generator=g).float() * 0.5
        e[torch.rand(shape, generator=g) < 0.1] = -0.0
    valid = torch.rand(shape, generator=g) < 0.8
    keys = torch.randperm(e.numel(), generator=g).reshape(shape) if seed % 3 == 0 else None
    mask, thr = select_forking_tokens(e, valid, ratio, order_key=keys)
    want, want_thr = ref_select(e, valid, ratio, keys)
    n_valid = int(valid.sum())
    assert mask.shape == e.shape and mask.dtype == torch.bool
    assert int(mask.sum()) == math.ceil(Decimal(repr(ratio)) * n_valid)
    assert torch.equal(mask.reshape(-1), want)
    assert not (mask & ~valid).any()
    assert thr.dtype == e.dtype and thr.dim() == 0
    assert (math.isnan(want_thr) and torch.isnan(thr)) or thr.item() == want_thr


@pytest.mark.parametrize("ratio, n, kept", [(0.2, 10, 2), (0.3, 10, 3), (0.7, 10, 7), (0.1, 30, 3),
                                            (0.2, 11, 3), (1e-9, 10, 1), (0.999, 1000, 999), (1.0, 5, 5),
                                            (0.07, 100, 7), (0.14, 50, 7)])  # float: 7.000000000000001
def test_exact_count_without_float_rounding(ratio, n, kept):
    mask, _ = select_forking_tokens(torch.rand(n), torch.ones(n, dtype=torch.bool), ratio)
    assert int(mask.sum()) == kept


def test_ties_break_by_lowest_key_and_default_position():
    e = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.5, 2.0])
    valid = torch.ones(6, dtype=torch.bool)
    mask, thr = select_forking_tokens(e, valid, 0.5)  # keep 3 of four 2.0s: lowest positions 1,2,3
    assert mask.tolist() == [False, True, True, True, False, False] and thr.item() == 2.0
    keys = torch.tensor([0, 40, 10, 30, 5, 20])
    mask, _ = select_forking_tokens(e, valid, 0.5, order_key=keys)  # keys 10, 20, 30 win
    assert mask.tolist() == [False, False, True, True, False, True]
    neg = torch.tensor([-1, 7, -(2**62), 2**62, 0, -5])  # signed keys order as signed ints
    mask, _ = select_forking_tokens(e, valid, 0.5, order_key=neg)
    assert mask.tolist() == [False, True, True, False, False, True]
    zeros = torch.tensor([0.0, -0.0, 0.0, -0.0])  # -0.0 == +0.0: a tie, settled by position
    mask, _ = select_forking_tokens(zeros, torch.ones(4, dtype=torch.bool), 0.5)
    assert mask.tolist() == [True, True, False, False]


def test_padding_never_kept_even_with_huge_or_nan_entropy():
    g = torch.Generator().manual_seed(7)
    e = torch.rand(8, 50, generator=g)
    valid = torch.rand(8, 50, generator=g) < 0.5
    e[~valid] = math.inf
    e[~valid & (torch.rand(8, 50, generator=g) < 0.5)] = math.nan
    for ratio in (0.2, 0.9, 1.0):
        mask, thr = select_forking_tokens(e, valid, ratio)
        assert not (mask & ~valid).any()
        assert int(mask.sum()) == math.ceil(Decimal(repr(ratio)) * int(valid.sum()))
        assert math.isfinite(thr.item())


def test_inf_entropies_are_ordinary_values():
    e = torch.tensor([math.inf, 1.0, -math.inf, 3.0])
    mask, thr = select_forking_tokens(e, torch.ones(4, dtype=torch.bool), 0.5)
    assert mask.tolist() == [True, False, False, True] and thr.item() == 3.0


def test_nan_valid_entropy_raises_and_bad_arguments():
    e = torch.tensor([1.0, math.nan, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        select_forking_tokens(e, torch.ones(3, dtype=torch.bool), 0.5)
    ok = torch.ones(3, dtype=torch.bool)
    for bad in (0.0, -0.1, 1.0001, math.nan, True):
        with pytest.raises(ValueError, match="ratio"):
            select_forking_tokens(torch.rand(3), ok, bad)
    with pytest.raises(ValueError):
        select_forking_tokens(torch.rand(3), torch.ones(4, dtype=torch.bool), 0.5)
    with pytest.raises(ValueError):
        select_forking_tokens(torch.rand(3), ok, 0.5, order_key=torch.rand(3))
    with pytest.raises(ValueError, match="duplicate"):
        select_forking_tokens(torch.ones(3), ok, 0.5, order_key=torch.tensor([4, 4, 4]))
    with pytest.raises(ValueError, match="not initialized"):
        select_forking_tokens(torch.rand(3), ok, 0.5, group=object())


def test_nothing_valid_and_ratio_one():
    mask, thr = select_forking_tokens(torch.rand(3, 4), torch.zeros(3, 4, dtype=torch.bool), 0.2)
    assert not mask.any() and torch.isnan(thr)
    e = torch.rand(3, 4)
    valid = torch.rand(3, 4) < 0.7
    valid[0, 0] = True
    mask, thr = select_forking_tokens(e, valid, 1.0)
    assert torch.equal(mask, valid) and thr.item() == e[valid].min().item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_selection_other_dtypes(dtype):
    g = torch.Generator().manual_seed(8)
    e = (torch.rand(2000, generator=g, dtype=torch.float64) * 3).to(dtype)
    valid = torch.rand(2000, generator=g) < 0.9
    mask, thr = select_forking_tokens(e, valid, 0.2)
    want, want_thr = ref_select(e, valid, 0.2)
    assert torch.equal(mask, want) and thr.dtype == dtype and thr.item() == want_thr


def test_large_population_above_quantile_limit():
    """2^24 + 1000 float32 tokens: torch.quantile refuses them; selection stays exact and fast."""
    n = (1 << 24) + 1000
    g = torch.Generator().manual_seed(9)
    e = torch.rand(n, generator=g)
    e[:5000] = 0.75  # a block of ties near the cut
    valid = torch.ones(n, dtype=torch.bool)
    valid[::97] = False
    with pytest.raises(RuntimeError):
        torch.quantile(e, 0.8)
    start = time.perf_counter()
    mask, thr = select_forking_tokens(e, valid, 0.2)
    elapsed = time.perf_counter() - start
    n_valid = int(valid.sum())
    n_keep = math.ceil(n_valid / 5)
    assert int(mask.sum()) == n_keep and not (mask & ~valid).any()
    vals = e[valid]
    assert thr.item() == torch.kthvalue(vals, n_valid - n_keep + 1).values.item()
    assert int((vals > thr).sum()) < n_keep and (e[mask] >= thr).all()
    tied_kept = torch.nonzero(mask & (e == thr)).squeeze(1)
    tied_dropped = torch.nonzero(valid & ~mask & (e == thr)).squeeze(1)
    if tied_dropped.numel():  # among ties, lower positions win
        assert tied_kept.max() < tied_dropped.min()
    assert elapsed < 10, f"selection took {elapsed:.1f} s"


def test_masked_stats():
    e = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 5.0]])
    valid = torch.tensor([[True, True, True], [True, False, True]])
    kept = torch.tensor([[False, False, True], [True, True, True]])  # (1, 1) is padding: ignored
    s = masked_stats(e, valid, kept, threshold=torch.tensor(3.0))
    assert s == {"threshold": 3.0, "kept_fraction": 3 / 5, "kept_entropy_mean": 4.0,
                 "valid_entropy_mean": 3.0, "kept_tokens": 3.0, "valid_tokens": 5.0}
    empty = masked_stats(e, torch.zeros_like(valid), kept)
    assert math.isnan(empty["threshold"]) and math.isnan(empty["kept_fraction"])
    assert empty["valid_tokens"] == 0.0


# ----------------------------------------------------------------------------------------------
# TRL's quantile mask
# ----------------------------------------------------------------------------------------------


def test_agrees_with_trl_quantile_mask_modulo_rounding():
    """Tie-free: TRL keeps floor(rho*N + 1 - rho) (linear-interpolated quantile, >=), we keep
    ceil(rho*N); both are the top entropies, so TRL's set is contained in ours. They differ by one
    exactly when 0 < frac(rho*N) < rho; when frac(rho*N) == rho the quantile lands on a sample and
    TRL's count depends on floating-point rounding of (N-1)*q."""
    from fractions import Fraction

    from trl.trainer.grpo_trainer import GRPOTrainer

    acc = SimpleNamespace(pad_across_processes=lambda t, dim=0, pad_index=0: t, gather=lambda t: t)
    fake_trainer = SimpleNamespace(accelerator=acc)
    g = torch.Generator().manual_seed(11)
    differ = 0
    for rho in (0.2, 0.3, 0.5, 0.8):
        for n in range(1, 80):
            e = (torch.randperm(n, generator=g).float() + 1) / n  # distinct values
            e = torch.cat([e, torch.zeros(3)]).reshape(1, -1)  # padding at the end
            valid = torch.zeros_like(e, dtype=torch.bool)
            valid[0, :n] = True
            ours, _ = select_forking_tokens(e, valid, rho)
            trl = GRPOTrainer.get_high_entropy_mask(fake_trainer, e, valid.long(), 1 - rho)
            assert not (trl & ~ours).any()
            assert int(ours.sum()) == math.ceil(Fraction(str(rho)) * n)
            frac = (Fraction(str(rho)) * n) % 1
            if frac != Fraction(str(rho)):
                assert int(trl.sum()) == math.floor(Fraction(str(rho)) * n + 1 - Fraction(str(rho)))
                differ += int(0 < frac < Fraction(str(rho)))
            else:
                assert int(ours.sum()) - int(trl.sum()) in (0, 1)
    assert differ > 0  # the rounding rules really differ somewhere in this sweep
