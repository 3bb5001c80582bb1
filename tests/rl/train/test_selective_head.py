"""The selective head's in-place weight gradient (`grad_into_param`): same gradients as autograd's
own accumulation, no separate (vocab, hidden) tensor held through the backbone's backward, and
refused wherever something else watches the gradient arrive."""

from __future__ import annotations

import pytest
import torch

from rl.train.selective_head import grad_into_param_ok, selected_logps


class TiedLM(torch.nn.Module):
    """Embedding -> one tanh layer -> head tied to the embedding (SmolLM2 and Qwen3 tie theirs)."""

    def __init__(self, vocab=97, hidden=16, tied=True, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(vocab, hidden, dtype=dtype)
        self.layer = torch.nn.Linear(hidden, hidden, dtype=dtype)
        self.head = torch.nn.Linear(hidden, vocab, bias=False, dtype=dtype)
        if tied:
            self.head.weight = self.embed.weight

    def loss(self, ids, rows, targets, coef, grad_into_param):
        hidden = torch.tanh(self.layer(self.embed(ids)))[rows]
        logps = selected_logps(self.head, hidden, targets, 0.7, chunk_rows=3, grad_into_param=grad_into_param)
        return (logps * coef).sum()


def micro_batches(seed=1, n=3):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ids = torch.randint(0, 97, (5, 6), generator=g)
        rows = torch.randint(0, 2, (5, 6), generator=g).bool()
        k = int(rows.sum())
        yield ids, rows, torch.randint(0, 97, (k,), generator=g), torch.randn(k, dtype=torch.float64, generator=g)


@pytest.mark.parametrize("tied", [True, False])
def test_in_place_head_gradient_equals_autograds_over_accumulated_micro_batches(tied):
    """Three micro-batches accumulate into .grad (the first starts from None) exactly as autograd does."""
    grads = {}
    for in_place in (False, True):
        model = TiedLM(tied=tied)
        for ids, rows, targets, coef in micro_batches():
            model.loss(ids, rows, targets, coef, in_place).backward()
        grads[in_place] = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert grads[True].keys() == grads[False].keys()
    for name, want in grads[False].items():
        assert torch.allclose(grads[True][name], want, rtol=1e-12, atol=1e-13), name


def test_in_place_head_gradient_keeps_no_vocab_sized_tensor_for_the_rest_of_the_backward():
    """With a tied head, autograd holds the head's (V, H) gradient until the embedding's arrives, at the
    very end of the backward; in place, nothing of that size is handed to autograd at all."""
    model = TiedLM(vocab=4000, hidden=8, dtype=torch.float32)
    ids, rows, targets, coef = next(micro_batches())  # ids and targets < 97 <= 4000
    sizes = {}
    for in_place in (False, True):
        for p in model.parameters():  # .grad exists, as from the second micro-batch on
            p.grad = torch.zeros_like(p)
        hidden = torch.tanh(model.layer(model.embed(ids)))[rows]
        logps = selected_logps(model.head, hidden, targets, 1.0, chunk_rows=4, grad_into_param=in_place)
        node = logps.grad_fn
        captured = []
        handle = node.register_hook(lambda grad_inputs, grad_outputs: captured.append(grad_inputs))
        (logps * coef.float()).sum().backward()
        handle.remove()
        sizes[in_place] = [g.numel() for g in captured[0] if g is not None]
    assert 4000 * 8 in sizes[False]
    assert max(sizes[True]) < 4000 * 8  # only the hidden rows' gradient goes back through autograd


def test_grad_into_param_ok_refuses_watched_or_mismatched_gradients():
    w = torch.nn.Parameter(torch.randn(7, 3))
    assert grad_into_param_ok(w, torch.float32)
    assert not grad_into_param_ok(w, torch.float64)  # accumulation dtype differs (a bf16 weight, say)
    assert not grad_into_param_ok(torch.randn(7, 3), torch.float32)  # no gradient wanted
    assert not grad_into_param_ok(w * 2, torch.float32)  # not a leaf
    hooked = torch.nn.Parameter(torch.randn(7, 3))
    hooked.register_hook(lambda g: g)
    assert not grad_into_param_ok(hooked, torch.float32)
    post = torch.nn.Parameter(torch.randn(7, 3))
    post.register_post_accumulate_grad_hook(lambda p: None)  # what DDP/FSDP-style reducers use
    assert not grad_into_param_ok(post, torch.float32)
    odd = torch.nn.Parameter(torch.randn(7, 3))
    odd.grad_dtype = None  # any gradient dtype allowed: a float64 gradient on a float32 weight
    odd.grad = torch.zeros(7, 3, dtype=torch.float64)
    assert not grad_into_param_ok(odd, torch.float32)


def test_a_hook_added_after_the_forward_sends_the_gradient_through_autograd():
    """The check is repeated in the backward: a hook registered between forward and backward still sees
    the head's gradient arrive (through autograd, not written behind its back)."""
    head = torch.nn.Linear(8, 50, bias=False, dtype=torch.float64)
    hidden = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (6,))
    out = selected_logps(head, hidden, targets, grad_into_param=True)
    seen = []
    head.weight.register_hook(lambda g: seen.append(g.clone()))
    out.sum().backward()
    assert len(seen) == 1 and torch.equal(seen[0], head.weight.grad)


def test_autograd_grad_and_backward_inputs_get_the_gradient_returned_not_written_into_grad():
    """Only a plain `.backward()` accumulates into `.grad`; `torch.autograd.grad` and `backward(inputs=...)`
    must get the head's weight gradient as their result and leave `.grad` alone."""
    head = torch.nn.Linear(8, 50, bias=False, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(6, 8, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (6,), generator=g)
    (want,) = torch.autograd.grad(selected_logps(head, hidden, targets).sum(), [head.weight])

    (got,) = torch.autograd.grad(selected_logps(head, hidden, targets, grad_into_param=True).sum(), [head.weight])
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-13) and head.weight.grad is None
    selected_logps(head, hidden, targets, grad_into_param=True).sum().backward(inputs=[hidden])
    assert head.weight.grad is None and hidden.grad is not None
    selected_logps(head, hidden, targets, grad_into_param=True).sum().backward()
    assert torch.allclose(head.weight.grad, want, rtol=1e-12, atol=1e-13)
