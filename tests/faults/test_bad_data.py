"""Bad data: one `error:` line naming the file/row/column and the fix, exit 2, before any model loads.
Bad corpus files inside a usable corpus are skipped and counted, never fatal; a 100 MB line is truncated."""

from __future__ import annotations

import json
import time

import pytest

from rl.data.corpus import CorpusStats, read_corpus
from tests.faults.helpers import one_error_line, rpt_rows, run_cli, write_jsonl, write_recipe


def _rows(**changes):
    """8 good RPT rows, row 5 replaced by `changes` (None value: drop that key)."""
    rows = rpt_rows(8)
    for k, v in changes.items():
        if v is None:
            rows[5].pop(k)
        else:
            rows[5][k] = v
    return rows


def _dataset_file(tmp_path, kind):
    """Datasets that cannot be trained on: (path, recipe overrides)."""
    p = tmp_path / "data.jsonl"
    if kind == "empty-file":
        p.write_bytes(b"")
    elif kind == "blank-lines":
        p.write_text("\n\n  \n")
    elif kind == "bad-json-line":
        p.write_text("".join(json.dumps(r) + "\n" for r in rpt_rows(3)) + '{"prompt": oops}\n')
    elif kind == "non-object-line":
        p.write_text(json.dumps(rpt_rows(1)[0]) + "\n[1, 2]\n")
    elif kind == "non-utf8-line":
        p.write_bytes(json.dumps(rpt_rows(1)[0]).encode() + b'\n{"prompt": "caf\xe9"}\n')
    elif kind == "unsupported-type":
        p = tmp_path / "data.csv"
        p.write_text("prompt,continuation\nhi, there\n")
    elif kind == "not-a-dataset-dir":
        p = tmp_path / "notds"
        p.mkdir()
    elif kind == "missing-path":
        p = tmp_path / "nope.jsonl"
    elif kind == "empty-saved-dataset":
        from datasets import Dataset

        p = tmp_path / "empty_ds"
        Dataset.from_dict({"prompt": [], "continuation": [], "boundaries": []}).save_to_disk(str(p))
    return p


FILE_CASES = [
    ("empty-file", ["data.jsonl is empty"]),
    ("blank-lines", ["has no rows"]),
    ("bad-json-line", ["data.jsonl:4: not valid JSON"]),
    ("non-object-line", ["data.jsonl:2: expected a JSON object"]),
    ("non-utf8-line", ["data.jsonl:2: not UTF-8"]),
    ("unsupported-type", ["expected a save_to_disk dir, .jsonl or .parquet"]),
    ("not-a-dataset-dir", ["notds: cannot be read"]),
    ("missing-path", ["does not exist", "rl data rpt"]),
    ("empty-saved-dataset", ["empty_ds is an empty dataset (0 rows)"]),
]


@pytest.mark.parametrize("kind,expected", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_unreadable_or_empty_dataset(tmp_path, tiny_model_dir, forbid_model_load, kind, expected):
    path = _dataset_file(tmp_path, kind)
    recipe = write_recipe(tmp_path, tiny_model_dir, dataset_path=str(path))
    line = one_error_line(*run_cli(["train", "--config", str(recipe)]))
    for needle in expected:
        assert needle in line, line


ROW_CASES = [
    ("no-continuation-column", None, ["needs column(s) ['continuation']"]),
    ("boundary-past-end", {"boundaries": [2, 99]}, ["data.jsonl: row 5", "past the end of `continuation`"]),
    ("boundaries-not-increasing", {"boundaries": [3, 3]}, ["row 5", "strictly increasing"]),
    ("boundary-zero", {"boundaries": [0]}, ["row 5", "strictly increasing positive"]),
    ("boundaries-empty", {"boundaries": []}, ["row 5", "non-empty list"]),
    ("boundaries-not-a-list", {"boundaries": "3"}, ["row 5", "non-empty list"]),
    ("continuation-not-text", {"continuation": 7}, ["row 5", "`continuation` must be a string"]),
    ("multibyte-boundary-past-end", {"continuation": " é", "boundaries": [4]}, ["row 5", "(3 UTF-8 bytes)"]),
]


@pytest.mark.parametrize("kind,change,expected", ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_bad_rpt_rows_named_before_training(tmp_path, tiny_model_dir, forbid_model_load, kind, change, expected):
    if change is None:
        rows = [{k: v for k, v in r.items() if k != "continuation"} for r in rpt_rows(8)]
    else:
        rows = _rows(**change)
    recipe = write_recipe(tmp_path, tiny_model_dir, rows=rows)
    line = one_error_line(*run_cli(["train", "--config", str(recipe)]))
    for needle in expected:
        assert needle in line, line


def test_missing_prompt_and_reward_columns(tmp_path, tiny_model_dir, forbid_model_load):
    recipe = write_recipe(tmp_path, tiny_model_dir, rows=[{"text": "x", "continuation": " a", "boundaries": [2]}] * 8)
    assert "no `prompt` column" in one_error_line(*run_cli(["train", "--config", str(recipe)]))
    recipe = write_recipe(tmp_path, tiny_model_dir, reward_funcs=["math"])
    line = one_error_line(*run_cli(["train", "--config", str(recipe)]))
    assert "reward `math_reward` needs column(s) ['solution']" in line


def test_none_rows_are_allowed_for_mixed_data(tmp_path, tiny_model_dir, monkeypatch):
    """Rows with continuation and boundaries both None are not RPT rows: they pass the check (rpt scores None)."""
    from datasets import Dataset

    from rewards.rpt import check_rpt_dataset

    rows = rpt_rows(4) + [{"prompt": "math", "continuation": None, "boundaries": None, "doc_id": "m"}]
    check_rpt_dataset(Dataset.from_list(rows), "mixed")  # no error


def test_not_a_reward_function_is_refused(tmp_path, tiny_model_dir, forbid_model_load):
    recipe = write_recipe(tmp_path, tiny_model_dir, reward_funcs=["os.path.join"])
    assert "is not a reward function" in one_error_line(*run_cli(["train", "--config", str(recipe)]))


# ------------------------------------------------------------------------------------------ corpora

CORPUS_FILES = {
    "empty.txt": b"",
    "whitespace.txt": b"   \n\n\t \n",
    "binary.txt": bytes(range(256)) * 64,
    "latin1.txt": "caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"),
    "utf16.txt": "hello world".encode("utf-16"),
    "gzip.txt": b"\x1f\x8b\x08\x00" + bytes(100),
    "bad.jsonl": b'{"text": oops}\n\xff\xfe\n[1]\n{"no_text": 1}\n',
}


@pytest.mark.parametrize("name", sorted(CORPUS_FILES))
def test_unusable_corpus_file_is_one_line_before_model_loads(tmp_path, tiny_model_dir, forbid_model_load, name):
    path = tmp_path / "corpus" / name
    path.parent.mkdir()
    path.write_bytes(CORPUS_FILES[name])
    recipe = write_recipe(tmp_path, tiny_model_dir, corpus=str(path), rpt_min_entropy=0.0)
    line = one_error_line(*run_cli(["train", "--config", str(recipe)]))
    assert "no documents after skipping bad input" in line and name in line, line


@pytest.mark.parametrize("spec,expected", [
    ("@TMP@/nope.txt", "no such file or directory"),
    ("@TMP@/corpus.csv", "unsupported file type '.csv'"),
    ("@TMP@/empty_dir", "no documents"),
    ("@TMP@/*.nothing", "matches no files"),
    ("builtin:chmap", "unknown builtin corpus"),
])
def test_bad_corpus_spec_before_model_loads(tmp_path, tiny_model_dir, forbid_model_load, spec, expected):
    (tmp_path / "corpus.csv").write_text("a,b\n")
    (tmp_path / "empty_dir").mkdir()
    recipe = write_recipe(tmp_path, tiny_model_dir, corpus=spec.replace("@TMP@", str(tmp_path)))
    assert expected in one_error_line(*run_cli(["train", "--config", str(recipe)]))


def test_bad_files_in_a_usable_corpus_are_skipped_counted_and_a_100mb_line_truncated(tmp_path, caplog):
    root = tmp_path / "corpus"
    root.mkdir()
    for name, data in CORPUS_FILES.items():
        (root / name).write_bytes(data)
    (root / "good.txt").write_text("A good document about the sea and the sky.", encoding="utf-8")
    huge = root / "huge_line.txt"
    with open(huge, "wb") as f:  # one 100 MB line, no newline at all
        block = b"word " * 200_000
        for _ in range(100):
            f.write(block)
    huge_jsonl = root / "huge_line.jsonl"
    with open(huge_jsonl, "wb") as f:
        f.write(b'{"text": "')
        for _ in range(20):  # 20 MB: JSON lines are read whole, by design (rl/data/corpus.py)
            f.write(block)
        f.write(b'"}\n')
    stats = CorpusStats()
    start = time.perf_counter()
    docs = list(read_corpus(str(root), stats=stats))
    elapsed = time.perf_counter() - start
    texts = {d.doc_id.rsplit("/", 1)[-1]: d.text for d in docs}
    assert set(texts) == {"good.txt", "huge_line.txt", "huge_line.jsonl:1"}
    assert len(texts["huge_line.txt"]) <= 1_000_000 and stats.truncated == 2
    assert stats.skipped == {"binary": 3, "empty": 2, "non_utf8": 2, "bad_json": 1, "missing_field": 2}, stats.skipped
    assert elapsed < 20, f"reading took {elapsed:.1f}s"
    assert any("truncated" in r.getMessage() for r in caplog.records)


def test_chat_prompts_fall_back_to_plain_text_and_say_so(tmp_path, tiny_model_dir_plain, caplog):
    """A tokenizer with no chat template and chat-message prompts: plain text, one warning."""
    from types import SimpleNamespace

    from rl.data.loading import load_dataset_path, prepare_dataset
    from tests.tiny_models import gpt2_tokenizer

    rows = [{**r, "prompt": [{"role": "user", "content": r["prompt"]}]} for r in rpt_rows(4)]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    args = SimpleNamespace(dataset_path=str(path), corpus=None, eval_fraction=0.0, rpt_seed=0)
    train, _ = prepare_dataset(args, SimpleNamespace(output_dir=str(tmp_path)), str(tiny_model_dir_plain),
                               gpt2_tokenizer())
    assert train[0]["prompt"] == rows[0]["prompt"][0]["content"]
    warned = [r.getMessage() for r in caplog.records if "no chat template" in r.getMessage()]
    assert len(warned) == 1 and "plain-text prompt" in warned[0]
    assert load_dataset_path(str(path))[0][0]["prompt"] == rows[0]["prompt"]  # the file itself is untouched
