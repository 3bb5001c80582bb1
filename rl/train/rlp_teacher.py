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
model. With LoRA the EMA is kept gathered: every rank holds the whole (small) averaged adapter,
updated from the live adapter gathered read-only (`GatheredParameters`, no writes into partitions),
and scoring runs the policy with each LoRA A/B linear's forward computing with the averaged weight
instead of its own (the partitioned weights are never modified). A LoRA of Qwen3-1.7B at r 16 on
all linear layers is ~17M parameters (~70 MB fp32 per rank). A full-model EMA or full-model `base`
would need a whole copy per rank: refused under ZeRO-3 (`check_teacher`); use LoRA, ZeRO-2, or `none`.
"""

from __future__ import annotations

import contextlib
import copy
import functools

import torch

from rl.errors import UserError

__all__ = ["TEACHERS", "EmaTeacher", "FrozenTeacher", "NoTeacher", "check_teacher", "make_teacher",
           "teacher_problem"]

TEACHERS = ("ema", "base", "none")


def _is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def teacher_problem(kind: str, peft: bool, zero3: bool) -> str | None:
    """Why teacher `kind` cannot work with this model/launch (one line), or None. `rl train` raises it
    when the trainer is built; `--dry-run` reports it from the recipe and the accelerate config."""
    if kind not in TEACHERS:
        return f"rlp_teacher: expected one of {', '.join(TEACHERS)}, got {kind!r}"
    if zero3 and kind in ("ema", "base") and not peft:
        return (f"rlp_teacher: `{kind}` without LoRA needs a whole copy of the weights on every rank, which "
                "ZeRO-3 partitions; use LoRA (use_peft: true), ZeRO-2, or `none` (same gradient)")
    return None


def check_teacher(kind: str, model, zero3: bool) -> None:
    """UserError (one line) when `kind` cannot work for this model/launch."""
    problem = teacher_problem(kind, _is_peft(model), zero3)
    if problem:
        raise UserError(problem)


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

    def __init__(self, policy, decay: float, zero3: bool = False):
        if not 0.0 <= decay < 1.0:
            raise UserError(f"rlp_ema_decay: must be in [0, 1), got {decay}")
        self.policy, self.decay, self.zero3 = policy, float(decay), bool(zero3)
        self.adapter_only = _is_peft(policy)
        if self.adapter_only:  # name -> averaged copy of each trainable (adapter) weight, whole on every rank
            trainable = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
            with _gathered([p for _, p in trainable], self.zero3):
                self.shadow = {n: p.detach().clone() for n, p in trainable}
            self.copy = None
            if self.zero3:
                self._linears = _shadowed_linears(policy, self.shadow)
        else:
            self.copy = _frozen_copy(policy)
            self.shadow = None
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """ema <- decay * ema + (1 - decay) * theta, for every averaged weight (buffers copied)."""
        d = self.decay
        if self.adapter_only:
            live = [(n, p) for n, p in self.policy.named_parameters() if n in self.shadow]
            with _gathered([p for _, p in live], self.zero3):  # every rank calls: a collective under ZeRO-3
                for name, p in live:
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
        if self.zero3:  # partitioned adapter: compute with the averaged weights, never write the partitions
            with _linears_using(self._linears):
                yield self.policy
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


def _gathered(params, zero3: bool):
    """Read-only gather of ZeRO-3 partitioned parameters (a no-op context otherwise)."""
    if not zero3 or not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def _shadowed_linears(policy, shadow: dict[str, torch.Tensor]) -> list[tuple[torch.nn.Linear, torch.Tensor, torch.Tensor | None]]:
    """(module, averaged weight, averaged bias) for every LoRA linear whose parameters are all averaged;
    UserError when an averaged weight belongs to something else (e.g. LoRA on embeddings)."""
    covered, out = set(), []
    for name, module in policy.named_modules():
        if isinstance(module, torch.nn.Linear) and f"{name}.weight" in shadow:
            bias = f"{name}.bias"
            if module.bias is not None and bias not in shadow:
                continue
            out.append((module, shadow[f"{name}.weight"], shadow.get(bias)))
            covered.update({f"{name}.weight", bias})
    left = sorted(set(shadow) - covered)
    if left:
        raise UserError(f"rlp_teacher: `ema` under ZeRO-3 averages LoRA linear layers only, not {left[0]} "
                        f"({len(left)} such weights); use ZeRO-2, `base`, or `none`")
    return out


@contextlib.contextmanager
def _linears_using(linears):
    """Within the block each listed Linear computes with its averaged weight (an instance `forward`;
    DeepSpeed's hooks still run around it, and its own partitioned weight is left as it is)."""
    for module, weight, bias in linears:
        module.forward = functools.partial(_linear_with, weight=weight, bias=bias)
    try:
        yield
    finally:
        for module, _, _ in linears:
            del module.forward


def _linear_with(x, *, weight, bias):
    return torch.nn.functional.linear(x, weight.to(device=x.device, dtype=x.dtype),
                                      None if bias is None else bias.to(device=x.device, dtype=x.dtype))


def _frozen_copy(policy):
    """A frozen deep copy of `policy` that computes with its own weights.

    TRL's GRPOTrainer has already replaced the policy's `forward` with an instance attribute, a closure
    over the policy's original bound forward (`add_fused_lm_head`). `deepcopy` rebinds a method to the
    copy but leaves a closure as it is, so the copy's `forward` would run the policy's weights. Every
    instance-level `forward` is dropped from the copy: each module runs its own class's forward (the
    teacher never needs the fused head: it is scored through logits, rl/train/rlp_scoring.py)."""
    teacher = copy.deepcopy(policy)
    for module in teacher.modules():
        if "forward" in vars(module):
            del module.forward
    left = [name or "<model>" for name, module in teacher.named_modules() if "forward" in vars(module)]
    if left:  # pragma: no cover - a class attribute setter that re-installs itself
        raise RuntimeError(f"rlp teacher: instance-level forward survives on {left[:3]}")
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
    return EmaTeacher(policy, decay, zero3=zero3)
