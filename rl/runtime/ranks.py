"""Agreement between ranks: the one tiny collective the runtime guards need.

A leaf module (torch only, imported lazily) so that checkpointing, preemption and the fault guards
can all agree on a flag without importing each other.
"""

from __future__ import annotations


def active_dist():
    """`torch.distributed` when a process group with more than one rank is up, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def sync_flag(flag: bool) -> bool:
    """True on every rank if it is True on any rank (all-reduce MAX of one int); local flag when not distributed.

    Collective: every rank must call it at the same point (e.g. the same `on_step_end`).
    """
    dist = active_dist()
    if dist is None:
        return bool(flag)
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    """Wait for every rank (a tiny all-reduce, so it works on gloo and nccl alike); no-op when single-process."""
    sync_flag(False)
