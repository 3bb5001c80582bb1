"""Checks on the policy model directory and its tokenizer, before any weights load.

A missing or truncated checkpoint, a directory without tokenizer files (transformers 5 then builds an
empty tokenizer that fails deep inside `generate`) or a tokenizer/model vocabulary mismatch becomes
one line naming the directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rl.errors import UserError
from rl.runtime.assets import resolve_model

logger = logging.getLogger(__name__)


_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.gguf", "adapter_model.bin")


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model",
                    "vocab.txt", "merges.txt", "sentencepiece.bpe.model")


def lora_base(model_path: str) -> str | None:
    """The base model named by a LoRA adapter directory (adapter_config.json without config.json), else None."""
    import json

    p = Path(model_path)
    if not (p.is_dir() and (p / "adapter_config.json").is_file() and not (p / "config.json").is_file()):
        return None
    try:
        return str(json.loads((p / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
                   or "?")
    except (OSError, ValueError, AttributeError):
        return "?"


def check_not_adapter(model_path: str, field: str = "model_name_or_path") -> None:
    """A LoRA adapter dir cannot be trained on or used as the RPT proxy directly: refuse it in one line.

    (`rl eval` and `rl profile` load an adapter on its base; training would need the merged weights.)
    """
    base = lora_base(model_path)
    if base is not None:
        raise UserError(f"{field}: {model_path} is a LoRA adapter (adapter_config.json, base {base}), not a full "
                        f"model; merge it into its base first (`rl merge {model_path} -o MERGED_DIR`) and give that directory, "
                        f"or set {field} to the base model")


def check_tokenizer_files(model_path: str, field: str = "model_name_or_path") -> None:
    """A local model dir with no tokenizer file at all: one line, instead of transformers' empty
    "Couldn't instantiate the backend tokenizer from one of:" message."""
    p = Path(model_path)
    if p.is_dir() and not any((p / f).is_file() for f in _TOKENIZER_FILES):
        raise UserError(f"{field}: {p} has no tokenizer files (tokenizer.json, tokenizer_config.json, vocab/merges); "
                        "copy the model's tokenizer files next to its config.json")


def quiet_long_input_warning(tokenizer) -> None:
    """Silence "Token indices sequence length is longer than the specified maximum sequence length ...
    indexing errors": callers that window or truncate long documents themselves never index past it."""
    flags = getattr(tokenizer, "deprecation_warnings", None)
    if isinstance(flags, dict):
        flags["sequence-length-is-longer-than-the-specified-maximum"] = True


def first_message_line(exc: BaseException) -> str:
    """The first informative line of an exception message (a line ending in ':' takes the next one along)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:
        text += " " + lines[1]
    return text.rstrip(":") if text.endswith(":") else text


def check_model_dir(model_path: str, field: str = "model_name_or_path") -> None:
    """A local model directory that cannot load (no config, no or truncated weights, a LoRA adapter):
    one line naming `field` (the recipe field or flag), before loading.

    Hub ids (not a local directory) are left to transformers. Only file headers are read.
    """
    import json

    from rl.runtime.checkpoint import check_safetensors

    p = Path(model_path)
    if not p.is_dir():
        return
    check_not_adapter(model_path, field)
    fix = f"point {field} at a complete model directory (config.json, tokenizer, weights) or re-download it"
    config = p / "config.json"
    if not config.is_file():
        raise UserError(f"{field}: {p} has no config.json; {fix}")
    if config.is_file():
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{field}: {config} is not valid JSON ({exc}); {fix}") from None
    weights = sorted({f for pattern in _WEIGHT_GLOBS for f in p.glob(pattern)})
    if not weights:
        raise UserError(f"{field}: {p} has no weights (*.safetensors, pytorch_model.bin); {fix}")
    for index in p.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{field}: {index} is unreadable ({exc}); {fix}") from None
        missing = sorted(s for s in shards if not (p / s).is_file())
        if missing:
            raise UserError(f"{field}: {p} lacks shard(s) {missing[:3]} named in {index.name}; {fix}")
    for f in weights:
        if f.suffix == ".safetensors":
            problem = check_safetensors(f)
            if problem:
                raise UserError(f"{field}: {p}: {problem}; {fix}")


def load_tokenizer(model_path: str, model_args, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    check_tokenizer_files(model_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_path, revision=model_args.model_revision, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, TypeError) as exc:
        fix = ("the directory needs tokenizer files (tokenizer.json or vocab/merges) next to the model"
               if Path(model_path).is_dir() else
               "it is not a local directory and could not be fetched from the hub cache; download it first "
               "(huggingface-cli download ...) or give a local path")
        raise UserError(f"model_name_or_path: cannot load a tokenizer from {model_path!r} "
                        f"({first_message_line(exc)}); {fix}") from None
    check_tokenizer(tokenizer, model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_tokenizer(tokenizer, model_path: str, field: str = "model_name_or_path") -> None:
    """A tokenizer that cannot encode text, or has ids the model has no embedding for: one line, before loading.

    transformers 5 builds an *empty* tokenizer (1 token, encodes everything to []) from a model
    directory that has no tokenizer files; generation then fails deep inside `generate`.
    """
    import json

    fix = "put the model's tokenizer files (tokenizer.json, tokenizer_config.json) next to its config.json"
    probe = tokenizer("The quick brown fox, 42.", add_special_tokens=False)["input_ids"]
    if len(tokenizer) < 2 or not probe:
        raise UserError(f"{field}: {model_path}: the tokenizer is empty (no tokenizer files?); {fix}")
    config = Path(model_path) / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # check_model_dir reports it
        vocab = data.get("vocab_size") or (data.get("text_config") or {}).get("vocab_size")
        if not isinstance(vocab, int) or len(tokenizer) <= vocab:
            return
        special = [getattr(tokenizer, f"{n}_token_id", None) for n in ("eos", "pad", "bos")]
        if any(i is not None and i >= vocab for i in [*probe, *special]):  # ids the embedding cannot look up
            raise UserError(f"{field}: {model_path}: the tokenizer has {len(tokenizer)} tokens but the "
                            f"model only {vocab} embeddings; use the tokenizer that belongs to this model")
        logger.warning("%s: the tokenizer has %d tokens, the model %d embeddings; tokens past %d would fail",
                       model_path, len(tokenizer), vocab, vocab - 1)


def check_model_arg(name_or_path: str, flag: str) -> str:
    """Check a model argument of `rl eval` / `rl profile` before any work (no weights): it resolves
    (builtin names, local paths), a local dir is complete (or a LoRA adapter whose base is), and its
    config reads (hub ids from the local cache). Returns the resolved path; one-line UserError naming `flag`."""
    import json

    try:
        path = resolve_model(str(name_or_path))
    except UserError as exc:
        raise UserError(f"{flag}: {exc}") from None
    base = lora_base(path)
    if base is not None:
        if base == "?":
            raise UserError(f"{flag}: {Path(path) / 'adapter_config.json'} has no readable base_model_name_or_path; "
                            "set it to the base model the adapter was trained on")
        check_model_arg(base, f"{flag} (base of the LoRA adapter {path})")
        return path
    check_model_dir(path, flag)
    check_tokenizer_files(path, flag)
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise UserError(f"{flag}: cannot read the config of {name_or_path!r} ({first_message_line(exc)[:200]}); give "
                        "a checkpoint dir, a LoRA dir, a hub id already downloaded, or a builtin: name") from None
    return path
