"""rl/train/forking.py: loss weights per TRL loss type, token keys, the selective LM head (pure tensors)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from rl.signal.entropy import token_entropy
from rl.train.losses import LOSS_VARIANTS
from rl.train.forking import (
    ForkingRequest,
    install_forking_forward,
    loss_weights,
    token_order_key,
    top_forking_tokens,
)
from rl.train.selective_head import has_plain_logits, head_chunk_rows, head_logps_and_entropy, selected_logps

# ----------------------------------------------------------------------------------------------
# loss_weights: plugged into TRL 1.16's aggregation formulas (copied from GRPOTrainer._compute_loss)


def trl_aggregate(loss_type, per_token_loss, mask, num_items, max_completion_length):
    if loss_type in ("grpo", "sapo"):
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    if loss_type in ("cispo", "dapo", "vespo"):
        return (per_token_loss * mask).sum() / num_items
    if loss_type == "luspo":
        return (per_token_loss * mask).sum(-1).mean()
    raise AssertionError(loss_type)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    B, T = 6, 9
    lengths = torch.tensor([9, 7, 1, 0, 5, 9])  # a one-token row and a fully padded row
    valid = (torch.arange(T) < lengths[:, None]).long()
    kept = (torch.rand(B, T, generator=g) < 0.3) & valid.bool()
    kept[1] = False  # a row with tokens but none kept
    kept[0, 0] = True
    kept[3, 0] = True  # outside valid: must be ignored
    loss = torch.randn(B, T, generator=g, dtype=torch.float64)
    return loss, valid, kept


def kept_mean_reference(loss_type, loss, valid, kept, max_len):
    """What "average over the kept tokens" means for each loss type, written out directly."""
    kept = kept & valid.bool()
    n, k = valid.sum().item(), kept.sum().item()
    if loss_type in ("dapo", "cispo", "vespo", "bnpo"):
        return loss[kept].sum() / k
    if loss_type in ("grpo", "sapo"):
        per_row = [loss[i][kept[i]].mean() if kept[i].any() else torch.tensor(0.0, dtype=loss.dtype)
                   for i in range(loss.shape[0])]
        return torch.stack(per_row).mean()
    if loss_type == "luspo":
        per_row = [loss[i][kept[i]].sum() * valid[i].sum() / kept[i].sum() if kept[i].any()
                   else torch.tensor(0.0, dtype=loss.dtype) for i in range(loss.shape[0])]
        return torch.stack(per_row).mean()
    if loss_type == "dr_grpo":
        return loss[kept].sum() * (n / k) / (loss.shape[0] * max_len)
    raise AssertionError(loss_type)


@pytest.mark.parametrize("loss_type", sorted(LOSS_VARIANTS))  # every registered loss variant
def test_kept_weights_turn_each_trl_loss_into_a_kept_token_average(batch, loss_type):
    loss, valid, kept = batch
    n, k = valid.sum().item(), (kept & valid.bool()).sum().item()
    w = loss_weights(kept, valid, loss_type, "kept", population_valid=n, population_kept=k, dtype=torch.float64)
    got = trl_aggregate(loss_type, loss * w, valid, n, 9)
    want = kept_mean_reference(loss_type, loss, valid, kept, 9)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-14), (got, want)
    assert torch.isfinite(w).all() and (w[~(kept & valid.bool())] == 0).all()


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo"])
def test_all_weights_are_trl_boolean_mask(batch, loss_type):
    loss, valid, kept = batch
    w = loss_weights(kept, valid, loss_type, "all")
    assert w.dtype == torch.float32
    assert torch.equal(w, (kept & valid.bool()).float())


def test_step_population_weights_do_not_depend_on_micro_batch_split(batch):
    """dapo: the step's loss summed over micro-batches is the kept mean however the rows are split."""
    loss, valid, kept = batch
    n, k = valid.sum().item(), (kept & valid.bool()).sum().item()
    want = kept_mean_reference("dapo", loss, valid, kept, 9)
    for splits in ([6], [3, 3], [1, 2, 3], [1] * 6):
        total, start = torch.zeros((), dtype=torch.float64), 0
        for size in splits:
            sl = slice(start, start + size)
            w = loss_weights(kept[sl], valid[sl], "dapo", "kept", population_valid=n, population_kept=k,
                             dtype=torch.float64)
            total = total + trl_aggregate("dapo", loss[sl] * w, valid[sl], n, 9)
            start += size
        assert torch.allclose(total, want, rtol=1e-12), splits


def test_loss_weights_errors_and_empty():
    kept = torch.zeros(2, 3, dtype=torch.bool)
    valid = torch.ones(2, 3)
    with pytest.raises(ValueError, match="normalize"):
        loss_weights(kept, valid, "dapo", "some")
    with pytest.raises(ValueError, match="unknown loss_type"):
        loss_weights(kept, valid, "ppo", "kept")
    with pytest.raises(ValueError, match="population"):
        loss_weights(kept, valid, "dapo", "kept")
    with pytest.raises(ValueError, match="shape"):
        loss_weights(kept[:1], valid, "dapo", "kept", population_valid=6, population_kept=0)
    for lt in ("dapo", "bnpo", "grpo", "dr_grpo"):
        w = loss_weights(kept, valid, lt, "kept", population_valid=6, population_kept=0)
        assert torch.equal(w, torch.zeros(2, 3))


# ----------------------------------------------------------------------------------------------
# token_order_key


def test_token_order_key_identifies_sample_and_position_in_any_layout():
    whole = token_order_key(8, 5, 0)
    rank0, rank1 = token_order_key(4, 5, 0), token_order_key(4, 3, 4)  # rank 1 padded shorter
    assert torch.equal(torch.cat([rank0, whole[4:, :5]]), whole)
    assert torch.equal(rank1, whole[4:, :3])
    assert whole.dtype == torch.int64 and whole.unique().numel() == whole.numel()
    assert int(whole[3, 2]) == (3 << 20) + 2
    with pytest.raises(ValueError):
        token_order_key(1, 1 << 20, 0)


# ----------------------------------------------------------------------------------------------
# Selective head


def make_head(h=16, v=97, bias=True, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(h, v, bias=bias, dtype=dtype)
    with torch.no_grad():
        head.weight.mul_(8.0)  # peaked distributions, varied entropies
    return head


def reference_logps(head, hidden, targets, temperature):
    logits = head(hidden) / temperature
    return logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


@pytest.mark.parametrize("chunk_rows", [None, 1, 3])
@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_selected_logps_values_and_gradients_match_full_logits(chunk_rows, recompute, temperature):
    head = make_head()
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(11, 16, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, 97, (11,), generator=g)
    coef = torch.randn(11, dtype=torch.float64, generator=g)

    got = selected_logps(head, hidden, targets, temperature, chunk_rows, recompute=recompute)
    (got * coef).sum().backward()
    got_grads = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
    hidden.grad = None
    head.zero_grad()
    want = reference_logps(head, hidden, targets, temperature)
    (want * coef).sum().backward()
    want_grads = [hidden.grad, head.weight.grad, head.bias.grad]
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(got_grads, want_grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_selected_logps_recompute_does_not_keep_logits_for_backward():
    """With recompute, what autograd saves is O(rows x hidden), not O(rows x vocab)."""
    head = make_head(h=8, v=5000, dtype=torch.float32)
    hidden = torch.randn(64, 8, requires_grad=True)
    targets = torch.randint(0, 5000, (64,))

    def saved_bytes(recompute):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            selected_logps(head, hidden, targets, 1.0, chunk_rows=16, recompute=recompute)
        return total[0]

    logits_bytes = 64 * 5000 * 4
    assert saved_bytes(False) >= logits_bytes  # sanity: without recompute the logits are kept
    assert saved_bytes(True) < logits_bytes / 10


def test_selected_logps_with_no_rows_stays_connected():
    head = make_head(dtype=torch.float32)
    full = torch.randn(3, 4, 16, requires_grad=True)
    none = torch.zeros(3, 4, dtype=torch.bool)
    rows, cols = none.nonzero(as_tuple=True)
    out = selected_logps(head, full[rows, cols], torch.zeros(0, dtype=torch.long))
    assert out.shape == (0,) and out.requires_grad
    per_token = torch.zeros(3, 4).index_put((rows, cols), out)
    (per_token * 0.0).sum().backward()
    assert torch.equal(full.grad, torch.zeros_like(full))


@pytest.mark.parametrize("n_rows", [0, 3, 11])
def test_num_chunks_fixes_the_number_of_head_calls(n_rows):
    """ZeRO-3 needs the same number of head-module calls on every rank, whatever its row count."""
    head = make_head()
    calls = []
    head.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(n_rows, 16, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, 97, (n_rows,), generator=g)
    want = reference_logps(head, hidden, targets, 1.0).detach()
    calls.clear()
    got = selected_logps(head, hidden, targets, num_chunks=5)
    assert len(calls) == 5 and sum(calls) == n_rows
    got.sum().backward()  # recomputation: the same count again
    assert len(calls) == 10
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    calls.clear()
    logps, _ = head_logps_and_entropy(head, hidden.detach(), targets, num_chunks=4)
    assert len(calls) == 4 and torch.allclose(logps, want, rtol=1e-12, atol=1e-12)


def test_head_chunk_rows_defaults():
    assert head_chunk_rows(151_936) == 32  # at least 32 rows on CPU
    assert head_chunk_rows(50_257) == (1 << 21) // 50_257
    assert head_chunk_rows(1000, budget=10) == 1
    assert head_chunk_rows(151_936, "cuda") == (1 << 25) // 151_936


def test_head_logps_and_entropy_match_full_computation():
    head = make_head()
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(13, 16, dtype=torch.float64, generator=g)
    targets = torch.randint(0, 97, (13,), generator=g)
    logps, ents = head_logps_and_entropy(head, hidden, targets, 0.7, chunk_rows=4)
    logits = head(hidden).detach()
    assert torch.allclose(logps, reference_logps(head, hidden, targets, 0.7).detach(), rtol=1e-12, atol=1e-12)
    assert torch.allclose(ents, token_entropy(logits, temperature=0.7), rtol=1e-12, atol=1e-12)
    assert ents.std() > 0.3  # a meaningful spread, not all log V
    e, _ = head_logps_and_entropy(head.float(), hidden[:0].float(), targets[:0])
    assert e.shape == (0,)


def test_has_plain_logits():
    from transformers import Qwen2Config

    assert has_plain_logits(Qwen2Config())
    cfg = Qwen2Config()
    cfg.final_logit_softcapping = 30.0
    assert not has_plain_logits(cfg)
    cfg = Qwen2Config()
    cfg.logit_scale = 0.5
    assert not has_plain_logits(cfg)


# ----------------------------------------------------------------------------------------------
# The model-forward wrapper on a real (tiny) transformers model, after TRL's fused head


@pytest.fixture(scope="module")
def small_lm():
    from transformers import AutoModelForCausalLM, Qwen2Config
    from trl.trainer.utils import add_fused_lm_head

    cfg = Qwen2Config(vocab_size=211, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).double()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(8.0)
    model.eval()
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    sig = inspect.signature(model.forward)
    install_forking_forward(model)
    install_forking_forward(model)  # idempotent
    assert inspect.signature(model.forward) == sig
    return model


def test_forking_forward_select_and_scan_match_full_logits(small_lm):
    g = torch.Generator().manual_seed(3)
    B, P, T = 3, 5, 6
    ids = torch.randint(0, 211, (B, P + T), generator=g)
    am = torch.ones(B, P + T, dtype=torch.long)
    am[0, :2] = 0  # left-padded prompt
    am[2, P + 4:] = 0  # right-padded completion
    logits = small_lm(input_ids=ids, attention_mask=am).logits  # plain forward still works
    full_logps = (logits[:, P - 1:-1] / 0.7).log_softmax(-1).gather(-1, ids[:, P:, None]).squeeze(-1)
    full_ent = token_entropy(logits[:, P - 1:-1], temperature=0.7)
    pick = torch.tensor([[1, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 1], [1, 1, 0, 0, 1, 0]], dtype=torch.bool)
    rows, cols = pick.nonzero(as_tuple=True)

    sel = small_lm(input_ids=ids, attention_mask=am, forking=ForkingRequest("select", rows, cols, T, 0.7))
    assert torch.allclose(sel.log_probs, full_logps[rows, cols], rtol=1e-10, atol=1e-10)
    scan = small_lm(input_ids=ids, attention_mask=am, forking=ForkingRequest("scan", rows, cols, T, 0.7))
    assert torch.allclose(scan.log_probs, full_logps[rows, cols], rtol=1e-10, atol=1e-10)
    assert torch.allclose(scan.entropy, full_ent[rows, cols], rtol=1e-10, atol=1e-10)
    # TRL's fused path is untouched
    labels = ids.masked_fill(am == 0, -100)
    labels[:, :P] = -100
    fused = small_lm(input_ids=ids, attention_mask=am, labels=labels, fused_lm_head=True)
    valid = am[:, P:].bool()
    assert torch.allclose(fused.log_probs[:, -T:][valid].double(), full_logps[valid], rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError):
        small_lm(ids, forking=ForkingRequest("select", rows, cols, T))
    with pytest.raises(ValueError):
        small_lm(input_ids=ids, attention_mask=am, forking=ForkingRequest("nope", rows, cols, T))


def test_top_forking_tokens_table_rows():
    rows = top_forking_tokens({5: 3, 9: 3, 2: 1}, {5: 6, 9: 3, 2: 10, 7: 4}, {5: 6.0, 9: 3.0, 2: 0.5},
                              decode=lambda i: f"<{i}>", top=2)
    assert rows == [["<5>", 5, 3, 6, 0.5, 2.0], ["<9>", 9, 3, 3, 1.0, 1.0]]
    assert top_forking_tokens({}, {}, {}, str) == []
    assert math.isnan(top_forking_tokens({4: 1}, {}, {4: 1.0}, str)[0][4])
