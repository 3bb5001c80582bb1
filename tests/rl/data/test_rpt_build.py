"""RPT data builder: window tiling, row contract, and bad input (tiny local proxy model)."""

from __future__ import annotations

import json

import pytest

from rl.data.rpt import RPTBuildConfig, build_rpt_dataset, format_prompt, window_plan
from rl.data.settings import DEFAULT_RPT_PROMPT
from rl.errors import UserError
from rewards.rpt import prefix_match_reward

CORPUS = [
    "The derivative of x squared is two x. Hence the slope at one is two, and the tangent line is y = 2x - 1.",
    "Let n be an integer. If n is even then n squared is even; café prices rose, 你好 world, naïve résumé.",
    "Short.",
]


@pytest.mark.parametrize("n,window", [(2, 4), (5, 4), (9, 4), (100, 16), (17, 16), (1000, 7), (3, 2)])
def test_window_plan_tiles_every_position_once(n, window):
    plans = window_plan(n, window)
    owned = [p for _, _, a, b in plans for p in range(a, b)]
    assert owned == list(range(1, n))
    for start, end, own_from, own_to in plans:
        assert 0 <= start < end <= n and end - start <= window
        # the logits for position p sit at window index p - start - 1, which must exist
        assert start + 1 <= own_from and own_to <= end


def test_window_plan_short_document():
    assert window_plan(0, 8) == [] and window_plan(1, 8) == []


def test_format_prompt_keeps_braces():
    out = format_prompt(DEFAULT_RPT_PROMPT, r"so \frac{1}{2} = {x}")
    assert r"\frac{1}{2} = {x}" in out and "{context}" not in out


def _corpus_file(tmp_path, docs=CORPUS):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


def _cfg(corpus, model, **kw):
    base = dict(corpus=str(corpus), proxy_model=str(model), min_entropy=0.0, max_per_doc=50,
                min_context_tokens=4, window_tokens=8, proxy_batch_size=3, prompt_template=DEFAULT_RPT_PROMPT)
    base.update(kw)
    return RPTBuildConfig(**base)


def test_rows_follow_the_contract(tmp_path, tiny_model_dir):
    out = tmp_path / "rpt"
    ds, summary = build_rpt_dataset(_cfg(_corpus_file(tmp_path), tiny_model_dir), out, jsonl=True)
    assert len(ds) == summary.positions_kept > 0
    assert summary.documents == 3 and summary.documents_too_short == 1
    assert set(ds.column_names) == {"prompt", "rpt_format", "context", "continuation", "boundaries", "entropy",
                                    "doc_id", "position"}
    for row in ds:
        b = row["continuation"].encode("utf-8")
        assert row["boundaries"] == sorted(set(row["boundaries"])) and 0 < row["boundaries"][-1] <= len(b)
        # chat template on the tiny model -> chat messages carrying the context
        assert isinstance(row["prompt"], list) and row["context"] in row["prompt"][0]["content"]
        assert row["position"] >= 4 and row["entropy"] >= 0.0
        # context + continuation is a verbatim slice of the document
        assert any(row["context"] + row["continuation"] in d for d in CORPUS)
        # the true first token scores 1
        first = b[: row["boundaries"][0]].decode("utf-8")
        assert prefix_match_reward(first, row["continuation"], row["boundaries"]) == 1.0
    assert (out / "rpt_build.json").exists() and (out / "rows.jsonl").exists()
    assert not out.with_suffix(".jsonl").exists()  # never beside the output (it could be the corpus)
    assert len((out / "rows.jsonl").read_text().splitlines()) == len(ds)
    assert str(out / "rows.jsonl") in summary.files and str(out / "rl-output.json") in summary.files
    assert len(set(ds["doc_id"])) == 2


def test_window_size_does_not_change_first_window_entropies(tmp_path, tiny_model_dir):
    """Positions inside the first window see identical context whatever the window size."""
    corpus = _corpus_file(tmp_path, CORPUS[:1])
    small, _ = build_rpt_dataset(_cfg(corpus, tiny_model_dir, window_tokens=64), tmp_path / "a")
    large, _ = build_rpt_dataset(_cfg(corpus, tiny_model_dir, window_tokens=128, proxy_batch_size=1), tmp_path / "b")
    assert small["position"] == large["position"]
    for a, b in zip(small["entropy"], large["entropy"]):
        assert a == pytest.approx(b, abs=1e-4)


def test_min_entropy_filters_and_plain_prompts(tmp_path, tiny_model_dir_plain):
    corpus = _corpus_file(tmp_path)
    ds, summary = build_rpt_dataset(_cfg(corpus, tiny_model_dir_plain, entropy="full"), tmp_path / "full")
    assert isinstance(ds[0]["prompt"], str)
    cut = sorted(ds["entropy"])[len(ds) // 2]
    ds2, s2 = build_rpt_dataset(_cfg(corpus, tiny_model_dir_plain, entropy="full", min_entropy=cut), tmp_path / "hi")
    assert 0 < len(ds2) < len(ds) and min(ds2["entropy"]) >= cut
    assert s2.positions_above_threshold < summary.positions_above_threshold


def test_max_per_doc_and_determinism(tmp_path, tiny_model_dir):
    corpus = _corpus_file(tmp_path)
    a, _ = build_rpt_dataset(_cfg(corpus, tiny_model_dir, max_per_doc=2, seed=3), tmp_path / "a")
    b, _ = build_rpt_dataset(_cfg(corpus, tiny_model_dir, max_per_doc=2, seed=3), tmp_path / "b")
    assert len(a) == 4 and a["position"] == b["position"]


def test_no_positions_is_a_clear_error(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="no RPT positions kept.*lower min_entropy"):
        build_rpt_dataset(_cfg(_corpus_file(tmp_path), tiny_model_dir, min_entropy=1e9), tmp_path / "x")


def test_all_documents_too_short_names_the_real_cause(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="every document is shorter than min_context_tokens") as err:
        build_rpt_dataset(_cfg(_corpus_file(tmp_path, ["Short.", "Tiny one."]), tiny_model_dir), tmp_path / "x")
    assert "min_entropy" not in str(err.value)


def test_max_documents_zero_is_refused_before_reading(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="max_documents: must be at least 1"):
        build_rpt_dataset(_cfg(_corpus_file(tmp_path), tiny_model_dir, max_documents=0), tmp_path / "x")


def test_text_field_and_id_field_read_other_columns(tmp_path, tiny_model_dir):
    corpus = tmp_path / "posts.jsonl"
    corpus.write_text("".join(json.dumps({"content": d, "key": f"p{i}"}) + "\n" for i, d in enumerate(CORPUS)),
                      encoding="utf-8")
    with pytest.raises(UserError, match="--text-field"):
        build_rpt_dataset(_cfg(corpus, tiny_model_dir), tmp_path / "x")
    ds, _ = build_rpt_dataset(_cfg(corpus, tiny_model_dir, text_field="content", id_field="key"), tmp_path / "y")
    assert set(ds["doc_id"]) <= {"p0", "p1", "p2"} and len(ds) > 0


def test_lora_adapter_proxy_is_refused_naming_the_flag(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match=r"^--proxy-model: .* is a LoRA adapter"):
        build_rpt_dataset(_cfg(_corpus_file(tmp_path), adapter), tmp_path / "x")


def test_model_dir_without_tokenizer_files_is_one_clear_line(tmp_path, tiny_model_dir):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    for f in bare.iterdir():
        if "token" in f.name or f.name in ("vocab.json", "merges.txt", "chat_template.jinja"):
            f.unlink()
    with pytest.raises(UserError, match="--proxy-model: .* has no tokenizer files") as err:
        build_rpt_dataset(_cfg(_corpus_file(tmp_path), bare), tmp_path / "x")
    assert "Couldn't instantiate" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "field,value,match",
    [("entropy", "bogus", "entropy"), ("top_k", 0, "top_k"), ("prompt_template", "no placeholder", "context")],
)
def test_bad_config(tmp_path, tiny_model_dir, field, value, match):
    with pytest.raises(UserError, match=match):
        build_rpt_dataset(_cfg(_corpus_file(tmp_path), tiny_model_dir, **{field: value}), tmp_path / "x")


def test_missing_proxy_model_is_a_clear_error(tmp_path):
    with pytest.raises(UserError):
        build_rpt_dataset(_cfg(_corpus_file(tmp_path), tmp_path / "nope"), tmp_path / "x")


def test_completion_format_rows_prompt_with_the_raw_context(tmp_path, tiny_model_dir):
    """Completion format: the prompt is the context itself (a plain string even for a chat model),
    and the completion-format reward scores the true continuation as right."""
    from rewards.rpt import rpt_completion_reward

    ds, _ = build_rpt_dataset(_cfg(_corpus_file(tmp_path), tiny_model_dir, format="completion", chat="yes"),
                              tmp_path / "rpt")
    assert set(ds["rpt_format"]) == {"completion"}
    for row in ds:
        assert row["prompt"] == row["context"]
    rewards = rpt_completion_reward(ds["continuation"], continuation=ds["continuation"], boundaries=ds["boundaries"],
                                    rpt_format=ds["rpt_format"])
    assert rewards == [1.0] * len(ds)


def test_reasoning_format_rows_keep_the_instruction(tmp_path, tiny_model_dir):
    ds, _ = build_rpt_dataset(_cfg(_corpus_file(tmp_path), tiny_model_dir, chat="yes"), tmp_path / "rpt")
    assert set(ds["rpt_format"]) == {"reasoning"}
    assert all(isinstance(p, list) and p[0]["content"].endswith(c) for p, c in zip(ds["prompt"], ds["context"]))


def test_unknown_format_is_refused_before_any_work(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="format: expected one of reasoning, completion, rlp, got 'poem'"):
        build_rpt_dataset(_cfg(_corpus_file(tmp_path), tiny_model_dir, format="poem"), tmp_path / "rpt")
