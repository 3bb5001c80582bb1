"""The LM head on chosen rows only: log-probs (and entropies) of selected completion tokens.

The head MODULE is called on the hidden states of the kept positions, in row chunks (so DeepSpeed
ZeRO-3 gathers its parameters, a LoRA adapter on the head is applied, TRL's fp32-head cast is
honoured). The differentiable version recomputes each chunk's logits in the backward pass, so
memory is one chunk of logits, not kept_tokens x vocab; a plain, hook-free `nn.Linear` head
accumulates its weight gradient in one in-place buffer (`_LinearHeadLogps`) instead of one full
(vocab x hidden) gradient per chunk (the peak-memory regression at vocab 151,936,
bench/forking_head_memory.py).
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint

from rl.signal.entropy import token_entropy

__all__ = ["head_chunk_rows", "head_logps_and_entropy", "selected_logps", "has_plain_logits"]

# Logits per head chunk. CPU: about 2M (8 MiB float32) but at least 32 rows: small enough to stay
# in cache across the few elementwise passes, tall enough for an efficient GEMM (bench/forking_mask.py,
# hidden 64: 50k vocab ~1.3x faster than 4M-element and ~2x faster than 8M-element chunks; at
# 151,936, 13-row chunks were ~1.3x slower than 32-row ones). Accelerators: 32M (128 MiB), big
# GEMMs and negligible launch overhead.
_HEAD_CHUNK_ELEMENTS = {"cpu": 1 << 21}
_HEAD_CHUNK_ELEMENTS_DEFAULT = 1 << 25
_HEAD_CHUNK_MIN_ROWS = 32


def head_chunk_rows(vocab: int, device: torch.device | str = "cpu", budget: int | None = None) -> int:
    """Rows per head chunk: about `budget` logits per chunk (default: per device type, >= 32 rows)."""
    if budget is None:
        budget = _HEAD_CHUNK_ELEMENTS.get(torch.device(device).type, _HEAD_CHUNK_ELEMENTS_DEFAULT)
        return max(_HEAD_CHUNK_MIN_ROWS, budget // max(1, vocab))
    return max(1, budget // max(1, vocab))


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()  # bf16/fp16/fp32 -> fp32; fp64 stays


def _call_head(head: torch.nn.Module, hidden: torch.Tensor, fp32_head: bool) -> torch.Tensor:
    """head(hidden) as float32 (float64 for a float64 model) logits. fp32_head: project in float32
    outside autocast (TRL's `cast_lm_head_to_fp32`), otherwise in the active autocast/dtype."""
    if fp32_head:
        with torch.autocast(hidden.device.type, enabled=False):
            return _upcast(head(_upcast(hidden)))
    return _upcast(head(hidden))


def _chunk_logps(head, hidden, targets, inv_temperature: float, fp32_head: bool) -> torch.Tensor:
    z = _call_head(head, hidden, fp32_head)
    if inv_temperature != 1.0:
        z = z * inv_temperature
    return z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)


@torch.no_grad()
def head_logps_and_entropy(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
    fp32_head: bool = False,
    num_chunks: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and entropy (nats) of softmax(head(hidden) / temperature), no gradient.

    hidden: (N, H), targets: (N,). Returns two (N,) tensors, float32 (float64 for a float64 head).
    Logits are built `chunk_rows` rows at a time (default: see `head_chunk_rows`), so memory is O(chunk x vocab).
    `num_chunks` instead calls the head exactly that many times (some chunks may be empty): under
    DeepSpeed ZeRO-3 every head call is a collective, so all ranks must make the same number.
    """
    n = hidden.shape[0]
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    logps = torch.empty(n, dtype=dtype, device=hidden.device)
    ents = torch.empty(n, dtype=dtype, device=hidden.device)
    inv_t = 1.0 / float(temperature)
    for sl in _chunk_slices(n, chunk_rows, num_chunks, head, hidden, fp32_head):
        z = _call_head(head, hidden[sl], fp32_head)
        # Few passes over the chunk: shift by the row max in place, exp once; then
        # log Z = log sum e and H = log Z - sum(p * z) = log Z - (e . z) / sum e (as in rl.signal.entropy).
        z.sub_(z.amax(dim=-1, keepdim=True))
        if inv_t != 1.0:
            z.mul_(inv_t)
        e = torch.exp(z)
        s = e.sum(-1)
        log_z = torch.log(s)
        ez = torch.bmm(e.unsqueeze(1), z.unsqueeze(2)).reshape(-1)
        del e
        logps[sl] = z.gather(-1, targets[sl, None]).squeeze(-1) - log_z
        ents[sl] = (log_z - ez / s).clamp_min(0.0)
        if not torch.isfinite(ents[sl]).all():  # -inf logits (masked vocabulary): 0 * -inf above
            z = _call_head(head, hidden[sl], fp32_head) * inv_t
            logps[sl] = z.gather(-1, targets[sl, None]).squeeze(-1) - z.logsumexp(-1)
            ents[sl] = token_entropy(z)
        del z
    return logps, ents


def selected_logps(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
    fp32_head: bool = False,
    recompute: bool = True,
    num_chunks: int | None = None,
    grad_into_param: bool = False,
) -> torch.Tensor:
    """Differentiable log p(target) under softmax(head(hidden) / temperature), for (N, H) rows.

    Gradients reach `hidden` (hence the backbone) and the head's parameters exactly as through
    full logits followed by log_softmax and gather. With `recompute` (default) each chunk runs
    under non-reentrant activation checkpointing: the forward keeps only the chunk's hidden rows
    and the backward recomputes its logits (one extra head forward on the selected rows), so the
    extra memory is a few chunks of logits instead of N x vocab. N == 0 returns an empty tensor
    that is still connected to `hidden` (a micro-batch may hold no kept token). `num_chunks`: as
    in `head_logps_and_entropy` (the same count again in the backward recomputation).

    `grad_into_param`: the caller runs in ONE process with no gradient hooks of its own (no DDP,
    DeepSpeed or FSDP): a plain Linear head may then add its weight gradient straight into
    `weight.grad` (see `grad_into_param_ok`) instead of handing autograd a separate (V, H) tensor.
    """
    inv_t = 1.0 / float(temperature)
    n = hidden.shape[0]
    if recompute and num_chunks is None and torch.is_grad_enabled() and _plain_linear(head):
        slices = _chunk_slices(n, chunk_rows, None, head, hidden, fp32_head) or [slice(0, 0)]
        in_place = grad_into_param and grad_into_param_ok(head.weight, _acc_dtype(head.weight, fp32_head))
        return _LinearHeadLogps.apply(hidden, head.weight, head.bias, targets, inv_t, fp32_head, slices, in_place)
    parts = []
    for sl in _chunk_slices(n, chunk_rows, num_chunks, head, hidden, fp32_head) or [slice(0, 0)]:
        h, t = hidden[sl], targets[sl]
        if recompute and torch.is_grad_enabled():
            parts.append(torch.utils.checkpoint.checkpoint(
                _chunk_logps, head, h, t, inv_t, fp32_head, use_reentrant=False))
        else:
            parts.append(_chunk_logps(head, h, t, inv_t, fp32_head))
    return torch.cat(parts)


def _plain_linear(head: torch.nn.Module) -> bool:
    """A bare nn.Linear with a materialised weight and no hooks: the fused backward may read its weight
    directly (anything else, e.g. a LoRA-wrapped head or a ZeRO-3 partitioned weight, is called as a module)."""
    weight = getattr(head, "weight", None)
    return (type(head) is torch.nn.Linear and isinstance(weight, torch.Tensor) and weight.dim() == 2
            and weight.numel() > 0 and not hasattr(weight, "ds_id")
            and not (head._forward_hooks or head._forward_pre_hooks or head._backward_hooks))


def grad_into_param_ok(weight: torch.Tensor, acc_dtype: torch.dtype) -> bool:
    """Whether the head's weight gradient may be added straight into `weight.grad`.

    Autograd would otherwise receive it as a new (V, H) tensor and keep it until the weight's
    gradient is accumulated: for a head tied to the input embeddings that is the END of the
    backward pass (the embedding's gradient arrives last), so the tensor lives through the whole
    backbone backward, at the step's memory peak (+350 MB at vocab 151,936 x hidden 576,
    bench/forking_mask.py). Adding in place is what autograd's accumulation does anyway, in the
    same float32 arithmetic, but only when nothing else watches this gradient arrive: the weight is
    a leaf with no tensor or post-accumulate hooks, its existing `.grad` (if any) is a plain tensor
    of its own dtype, and that dtype is the one the head accumulates in (a bfloat16 weight keeps
    the float32 buffer: rounding each chunk into bf16 would lose precision).
    """
    if not (weight.is_leaf and weight.requires_grad and weight.dtype == acc_dtype):
        return False
    if weight._backward_hooks or getattr(weight, "_post_accumulate_grad_hooks", None):
        return False
    if getattr(weight, "grad_dtype", weight.dtype) not in (None, weight.dtype):  # torch >= 2.9 per-tensor grad dtype
        return False
    grad = weight.grad
    return grad is None or (type(grad) is torch.Tensor and grad.dtype == weight.dtype and grad.shape == weight.shape
                            and not grad.requires_grad)


def _engine_will_accumulate(weight: torch.Tensor) -> bool:
    """Inside a backward pass: whether the engine will run this leaf's gradient accumulation (True in a
    plain `.backward()`; False for `torch.autograd.grad` and for `backward(inputs=...)` without it).
    Private torch API: anything unexpected answers False, i.e. the ordinary autograd path."""
    try:
        node = torch.autograd.graph.get_gradient_edge(weight).node
        return bool(torch._C._will_engine_execute_node(node))
    except (RuntimeError, AttributeError):  # autograd.grad over this leaf raises; older/newer torch may lack it
        return False


def _acc_dtype(weight: torch.Tensor, fp32_head: bool) -> torch.dtype:
    """The dtype of the head's log-probs (and so of its gradient accumulation): float64 or float32."""
    return torch.float64 if _head_dtype(weight, fp32_head) == torch.float64 else torch.float32


def _head_dtype(weight: torch.Tensor, fp32_head: bool) -> torch.dtype:
    """The dtype `head(hidden)` computes in: float32 for TRL's fp32 head, else autocast's or the weight's."""
    if fp32_head:
        return torch.float64 if weight.dtype == torch.float64 else torch.float32
    device = weight.device.type
    if torch.is_autocast_enabled(device) and weight.dtype in (torch.float32, torch.bfloat16, torch.float16):
        return torch.get_autocast_dtype(device)
    return weight.dtype


class _LinearHeadLogps(torch.autograd.Function):
    """log p(target) under softmax((hidden @ W^T + b) / T), chunk by chunk, for a plain Linear head.

    Same values and gradients as `_chunk_logps` per chunk under activation checkpointing, but the
    backward accumulates the weight gradient of every chunk into ONE (V, H) float32 buffer in place.
    Through autograd, each chunk's weight gradient is a separate (V, H) tensor summed into the
    engine's buffer: two full-size weight gradients live at once, while the whole backbone's
    activations are still held (the head's backward runs first). At vocab 151,936 x hidden 576 that
    is +350 MB of peak memory, the regression bench/forking_mask.py showed against TRL's fused
    kernel (which accumulates in place, as here). Nothing of size V is saved for the backward.
    With `grad_into_param` (checked by `grad_into_param_ok`) that buffer is `weight.grad` itself and
    the weight's gradient is returned as None: no (V, H) tensor is held until the embedding's
    gradient arrives.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, inv_t, fp32_head, slices, grad_into_param=False):
        dtype = _head_dtype(weight, fp32_head)
        out = torch.empty(hidden.shape[0], dtype=torch.float64 if dtype == torch.float64 else torch.float32,
                          device=hidden.device)
        with torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
            for sl in slices:
                z = _LinearHeadLogps._logits(hidden[sl], weight, bias, dtype, inv_t, out.dtype)
                out[sl] = z.gather(-1, targets[sl, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)
        ctx.save_for_backward(hidden, targets)
        ctx.weight, ctx.bias = weight, bias  # parameters: held by reference, not as saved activations
        ctx.inv_t, ctx.dtype, ctx.slices, ctx.grad_into_param = inv_t, dtype, slices, grad_into_param
        return out

    @staticmethod
    def _logits(h, weight, bias, dtype, inv_t, acc):
        z = h.to(dtype) @ weight.to(dtype).t()
        if bias is not None:
            z = z + bias.to(dtype)
        z = z.to(acc)
        return z * inv_t if inv_t != 1.0 else z

    @staticmethod
    def backward(ctx, grad_out):
        hidden, targets = ctx.saved_tensors
        weight, bias, inv_t, dtype = ctx.weight, ctx.bias, ctx.inv_t, ctx.dtype
        acc = grad_out.dtype
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros(hidden.shape, dtype=acc, device=hidden.device) if need_h else None
        # Re-checked here: a hook may have come after the forward, and only a `.backward()` that will
        # accumulate into this weight may be short-cut (`autograd.grad` or `backward(inputs=...)` must
        # get the gradient returned, and .grad left alone).
        in_place = (need_w and ctx.grad_into_param and grad_into_param_ok(weight, acc)
                    and _engine_will_accumulate(weight))
        if in_place:
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight, memory_format=torch.contiguous_format)
            grad_w = weight.grad
        else:
            grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b and bias is not None else None
        with torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
            for sl in ctx.slices:
                if sl.stop <= sl.start:
                    continue
                h = hidden[sl]
                z = _LinearHeadLogps._logits(h, weight, bias, dtype, inv_t, acc)
                # d logp(t) / d logits = inv_t * (onehot(t) - softmax(z)), times the incoming gradient
                g = grad_out[sl].unsqueeze(-1) * inv_t
                dz = torch.softmax(z, dim=-1).mul_(-g)
                del z
                dz.scatter_add_(-1, targets[sl, None], g)
                if grad_h is not None:
                    grad_h[sl] = dz @ weight.to(acc)
                if grad_w is not None:
                    grad_w.addmm_(dz.t(), h.to(acc))
                if grad_b is not None:
                    grad_b += dz.sum(0)
        grad_h = grad_h.to(hidden.dtype) if grad_h is not None else None
        grad_w = None if in_place or grad_w is None else grad_w.to(weight.dtype)
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_h, grad_w, grad_b, None, None, None, None, None


def _chunk_slices(n: int, chunk_rows, num_chunks, head, hidden, fp32_head) -> list[slice]:
    """Row ranges of the head calls: exactly `num_chunks` (possibly empty) or ceil(n / chunk_rows)."""
    if num_chunks is not None:
        bounds = torch.linspace(0, n, int(num_chunks) + 1).round().long().tolist()
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    if n == 0:
        return []
    rows = chunk_rows or head_chunk_rows(_vocab_size(head, hidden, fp32_head), hidden.device)
    return [slice(start, start + rows) for start in range(0, n, rows)]


def _vocab_size(head: torch.nn.Module, hidden: torch.Tensor, fp32_head: bool) -> int:
    out = getattr(head, "out_features", None)
    if isinstance(out, int) and out > 0:
        return out
    with torch.no_grad():  # unknown head type (or ZeRO-3 partitioned weight): ask the module itself
        return _call_head(head, hidden[:1], fp32_head).shape[-1] if hidden.shape[0] else 1


def has_plain_logits(config) -> bool:
    """True when the model's logits are exactly lm_head(hidden): no softcapping or logit scaling.

    The selective head calls the head module only; models that transform its output in their
    forward (Gemma-2 softcapping, Cohere `logit_scale`, Granite `logits_scaling`, ...) use TRL's
    full fused path instead.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "final_logit_softcapping", None) is not None:
        return False
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"):
        value = getattr(text, name, None)
        if value is not None and value != 1.0:
            return False
    return True
