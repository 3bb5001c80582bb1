"""Corpus readers: turn a corpus spec into a deterministic stream of `Document(doc_id, text)`.

Spec forms (see `read_corpus`): `builtin:champ`; a `.txt`, `.jsonl` or `.parquet` file; a directory
(recursively, sorted) of such files; a glob pattern; a directory saved by `datasets.save_to_disk`.

Bad input never crashes a long run and is never silent: a bad file, line or row is skipped,
counted in `CorpusStats.skipped[reason]` and logged as a warning naming file (and line or row).
Configuration mistakes that would skip *everything* (nonexistent path, a parquet/HF text column
that does not exist, nothing left after skipping) raise `UserError` instead.

Size policy: documents longer than `max_chars` are truncated (at the last whitespace within the
final 1,000 characters, else hard) and counted in `CorpusStats.truncated`, not skipped, because
the beginning of a long document is still good text. Text files are decoded incrementally and
stop being read at the cap; a JSONL line is read whole (JSON cannot be parsed in pieces), so a
100 MB line costs a few times 100 MB transiently and never the whole file.
"""

from __future__ import annotations

import codecs
import glob as globlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rl.errors import UserError
from rl.runtime.assets import BUILTIN_CORPORA

log = logging.getLogger(__name__)

DEFAULT_MAX_CHARS = 1_000_000
TXT_SPLITS = ("file", "blank_line")
_CHUNK = 1 << 20  # bytes read at a time from text files
_SNIFF = 8192  # leading bytes checked for NUL to call a file binary (git's heuristic)
_MAX_EXAMPLES = 3  # locations remembered per skip reason, shown in summaries and errors
_MAX_WARNINGS = 20  # individual warnings per reason before they are only counted
_STRING_TYPES = ("string", "large_string", "string_view")
_NUL = "contains NUL bytes (binary, compressed, or UTF-16?); need UTF-8 text"


@dataclass
class Document:
    """One training document: a stable id (file:line, file:row, champ/<id>) and its text."""

    doc_id: str
    text: str


@dataclass
class CorpusStats:
    """What reading a corpus did: documents yielded, files opened, skips by reason, truncations.

    Skip reasons: empty, non_utf8, binary, unreadable, bad_json, missing_field, not_text,
    unsupported (a file in a directory with an extension no reader handles).
    """

    documents: int = 0
    files: int = 0
    truncated: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        """Count one skipped item and warn (the first `_MAX_WARNINGS` times per reason)."""
        n = self.skipped.get(reason, 0) + 1
        self.skipped[reason] = n
        msg = f"{where}: {detail}" if detail else where
        if len(self.examples.setdefault(reason, [])) < _MAX_EXAMPLES:
            self.examples[reason].append(msg)
        if n <= _MAX_WARNINGS:
            log.warning("corpus: skipped (%s) %s", reason, msg)
        elif n == _MAX_WARNINGS + 1:
            log.warning("corpus: more '%s' skips; counting them silently from now on", reason)

    def summary(self) -> str:
        """One line, e.g. `270 documents from 1 file; skipped 2 (empty 1, non_utf8 1); truncated 0`."""
        parts = [f"{_plural(self.documents, 'document')} from {_plural(self.files, 'file')}"]
        if self.skipped:
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.skipped.items()))
            parts.append(f"skipped {self.total_skipped} ({reasons})")
        else:
            parts.append("skipped 0")
        parts.append(f"truncated {self.truncated}")
        return "; ".join(parts)

    def _explain(self) -> str:
        """Summary plus the first example location per skip reason, for error messages."""
        ex = "; ".join(f"e.g. {v[0]}" for _, v in sorted(self.examples.items()) if v)
        return self.summary() + (f" [{ex}]" if ex else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------------------------
# public entry point


def read_corpus(
    spec: str,
    stats: CorpusStats | None = None,
    max_chars: int | None = DEFAULT_MAX_CHARS,
    *,
    text_field: str = "text",
    txt_split: str = "file",
    id_field: str | None = None,
) -> Iterator[Document]:
    """Yield the documents of `spec` in a deterministic order, counting skips into `stats`.

    spec: `builtin:champ`; a `.txt` / `.jsonl` / `.parquet` file; a directory of such files
    (recursive, sorted by path, hidden entries ignored); a glob (`data/*.jsonl`, `**` allowed);
    or a `datasets.save_to_disk` directory (a DatasetDict uses its "train" split or its only one).
    text_field: the JSON key / column holding the text. id_field: optional key / column used as
    doc_id instead of `file:line` (JSONL, 1-based) or `file:row` (parquet and datasets, 0-based).
    txt_split: "file" (one document per .txt file) or "blank_line" (one per blank-line-separated
    block, doc_id `file:first_line`). max_chars: truncation cap (None: no cap).

    Spec errors (nonexistent path, unknown builtin, unknown format, bad option) raise UserError
    right away; an empty corpus raises UserError when iteration ends.
    """
    if txt_split not in TXT_SPLITS:
        raise UserError(f"txt_split={txt_split!r}: must be one of {', '.join(TXT_SPLITS)}")
    if max_chars is not None and max_chars < 1:
        raise UserError(f"max_chars={max_chars}: must be a positive number of characters (or None)")
    opts = _Opts(text_field, txt_split, id_field, max_chars)
    reader = _plan(spec.strip(), opts)
    stats = stats if stats is not None else CorpusStats()
    return _run(spec, reader(stats), stats, opts)


@dataclass
class _Opts:
    text_field: str
    txt_split: str
    id_field: str | None
    max_chars: int | None


# A planned reader: validated eagerly by `_plan`, run lazily with the caller's stats.
Reader = Callable[[CorpusStats], Iterator[Document]]


def _run(spec: str, source: Iterator[Document], stats: CorpusStats, opts: _Opts) -> Iterator[Document]:
    """Apply the size cap and the empty-document rule to every reader, and the empty-corpus check."""
    yielded = 0
    for doc in source:
        if not doc.text.strip():
            stats.skip("empty", doc.doc_id, "document is empty or whitespace only")
            continue
        if opts.max_chars is not None and len(doc.text) > opts.max_chars:
            doc = Document(doc.doc_id, _truncate(doc.text, opts.max_chars))
            if not doc.text.strip():
                stats.skip("empty", doc.doc_id, f"only whitespace in the first {opts.max_chars} characters")
                continue
            stats.truncated += 1
            if stats.truncated <= _MAX_WARNINGS:
                log.warning("corpus: truncated %s to %d characters (max_chars)", doc.doc_id, len(doc.text))
        stats.documents += 1
        yielded += 1
        yield doc
    if yielded == 0:
        raise UserError(f"corpus {spec!r}: no documents after skipping bad input ({stats._explain()})")


def _truncate(text: str, max_chars: int) -> str:
    """First `max_chars` characters, cut back to the last space/newline in the final 1,000 if any."""
    cut = text[:max_chars]
    lo = max(0, max_chars - 1000)
    space = max(cut.rfind(" ", lo), cut.rfind("\n", lo))
    return cut[:space] if space > 0 else cut


def _plan(spec: str, opts: _Opts) -> Reader:
    """Validate the spec eagerly (so typos fail before any work) and return its lazy reader."""
    if spec.lower().startswith("builtin:"):
        name = spec[len("builtin:"):].strip().lower()
        if name not in _BUILTIN:
            known = ", ".join("builtin:" + k for k in sorted(_BUILTIN))
            raise UserError(f"corpus {spec!r}: unknown builtin corpus; known builtin corpora: {known}")
        if opts.id_field:
            raise UserError(f"corpus {spec!r}: --id-field / rpt_id_field {opts.id_field!r}: a builtin corpus has its "
                            "own document ids; leave it unset")
        return _BUILTIN[name]()
    if any(ch in spec for ch in "*?["):
        matches = sorted(p for p in globlib.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p))
        if not matches:
            raise UserError(f"corpus {spec!r}: the glob pattern matches no files")
        return _read_files([Path(m) for m in matches], opts)
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"corpus {spec!r}: no such file or directory (or a builtin like builtin:champ)")
    if path.is_dir():
        if _is_hf_dataset_dir(path):
            return _read_hf_dataset(path, opts)
        return _read_directory(path, opts)
    if _reader_for(path) is None:
        raise UserError(
            f"corpus {spec!r}: unsupported file type {path.suffix or '(no extension)'!r}; use .txt, "
            ".jsonl, .parquet, a directory of those, a datasets.save_to_disk directory, or builtin:champ"
        )
    if opts.id_field and path.suffix.lower() == ".txt":
        raise UserError(f"corpus {spec!r}: --id-field / rpt_id_field {opts.id_field!r}: a .txt file has no fields "
                        "(its documents are named file:line); leave it unset")
    return _read_files([path], opts)


def _reader_for(path: Path):
    return {".txt": _read_txt, ".jsonl": _read_jsonl, ".parquet": _read_parquet}.get(path.suffix.lower())


# ---------------------------------------------------------------------------------------------
# files and directories


def _read_directory(root: Path, opts: _Opts) -> Reader:
    """All supported files under `root`, sorted; unreadable subdirectories become counted skips."""
    errors: list[OSError] = []
    files: list[Path] = []  # unsupported types are counted by _read_files, not dropped silently
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    files.sort(key=lambda p: p.relative_to(root).parts)

    def gen(stats: CorpusStats) -> Iterator[Document]:
        for err in errors:
            stats.skip("unreadable", str(err.filename), f"cannot list directory ({err.strerror or err})")
        yield from _read_files(files, opts)(stats)

    return gen


def _read_files(paths: list[Path], opts: _Opts) -> Reader:
    def gen(stats: CorpusStats) -> Iterator[Document]:
        for p in paths:
            reader = _reader_for(p)
            if reader is None:
                stats.skip("unsupported", str(p), "not .txt/.jsonl/.parquet; ignored")
                continue
            stats.files += 1
            try:
                yield from reader(p, stats, opts)
            except OSError as exc:  # open/read failures anywhere in the file: skip the rest of it
                stats.skip("unreadable", str(p), exc.strerror or str(exc))

    return gen


def _sniff_binary(head: bytes) -> bool:
    return b"\x00" in head[:_SNIFF]


def _read_txt(path: Path, stats: CorpusStats, opts: _Opts) -> Iterator[Document]:
    if opts.txt_split == "blank_line":
        yield from _read_txt_blocks(path, stats, opts)
        return
    with open(path, "rb") as f:
        decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        pieces: list[str] = []
        n_chars = 0
        newlines = 0
        while True:
            chunk = f.read(_CHUNK)
            if b"\x00" in chunk:
                stats.skip("binary", str(path), _NUL)
                return
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:  # exc.object: carried-over partial char + this chunk
                line = newlines + exc.object[: exc.start].count(b"\n") + 1
                stats.skip("non_utf8", f"{path}:{line}", f"invalid UTF-8 ({exc.reason})")
                return
            newlines += chunk.count(b"\n")
            pieces.append(text)
            n_chars += len(text)
            # Stop reading past the cap (+ slack for word-boundary truncation): `_run` truncates.
            if not chunk or (opts.max_chars is not None and n_chars > opts.max_chars + 1):
                break
    yield Document(str(path), "".join(pieces))


def _read_txt_blocks(path: Path, stats: CorpusStats, opts: _Opts) -> Iterator[Document]:
    """Blank-line-separated blocks; a bad block (NUL, invalid UTF-8) is skipped on its own."""
    with open(path, "rb") as f:
        if _sniff_binary(f.read(_SNIFF)):
            stats.skip("binary", str(path), _NUL)
            return
        f.seek(0)
        block: list[str] = []
        start = 0
        bad: tuple[str, str, str] | None = None
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            if not raw.strip():
                if block or bad:
                    yield from _flush_block(path, start, block, bad, stats)
                block, bad = [], None
                continue
            if not block and bad is None:
                start = lineno
            if bad is not None:
                continue
            if b"\x00" in raw:
                bad = ("binary", f"{path}:{lineno}", "contains NUL bytes")
                continue
            try:
                block.append(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                bad = ("non_utf8", f"{path}:{lineno}", f"invalid UTF-8 ({exc.reason})")
        if block or bad:
            yield from _flush_block(path, start, block, bad, stats)


def _flush_block(path, start, block, bad, stats) -> Iterator[Document]:
    if bad is not None:
        stats.skip(bad[0], bad[1], bad[2] + f"; block starting at line {start} skipped")
    else:
        yield Document(f"{path}:{start}", "".join(block).rstrip("\r\n"))


def _read_jsonl(path: Path, stats: CorpusStats, opts: _Opts) -> Iterator[Document]:
    """One JSON object per line, streamed line by line; every bad line is a counted skip."""
    with open(path, "rb") as f:
        if _sniff_binary(f.read(_SNIFF)):
            stats.skip("binary", str(path), _NUL)
            return
        f.seek(0)
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            if not raw.strip():
                continue  # blank lines (e.g. a trailing one) are not records
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                stats.skip("non_utf8", where, f"invalid UTF-8 at byte {exc.start} ({exc.reason})")
                continue
            del raw
            try:
                record = json.loads(line)
            except ValueError as exc:
                stats.skip("bad_json", where, f"not valid JSON ({str(exc)[:80]})")
                continue
            del line
            if not isinstance(record, dict) or opts.text_field not in record:
                keys = sorted(record)[:10] if isinstance(record, dict) else type(record).__name__
                stats.skip("missing_field", where, f"no {opts.text_field!r} field (has {keys}; choose one with "
                                                             "--text-field / rpt_text_field)")
                continue
            text = record[opts.text_field]
            if not isinstance(text, str):
                stats.skip("not_text", where, f"{opts.text_field!r} is {type(text).__name__}, not a string")
                continue
            if opts.id_field and opts.id_field not in record:  # never a silent fallback to file:line ids
                raise UserError(f"corpus {where}: no {opts.id_field!r} field for the document id (--id-field / "
                                f"rpt_id_field; the row has {sorted(record)[:10]}); name a field every row has, "
                                "or leave it unset for file:line ids")
            yield Document(_doc_id(where, record.get(opts.id_field) if opts.id_field else None), text)


def _doc_id(default: str, custom) -> str:
    return default if custom is None or custom == "" else str(custom)


def _check_columns(where: str, types: dict[str, str], opts: _Opts) -> None:
    """A wrong column skips every row, so it is a UserError naming what is available.

    types: column name -> type name (arrow type names; `string` etc. are text).
    """
    for col in [opts.text_field] + ([opts.id_field] if opts.id_field else []):
        if col not in types:
            raise UserError(f"corpus {where}: no column {col!r}; available columns: {', '.join(types)} "
                            "(name the text column with --text-field, or rpt_text_field in a recipe; the id column with "
                            "--id-field / rpt_id_field)")
    if types[opts.text_field] not in _STRING_TYPES:
        raise UserError(f"corpus {where}: column {opts.text_field!r} has type {types[opts.text_field]}, "
                        "not strings; name the column holding the text with --text-field (recipe: rpt_text_field)")


def _read_parquet(path: Path, stats: CorpusStats, opts: _Opts) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        stats.skip("unreadable", str(path), f"not a readable parquet file ({exc})")
        return
    schema = pf.schema_arrow
    _check_columns(str(path), {n: str(schema.field(n).type) for n in schema.names}, opts)
    cols = [opts.text_field] + ([opts.id_field] if opts.id_field else [])
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=1024, columns=cols):
            texts = batch.column(opts.text_field).to_pylist()
            ids = batch.column(opts.id_field).to_pylist() if opts.id_field else [None] * len(texts)
            for text, cid in zip(texts, ids):
                where = f"{path}:{row}"
                row += 1
                if text is None:
                    stats.skip("not_text", where, f"{opts.text_field!r} is null")
                    continue
                yield Document(_doc_id(where, cid), text)
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        stats.skip("unreadable", f"{path}:{row}", f"parquet read failed; rest of file skipped ({exc})")


# ---------------------------------------------------------------------------------------------
# datasets.save_to_disk directories


def _is_hf_dataset_dir(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _read_hf_dataset(path: Path, opts: _Opts) -> Reader:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a damaged dir
        raise UserError(f"corpus {str(path)!r}: cannot load this datasets.save_to_disk directory ({exc})") from exc
    where = str(path)
    if isinstance(ds, datasets.DatasetDict):
        splits = sorted(ds)
        if "train" in ds:
            split = "train"
        elif len(splits) == 1:
            split = splits[0]
        else:
            raise UserError(f"corpus {where!r}: has splits {', '.join(splits)} and none is 'train'; "
                            f"point at one split's directory instead, e.g. {path / splits[0]}")
        ds, where = ds[split], f"{path} (split {split!r})"
    types = {k: (v.dtype if isinstance(v, datasets.Value) else type(v).__name__) for k, v in ds.features.items()}
    _check_columns(where, types, opts)
    cols = [opts.text_field] + ([opts.id_field] if opts.id_field else [])
    ds = ds.select_columns(cols)

    def gen(stats: CorpusStats) -> Iterator[Document]:
        stats.files += 1
        row = 0
        for batch in ds.iter(batch_size=1000):
            ids = batch[opts.id_field] if opts.id_field else [None] * len(batch[opts.text_field])
            for text, cid in zip(batch[opts.text_field], ids):
                loc = f"{path}:{row}"
                row += 1
                if text is None:
                    stats.skip("not_text", loc, f"{opts.text_field!r} is null")
                    continue
                yield Document(_doc_id(loc, cid), text)

    return gen


# ---------------------------------------------------------------------------------------------
# builtin corpora


def _read_champ() -> Reader:
    """CHAMP (PyPI champ-dataset 1.0.0, MIT): 270 competition-math problems with human solutions.

    Rendered as `Problem: ...`, a blank line, `Solution:` with one human-written step per line,
    a blank line, `Answer: ...`; doc_id `champ/<problem id>` in the dataset's own (natural) order.
    """
    try:
        import champ_dataset
    except ImportError as exc:
        raise UserError("builtin:champ needs the champ-dataset package: pip install champ-dataset==1.0.0") from exc

    def gen(stats: CorpusStats) -> Iterator[Document]:
        stats.files += 1
        for pid, p in champ_dataset.load("v0").problems.items():
            steps = "\n".join(s.text.strip() for s in p.solution.steps if s.text and s.text.strip())
            text = f"Problem: {p.text.strip()}\n\nSolution:\n{steps}\n\nAnswer: {(p.answer or '').strip()}"
            yield Document(f"champ/{pid}", text)

    return gen


# name -> reader factory, one per builtin corpus that rl.runtime.assets names (checked at import).
_BUILTIN = {"champ": _read_champ}
if set(_BUILTIN) != set(BUILTIN_CORPORA):  # a name without a reader, or a reader without a name
    raise RuntimeError(f"builtin corpora named {sorted(BUILTIN_CORPORA)} but readers for {sorted(_BUILTIN)}")
