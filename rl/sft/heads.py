"""CAFT's auxiliary heads on any decoder-only transformers model, and their own save/load.

Head k (1..K) reads the hidden state the trunk feeds its LAST decoder layer at position t and
predicts token t+1+k, through its own block, then the trunk's final norm and shared LM head.

Why that input, in both stages: a decoder-layer head starts as a copy of the last layer, so at
initialisation it computes exactly what the trunk computes there (a next-token predictor) and only
has to learn the shift. The reference code feeds stage 1 that state but stage 2 the final-normed
output; reading one place in both stages keeps the trained heads valid in fine-tuning.

Why a forward pre-hook: the last layer's call carries the trunk's real attention mask (padding,
packing, sliding window, built for the attention implementation in use), position ids, rotary
position embeddings and any padding-free kwargs. The heads are called with exactly those, so they
see only the past (causality) and never attend across packed sequences. The KV cache is dropped.

Saving: the heads live in their own directory (`caft_heads.json` naming the base model, its sizes and
the head choices, plus `caft_heads.safetensors`), never inside the policy checkpoint; loading is strict
and every mismatch is one line naming `caft_heads_path`.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rl.errors import UserError
from rl.runtime.atomic_io import atomic_write_text

CONFIG_NAME = "caft_heads.json"
WEIGHTS_NAME = "caft_heads.safetensors"
FORMAT_VERSION = 1
ATTR = "caft_heads"  # the heads' attribute on the (unwrapped) causal LM; `_save` leaves it out
_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_norm")
_LAYER_LISTS = ("layers", "h", "blocks")


def _base_model(model: nn.Module) -> nn.Module:
    """The causal LM under PEFT / DDP / DeepSpeed wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def find_trunk(model: nn.Module, field: str = "aux_mtp") -> tuple[nn.ModuleList, nn.Module, nn.Module]:
    """(decoder layers, final norm, LM head) of a decoder-only causal LM; else one line naming `field`."""
    model = _base_model(model)
    decoder = None
    if hasattr(model, "get_decoder"):
        with contextlib.suppress(Exception):
            decoder = model.get_decoder()
    if decoder is None:
        decoder = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    layers = next((getattr(decoder, n) for n in _LAYER_LISTS
                   if isinstance(getattr(decoder, n, None), nn.ModuleList)), None) if decoder is not None else None
    norm = next((getattr(decoder, n) for n in _NORM_NAMES if isinstance(getattr(decoder, n, None), nn.Module)),
                None) if decoder is not None else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if layers is None or len(layers) == 0 or norm is None or head is None:
        arch = type(model).__name__
        raise UserError(f"{field}: caft needs a decoder-only model with a list of decoder layers, a final norm and "
                        f"an LM head; cannot find them in {arch}; use aux_mtp: none for this model")
    return layers, norm, head


class ResidualHead(nn.Module):
    """Medusa-style block x + SiLU(W x), W zero-initialised so the head starts as the identity."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.act = nn.SiLU()

    def forward(self, hidden: torch.Tensor, **_layer_kwargs) -> torch.Tensor:
        return hidden + self.act(self.linear(hidden))


def _gathered(params):
    """ZeRO-3: the full parameters for the block (read on every rank); a no-op otherwise."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    params = [p for p in params if hasattr(p, "ds_id")]
    if params and is_deepspeed_zero3_enabled():
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    return contextlib.nullcontext()


class CaftHeads(nn.Module):
    """K auxiliary heads; the trunk's norm and LM head are looked up on the model at each call
    (PEFT and DeepSpeed replace or wrap them after attachment)."""

    def __init__(self, blocks: list[nn.Module], kind: str):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.kind = kind

    @property
    def num_heads(self) -> int:
        return len(self.blocks)


def build_heads(model: nn.Module, num_heads: int, kind: str, init_from_last: bool = True) -> CaftHeads:
    """New heads for `model`: decoder layers of the model's own class (weights copied from its last layer
    when `init_from_last`) or residual blocks; same dtype and device as the last layer."""
    layers, _, _ = find_trunk(model)
    last = layers[-1]
    config = _base_model(model).config.get_text_config()
    with _gathered(last.parameters()):
        ref = next(last.parameters())
        blocks = []
        for _ in range(num_heads):
            if kind == "residual":
                block = ResidualHead(config.hidden_size)
            else:
                try:  # the transformers decoder-layer signature (config, layer_idx): the last layer's attention type
                    block = type(last)(config, layer_idx=len(layers) - 1)
                except TypeError as exc:
                    raise UserError(f"caft_head_kind: cannot build a {type(last).__name__} head ({exc}); "
                                    "use caft_head_kind: residual") from None
                if init_from_last:
                    block.load_state_dict({k: v.detach().clone() for k, v in last.state_dict().items()})
            blocks.append(block.to(device=ref.device, dtype=ref.dtype))
    return CaftHeads(blocks, kind)


def attach(model: nn.Module, heads: CaftHeads, trainable: bool) -> CaftHeads:
    """Register the heads on the unwrapped causal LM (so DDP/DeepSpeed see them) with their grad flag.
    Attach after PEFT wraps the model: the heads are then never given LoRA layers."""
    for p in heads.parameters():
        p.requires_grad_(trainable)
    setattr(_base_model(model), ATTR, heads)
    return heads


def heads_of(model: nn.Module) -> CaftHeads | None:
    return getattr(_base_model(model), ATTR, None)


class LastLayerInputs:
    """Records what the trunk passes to its last decoder layer, while `capturing()` is active."""

    def __init__(self, model: nn.Module):
        layers, _, _ = find_trunk(model)
        self.hidden: torch.Tensor | None = None
        self.kwargs: dict[str, Any] = {}
        self._active = False
        self._handle = layers[-1].register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if self._active and self.hidden is None:  # the first call only (a checkpointed recompute is not ours)
            self.hidden = args[0] if args else kwargs["hidden_states"]
            self.kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        return None

    @contextlib.contextmanager
    def capturing(self):
        self.hidden, self.kwargs, self._active = None, {}, True
        try:
            yield self
        finally:
            self._active = False

    def take(self) -> tuple[torch.Tensor, dict[str, Any]]:
        if self.hidden is None:
            raise RuntimeError("caft: the trunk's last decoder layer was not called in this forward")
        hidden, kwargs = self.hidden, self.kwargs
        self.hidden, self.kwargs = None, {}
        # No KV cache: the heads must not write into the trunk's cache at the last layer's index.
        kwargs = {k: (None if k in ("cache", "past_key_values", "past_key_value") else v) for k, v in kwargs.items()}
        if "use_cache" in kwargs:
            kwargs["use_cache"] = False
        return hidden, kwargs

    def remove(self) -> None:
        self._handle.remove()


def head_hidden(heads: CaftHeads, model: nn.Module, k: int, hidden: torch.Tensor, layer_kwargs: dict) -> torch.Tensor:
    """Head k's (1-based) final-normed hidden state at every position: block, then the trunk's norm."""
    _, norm, _ = find_trunk(model)
    out = heads.blocks[k - 1](hidden, **layer_kwargs)
    if isinstance(out, tuple):  # transformers 4.x layers return a tuple; 5.x a tensor (never index a tensor's row 0)
        out = out[0]
    return norm(out)


def logit_softcap(model: nn.Module) -> float | None:
    """The model's final logit soft-cap (Gemma 2 style: c * tanh(z / c)), which its heads share; None without."""
    cap = getattr(_base_model(model).config.get_text_config(), "final_logit_softcapping", None)
    return float(cap) if cap else None


def apply_softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    return logits if cap is None else cap * torch.tanh(logits / cap)


def head_logits(heads: CaftHeads, model: nn.Module, k: int, hidden: torch.Tensor, layer_kwargs: dict) -> torch.Tensor:
    """Head k's logits at every position (B, T, V), soft-capped as the model's own: for tests and evaluations."""
    _, _, lm_head = find_trunk(model)
    return apply_softcap(lm_head(head_hidden(heads, model, k, hidden, layer_kwargs)), logit_softcap(model))


# --- saving and loading, apart from the policy ---

def model_identity(config, base_model: str) -> dict:
    """What heads must match: the base model's name, type and sizes."""
    text = config.get_text_config()
    return {"base_model": str(base_model), "model_type": text.model_type, "hidden_size": int(text.hidden_size),
            "vocab_size": int(text.vocab_size), "num_hidden_layers": int(text.num_hidden_layers)}


def heads_state(heads: CaftHeads) -> dict[str, torch.Tensor]:
    """The heads' full weights on CPU (ZeRO-3: gathered, a collective every rank must join)."""
    with _gathered(heads.parameters()):
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in heads.state_dict().items()}


def write_heads(directory: str | Path, state: dict[str, torch.Tensor], heads: CaftHeads, identity: dict,
                extra: dict | None = None) -> list[Path]:
    """Write the heads' weights and config into `directory` (created); one process writes."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"format_version": FORMAT_VERSION, **identity, "num_heads": heads.num_heads, "head_kind": heads.kind,
              "block_class": type(heads.blocks[0]).__name__, **(extra or {})}
    save_file(state, str(directory / WEIGHTS_NAME))
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True))  # last: proves the weights
    return [directory / WEIGHTS_NAME, directory / CONFIG_NAME]


def read_heads_config(directory: str | Path, field: str = "caft_heads_path") -> dict:
    """The heads' config, or one line naming `field` (missing directory, file, or unreadable)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{field}: {directory} does not exist; train heads with caft_stage: heads first")
    path = directory / CONFIG_NAME
    if not path.is_file() or not (directory / WEIGHTS_NAME).is_file():
        raise UserError(f"{field}: {directory} holds no CAFT heads ({CONFIG_NAME} + {WEIGHTS_NAME}); "
                        "train them with caft_stage: heads")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{field}: {path} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{field}: {path} is not a version-{FORMAT_VERSION} CAFT heads config")
    return config


def check_heads_match(config: dict, identity: dict, num_heads: int, kind: str,
                      field: str = "caft_heads_path") -> None:
    """Heads trained for another base model, size or head choice: one line naming what differs."""
    wanted = {**identity, "num_heads": int(num_heads), "head_kind": kind}
    for key, value in wanted.items():
        if key == "base_model":
            continue  # compared last: a size mismatch is the more useful message
        if config.get(key) != value:
            raise UserError(f"{field}: heads were saved with {key}={config.get(key)!r}, this run has {value!r}; "
                            "train heads for this model and settings (caft_stage: heads)")
    if Path(str(config.get("base_model"))).name != Path(str(identity["base_model"])).name:
        raise UserError(f"{field}: heads were trained on base model {config.get('base_model')!r}, this run's model "
                        f"is {identity['base_model']!r}; train heads on this model (caft_stage: heads)")


def load_heads_into(heads: CaftHeads, directory: str | Path, field: str = "caft_heads_path") -> None:
    """Strict load of saved weights into built heads; a key or shape mismatch is one line."""
    from safetensors.torch import load_file

    state = load_file(str(Path(directory) / WEIGHTS_NAME))
    own = heads.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        what = (f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}" if unexpected
                else f"shape of {wrong[0]} {tuple(state[wrong[0]].shape)} != {tuple(own[wrong[0]].shape)}")
        raise UserError(f"{field}: the saved heads do not fit this model ({what}); train heads for it")
    with _gathered(heads.parameters()):
        heads.load_state_dict(state, strict=True)
