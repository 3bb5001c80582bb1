"""RLP teachers: the model that scores the no-think baseline log p(x_t | x_<t).

The teacher's term is the same for every thought of a group, so it cancels in the group
advantage: it changes the logged reward (information gain in nats), never the gradient.

* `ema` (the paper's): an exponential moving average of the policy, updated after every optimizer
  step, ema <- decay * ema + (1 - decay) * theta (paper decay 0.999), starting from the initial
  policy. Full model: a frozen copy. LoRA (PEFT): only the trainable adapter weights are averaged;
  scoring swaps the averaged adapter in for the call and the live one back after it, so the base
  weights are never copied.
* `base`: the frozen initial model. PEFT: the policy with its adapter disabled (no copy); otherwise
  a frozen copy made at start.
* `none`: no baseline (0): the reward is log p_theta(x_t | x_<t, c_t), which gives the same
  advantages; only the logged number stops being a gain.

The EMA is training state: every checkpoint holds it (`rlp_teacher.pt`, written by the trainer
beside the optimizer state), and a resumed run continues the same average instead of restarting
it from the resumed policy (`EmaTeacher.state_dict` / `load_state_dict`). `base` and `none` have
no state to keep: the initial model is loaded again from the recipe.

Under DeepSpeed ZeRO-3 the parameters are partitioned, so a copy or a swap of `p.data` is not the
model: `ema` and full-model `base` are refused there (`check_teacher`); `base` with LoRA and `none`
work. (Not done: a per-shard EMA of `ds_tensor`.)
"""

from __future__ import annotations

import contextlib
import copy

import torch

from rl.errors import UserError

__all__ = ["TEACHERS", "EmaTeacher", "FrozenTeacher", "NoTeacher", "check_teacher", "make_teacher"]

TEACHERS = ("ema", "base", "none")


def _is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def check_teacher(kind: str, model, zero3: bool) -> None:
    """UserError (one line) when `kind` cannot work for this model/launch."""
    if kind not in TEACHERS:
        raise UserError(f"rlp_teacher: expected one of {', '.join(TEACHERS)}, got {kind!r}")
    if zero3 and (kind == "ema" or (kind == "base" and not _is_peft(model))):
        raise UserError(f"rlp_teacher: `{kind}` needs a whole copy of the weights, which ZeRO-3 partitions; "
                        "use `none` (same gradient), or `base` with LoRA (use_peft: true)")


class NoTeacher:
    """No baseline: scores nothing, the baseline is 0."""

    kind = "none"

    def scoring(self):
        return contextlib.nullcontext(None)

    def update(self) -> None:
        pass


class FrozenTeacher:
    """The initial model: adapter disabled (PEFT) or a frozen copy."""

    kind = "base"

    def __init__(self, policy):
        self.policy = policy
        self.copy = None if _is_peft(policy) else _frozen_copy(policy)

    @contextlib.contextmanager
    def scoring(self):
        if self.copy is not None:
            yield self.copy
            return
        with self.policy.disable_adapter():
            yield self.policy

    def update(self) -> None:
        pass


class EmaTeacher:
    """EMA of the policy (whole network, or the LoRA adapter only), updated by `update()` after
    each optimizer step."""

    kind = "ema"

    def __init__(self, policy, decay: float):
        if not 0.0 <= decay < 1.0:
            raise UserError(f"rlp_ema_decay: must be in [0, 1), got {decay}")
        self.policy, self.decay = policy, float(decay)
        self.adapter_only = _is_peft(policy)
        if self.adapter_only:  # name -> averaged copy of each trainable (adapter) weight
            self.shadow = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
            self.copy = None
        else:
            self.copy = _frozen_copy(policy)
            self.shadow = None
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """ema <- decay * ema + (1 - decay) * theta, for every averaged weight (buffers copied)."""
        d = self.decay
        if self.adapter_only:
            for name, p in self.policy.named_parameters():
                if name in self.shadow:
                    self.shadow[name].mul_(d).add_(p.detach().to(self.shadow[name].dtype), alpha=1 - d)
        else:
            live = dict(self.policy.named_parameters())
            for name, e in self.copy.named_parameters():
                e.mul_(d).add_(live[name].detach().to(e.dtype), alpha=1 - d)
            live_buffers = dict(self.policy.named_buffers())
            for name, b in self.copy.named_buffers():
                if name in live_buffers:
                    b.copy_(live_buffers[name])
        self.updates += 1

    def _weights(self) -> dict[str, torch.Tensor]:
        if self.adapter_only:
            return self.shadow
        return {**dict(self.copy.named_parameters()), **dict(self.copy.named_buffers())}

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the averaged weights (adapter only under LoRA), decay and update count."""
        return {"kind": self.kind, "adapter_only": self.adapter_only, "decay": self.decay, "updates": self.updates,
                "weights": {n: t.detach().cpu().clone() for n, t in self._weights().items()}}

    @torch.no_grad()
    def load_state_dict(self, state: dict, where: str = "checkpoint") -> None:
        """Restore a saved average; one-line UserError when it belongs to another model or adapter."""
        if state.get("kind") != self.kind or bool(state.get("adapter_only")) != self.adapter_only:
            raise UserError(f"{where}: the saved RLP teacher is {state.get('kind')!r} "
                            f"(adapter_only={state.get('adapter_only')}), this run's is {self.kind!r} "
                            f"(adapter_only={self.adapter_only}); resume with the recipe that wrote it")
        mine, saved = self._weights(), state["weights"]
        if set(mine) != set(saved) or any(mine[n].shape != saved[n].shape for n in mine):
            missing = sorted(set(mine) ^ set(saved))[:3] or [n for n in mine if mine[n].shape != saved[n].shape][:3]
            raise UserError(f"{where}: the saved RLP teacher does not fit this model (first differences: "
                            f"{', '.join(missing)}); resume with the model and LoRA settings that wrote it")
        for n, t in mine.items():
            t.copy_(saved[n].to(device=t.device, dtype=t.dtype))
        self.updates = int(state.get("updates", 0))

    @contextlib.contextmanager
    def scoring(self):
        if not self.adapter_only:
            yield self.copy
            return
        params = dict(self.policy.named_parameters())
        backup = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, e in self.shadow.items():
                params[n].copy_(e)
        try:
            yield self.policy
        finally:
            with torch.no_grad():
                for n, b in backup.items():
                    params[n].copy_(b)


def _frozen_copy(policy):
    teacher = copy.deepcopy(policy)
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def make_teacher(kind: str, policy, decay: float = 0.999, zero3: bool = False):
    """The teacher of `kind` for `policy` (the unwrapped model, PEFT or not)."""
    check_teacher(kind, policy, zero3)
    if kind == "none":
        return NoTeacher()
    if kind == "base":
        return FrozenTeacher(policy)
    return EmaTeacher(policy, decay)
