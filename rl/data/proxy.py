"""The proxy model of `rl data rpt` / `rl data rlp`: resolved and checked before any weights load
(one-line errors for a missing dir, a LoRA adapter, missing tokenizer files, a truncated
checkpoint), then loaded in eval mode (bf16 on a GPU, fp32 on CPU)."""

from __future__ import annotations

from rl.errors import UserError
from rl.runtime.assets import resolve_model
from rl.runtime.models import (
    check_model_dir, check_tokenizer, check_tokenizer_files, first_message_line, quiet_long_input_warning,
)


def load_proxy(model_name_or_path: str, device: str | None = None, flag: str = "--proxy-model"):
    """Load the proxy model (eval mode, fp32 on CPU) and its fast tokenizer; `flag` names the argument in errors."""
    import torch
    from transformers import AutoModelForCausalLM

    path, tokenizer = check_proxy(model_name_or_path, flag)
    check_tokenizer(tokenizer, path, flag)
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"{flag} {model_name_or_path!r}: needs a fast tokenizer (offsets are used for boundaries)")
    quiet_long_input_warning(tokenizer)  # long documents are windowed here, never fed whole to the model
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    except (OSError, ValueError) as exc:
        raise UserError(f"{flag} {model_name_or_path!r}: cannot load weights ({first_message_line(exc)})") from None
    return model, tokenizer


def check_proxy(model_name_or_path: str, flag: str = "--proxy-model"):
    """Resolve the proxy model and load its tokenizer (no weights): (path, tokenizer). One-line errors
    for a missing dir, a LoRA adapter, missing tokenizer files or a truncated checkpoint."""
    from transformers import AutoTokenizer

    try:
        path = resolve_model(model_name_or_path)
    except UserError as exc:
        raise UserError(f"{flag}: {exc}") from None
    check_model_dir(path, flag)
    check_tokenizer_files(path, flag)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{flag} {model_name_or_path!r}: cannot load its tokenizer ({first_message_line(exc)})") from None
    return path, tokenizer
