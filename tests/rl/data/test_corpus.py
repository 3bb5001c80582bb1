"""rl.data.corpus: every spec form, every kind of bad input (counted, named, never silent)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from rl.data.corpus import BUILTIN_CORPORA, CorpusStats, Document, read_corpus
from rl.errors import UserError


def read(spec, **kw) -> tuple[list[Document], CorpusStats]:
    stats = CorpusStats()
    return list(read_corpus(str(spec), stats, **kw)), stats


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- builtin


def test_builtin_champ_has_270_clean_documents():
    docs, stats = read("builtin:champ")
    assert len(docs) == 270 == stats.documents and stats.total_skipped == 0
    assert len({d.doc_id for d in docs}) == 270
    assert all(d.doc_id.startswith("champ/P_") for d in docs)
    first = docs[0]
    assert first.doc_id == "champ/P_Combinatorics_1"
    assert first.text.startswith("Problem: Let a string consist of digit 1, 2, 3.")
    assert "\n\nSolution:\nLet x_n, y_n, z_n be" in first.text and first.text.endswith("\n\nAnswer: 239")
    assert all(d.text.count("\n\nSolution:\n") == 1 and "\n\nAnswer: " in d.text for d in docs)
    assert [d.doc_id for d in read("builtin:champ")[0]] == [d.doc_id for d in docs]  # deterministic
    assert "champ" in BUILTIN_CORPORA


def test_unknown_builtin_corpus_lists_known():
    with pytest.raises(UserError, match="builtin:champ"):
        read_corpus("builtin:nope")


# ----------------------------------------------------------------------------- txt


def test_txt_file_is_one_document(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("Hello world.\n\nSecond paragraph — ünïcödé.\n", encoding="utf-8")
    docs, stats = read(f)
    assert docs == [Document(str(f), "Hello world.\n\nSecond paragraph — ünïcödé.\n")]
    assert stats.files == 1 and stats.documents == 1


def test_txt_blank_line_blocks(tmp_path):
    f = tmp_path / "b.txt"
    f.write_bytes(b"\xef\xbb\xbfpara one\nstill one\n\n\n  \npara two\r\n\r\nthree\n")
    docs, _ = read(f, txt_split="blank_line")
    assert [(d.doc_id, d.text) for d in docs] == [
        (f"{f}:1", "para one\nstill one"), (f"{f}:6", "para two"), (f"{f}:8", "three"),
    ]


def test_txt_blank_line_skips_only_the_bad_block(tmp_path, caplog):
    f = tmp_path / "c.txt"
    f.write_bytes(b"good one\n\nbad \xff\xfe line\nrest of bad block\n\ngood two\n")
    with caplog.at_level(logging.WARNING):
        docs, stats = read(f, txt_split="blank_line")
    assert [d.text for d in docs] == ["good one", "good two"]
    assert stats.skipped == {"non_utf8": 1}
    assert f"{f}:3" in caplog.text


def test_directory_is_recursive_sorted_and_mixed(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "z.txt").write_text("zed")
    (tmp_path / "a.txt").write_text("ay")
    (tmp_path / "sub" / "m.txt").write_text("em")
    write_jsonl(tmp_path / "sub" / "n.jsonl", [{"text": "en"}])
    (tmp_path / ".hidden.txt").write_text("hidden")
    (tmp_path / "notes.csv").write_text("x,y")
    docs, stats = read(tmp_path)
    assert [d.text for d in docs] == ["ay", "em", "en", "zed"]
    assert stats.skipped == {"unsupported": 1} and stats.files == 4
    assert [d.doc_id for d in read(tmp_path)[0]] == [d.doc_id for d in docs]


def test_glob_pattern(tmp_path):
    for name in ["b.txt", "a.txt", "c.md"]:
        (tmp_path / name).write_text(name)
    docs, _ = read(tmp_path / "*.txt")
    assert [d.text for d in docs] == ["a.txt", "b.txt"]
    with pytest.raises(UserError, match="matches no files"):
        read_corpus(str(tmp_path / "*.nothing"))
    docs, stats = read(tmp_path / "*")  # matches c.md too: counted as unsupported, not a crash
    assert [d.text for d in docs] == ["a.txt", "b.txt"] and stats.skipped == {"unsupported": 1}


def test_non_utf8_line_number_past_the_first_read_chunk(tmp_path, caplog):
    f = tmp_path / "big.txt"
    line = "é" * 99 + "\n"  # 199 bytes per line; multi-byte chars straddle the 1 MiB chunk edges
    f.write_bytes((line * 8000).encode() + b"bad \xff here\n" + line.encode())
    stats = CorpusStats()
    with caplog.at_level(logging.WARNING), pytest.raises(UserError, match="no documents"):
        list(read_corpus(str(f), stats, max_chars=None))  # the only file is skipped whole
    assert stats.skipped == {"non_utf8": 1} and f"{f}:8001" in caplog.text


# ----------------------------------------------------------------------------- jsonl / parquet / HF


def test_jsonl_text_field_and_id_field(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"text": "one", "id": "x1"}, {"text": "two", "id": 7}, {"body": "b"}])
    docs, stats = read(f)
    assert [(d.doc_id, d.text) for d in docs] == [(f"{f}:1", "one"), (f"{f}:2", "two")]
    assert stats.skipped == {"missing_field": 1}
    docs, _ = read(f, id_field="id")
    assert [d.doc_id for d in docs] == ["x1", "7"]
    docs, _ = read(f, text_field="body")
    assert [d.text for d in docs] == ["b"]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "e.parquet"
    pq.write_table(pa.table({"text": ["alpha", None, "", "gamma"], "n": [1, 2, 3, 4]}), f)
    docs, stats = read(f)
    assert [(d.doc_id, d.text) for d in docs] == [(f"{f}:0", "alpha"), (f"{f}:3", "gamma")]
    assert stats.skipped == {"not_text": 1, "empty": 1}
    with pytest.raises(UserError, match=r"no column 'body'; available columns: text, n"):
        read(f, text_field="body")
    with pytest.raises(UserError, match="'n' has type int64"):
        read(f, text_field="n")


def test_hf_dataset_dirs(tmp_path):
    import datasets

    single = tmp_path / "single"
    datasets.Dataset.from_dict({"content": ["d1", "d2"]}).save_to_disk(str(single))
    docs, _ = read(single, text_field="content")
    assert [(d.doc_id, d.text) for d in docs] == [(f"{single}:0", "d1"), (f"{single}:1", "d2")]

    dd = tmp_path / "dd"
    datasets.DatasetDict({
        "test": datasets.Dataset.from_dict({"text": ["t"]}),
        "train": datasets.Dataset.from_dict({"text": ["tr1", "tr2"], "other": [1, 2]}),
    }).save_to_disk(str(dd))
    assert [d.text for d in read(dd)[0]] == ["tr1", "tr2"]
    with pytest.raises(UserError) as err:
        read(dd, text_field="body")
    assert "'train'" in str(err.value) and "available columns: text, other" in str(err.value)

    only = tmp_path / "only"
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"text": ["v"]})}).save_to_disk(str(only))
    assert [d.text for d in read(only)[0]] == ["v"]

    two = tmp_path / "two"
    datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": [s]}) for s in ["a", "b"]}).save_to_disk(str(two))
    with pytest.raises(UserError, match="splits a, b and none is 'train'"):
        read_corpus(str(two))


# ----------------------------------------------------------------------------- bad input


def test_bad_files_are_counted_named_and_skipped(tmp_path, caplog):
    (tmp_path / "1_good.txt").write_text("good text")
    (tmp_path / "2_empty.txt").write_text("")
    (tmp_path / "3_blank.txt").write_text("  \n\n\t\n")
    (tmp_path / "4_binary.txt").write_bytes(b"PK\x03\x04\x00\x00binary" * 10)
    (tmp_path / "5_latin1.txt").write_bytes("line one\ncafé\n".encode("latin-1"))
    (tmp_path / "6_dangling.txt").symlink_to(tmp_path / "gone.txt")
    with caplog.at_level(logging.WARNING):
        docs, stats = read(tmp_path)
    assert [d.text for d in docs] == ["good text"]
    assert stats.skipped == {"empty": 2, "binary": 1, "non_utf8": 1, "unreadable": 1}
    for needle in ["2_empty.txt", "3_blank.txt", "4_binary.txt", "5_latin1.txt:2", "6_dangling.txt"]:
        assert needle in caplog.text
    s = stats.summary()
    assert "\n" not in s and s.startswith("1 document from 6 files; skipped 5 (")
    assert "binary 1" in s and "non_utf8 1" in s and "unreadable 1" in s


def test_bad_jsonl_lines_name_file_and_line(tmp_path, caplog):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(
        b'{"text": "ok one"}\n'
        b'{"text": "caf\xe9"}\n'  # latin-1 byte: not UTF-8
        b"{not json\n"
        b'{"title": "no text"}\n'
        b'{"text": 42}\n'
        b'{"text": ""}\n'
        b"[1, 2]\n"
        b"\n"
        b'{"text": "ok two"}'  # no trailing newline
    )
    with caplog.at_level(logging.WARNING):
        docs, stats = read(f)
    assert [(d.doc_id, d.text) for d in docs] == [(f"{f}:1", "ok one"), (f"{f}:9", "ok two")]
    assert stats.skipped == {"non_utf8": 1, "bad_json": 1, "missing_field": 2, "not_text": 1, "empty": 1}
    for line in [2, 3, 4, 5, 6, 7]:
        assert f"{f}:{line}" in caplog.text
    assert "'title'" in caplog.text  # the keys that are there


def test_binary_jsonl_is_skipped_whole(tmp_path):
    (tmp_path / "x.jsonl").write_bytes(b"\x1f\x8b\x08\x00\x00\x00" + b"\x00" * 50)
    (tmp_path / "y.jsonl").write_text('{"text": "fine"}\n')
    docs, stats = read(tmp_path)
    assert [d.text for d in docs] == ["fine"] and stats.skipped == {"binary": 1}


def test_nonexistent_path_and_bad_options(tmp_path):
    with pytest.raises(UserError, match="no such file or directory") as err:
        read_corpus(str(tmp_path / "missing.jsonl"))  # raised eagerly, before iterating
    assert "missing.jsonl" in str(err.value)
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(UserError, match="unsupported file type '.csv'"):
        read_corpus(str(tmp_path / "x.csv"))
    with pytest.raises(UserError, match="txt_split"):
        read_corpus(str(tmp_path), txt_split="paragraph")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b'{"nottext": 1}\n'])
def test_empty_corpus_is_a_user_error_naming_spec_and_reasons(tmp_path, content):
    f = tmp_path / "nothing.jsonl"
    f.write_bytes(content)
    with pytest.raises(UserError) as err:
        read(f)
    assert str(f) in str(err.value) and "no documents" in str(err.value)
    if content.startswith(b"{"):
        assert "missing_field 1" in str(err.value) and f"{f}:1" in str(err.value)


def test_empty_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no documents"):
        read(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_permission_denied_is_a_counted_skip(tmp_path):
    (tmp_path / "ok.txt").write_text("fine")
    locked = tmp_path / "locked.txt"
    locked.write_text("secret")
    locked.chmod(0)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "inner.txt").write_text("hidden")
    sub.chmod(0)
    try:
        docs, stats = read(tmp_path)
    finally:
        sub.chmod(0o755)
    assert [d.text for d in docs] == ["fine"] and stats.skipped["unreadable"] == 2


def test_permission_errors_simulated_for_root(tmp_path, monkeypatch, caplog):
    """Same as above but runs as root too: open() and directory listing raise PermissionError."""
    import builtins

    import rl.data.corpus as corpus

    (tmp_path / "ok.txt").write_text("fine")
    (tmp_path / "locked.txt").write_text("secret")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.txt").write_text("hidden")
    real_open, real_scandir = builtins.open, os.scandir

    def fake_open(path, *a, **kw):
        if str(path).endswith("locked.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    def fake_scandir(path="."):
        if str(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(corpus, "open", fake_open, raising=False)
    monkeypatch.setattr(os, "scandir", fake_scandir)
    with caplog.at_level(logging.WARNING):
        docs, stats = read(tmp_path)
    assert [d.text for d in docs] == ["fine"] and stats.skipped == {"unreadable": 2}
    assert "locked.txt" in caplog.text and f"{tmp_path / 'sub'}" in caplog.text


# ----------------------------------------------------------------------------- size


def test_long_documents_are_truncated_at_whitespace_and_counted(tmp_path):
    f = tmp_path / "long.txt"
    f.write_text("word " * 1000)  # 5000 chars
    docs, stats = read(f, max_chars=2003)
    assert stats.truncated == 1 and len(docs[0].text) <= 2003 and docs[0].text.endswith("word")
    docs, stats = read(f, max_chars=None)
    assert len(docs[0].text) == 5000 and stats.truncated == 0


def test_huge_jsonl_line_streams_with_bounded_memory(tmp_path):
    """A 100 MB single-line record: parsed on its own, truncated, peak memory a few times its size."""
    import tracemalloc

    f = tmp_path / "huge.jsonl"
    with open(f, "w") as out:
        out.write('{"text": "small"}\n{"text": "')
        chunk = "abcdefghi " * 100_000  # 1 MB
        for _ in range(100):
            out.write(chunk)
        out.write('"}\n{"text": "after"}\n')
    tracemalloc.start()
    try:
        docs, stats = read(f, max_chars=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [len(d.text) <= 1000 for d in docs] == [True] * 3 and docs[2].text == "after"
    assert stats.truncated == 1
    assert peak < 5 * 100 * 2**20, f"peak {peak / 2**20:.0f} MiB for a 100 MB line"


def test_huge_txt_file_stops_reading_at_the_cap(tmp_path):
    import tracemalloc

    f = tmp_path / "huge.txt"
    with open(f, "w") as out:
        for _ in range(50):
            out.write("x" * (2**20 - 1) + "\n")
    tracemalloc.start()
    try:
        docs, stats = read(f, max_chars=10_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(docs[0].text) == 10_000 and stats.truncated == 1
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB; the 50 MB file must not be read whole"
