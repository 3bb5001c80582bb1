"""A prepared dataset's columns, row count and first rows, read without loading it whole.

`dataset_path` may be a `save_to_disk` directory (memory-mapped), a JSON lines file (or one JSON
array), or a parquet file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rl.train.preflight.report import Report, exc_summary, parsed_or_problem
from rl.errors import UserError

PEEK_ROWS = 32  # rows read from the dataset for column/type/length checks


@dataclasses.dataclass
class DataInfo:
    source: str
    columns: list[str]
    num_rows: int | None = None
    rows: list[dict] = dataclasses.field(default_factory=list)
    max_prompt_tokens: int | None = None  # over the peeked rows, or the RPT bound
    prompt_bound_note: str = ""


def peek_dataset(report: Report, path: str, label: str = "dataset_path") -> DataInfo | None:
    """Features, row count and first rows of a dataset_path, without reading it whole."""
    p = Path(path).expanduser()
    where = f"{label} {path}"
    if not p.exists():
        report.problem(f"{where}: does not exist (prepare it as the recipe header says; RPT data comes from "
                       "`rl data rpt`)")
        return None
    try:
        if p.is_dir():
            from rl.data.loading import load_dataset_path  # save_to_disk dirs are memory-mapped: cheap

            train, _ = load_dataset_path(str(p))
            rows = [train[i] for i in range(min(PEEK_ROWS, len(train)))]
            return DataInfo(where, list(train.column_names), len(train), rows)
        if p.suffix in (".jsonl", ".json"):
            return _peek_jsonl(report, p, where)
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(str(p))
            rows = []
            for batch in pf.iter_batches(batch_size=PEEK_ROWS):
                rows = batch.to_pylist()
                break
            return DataInfo(where, list(pf.schema_arrow.names), pf.metadata.num_rows, rows)
    except UserError as exc:
        report.problem(str(exc))
        return None
    except Exception as exc:  # noqa: BLE001
        report.problem(f"{where}: cannot be read ({exc_summary(exc)})")
        return None
    report.problem(f"{where}: expected a save_to_disk dir, .jsonl or .parquet file")
    return None


def _columns_of(rows: list[dict]) -> list[str]:
    """The keys of the rows, in order of first appearance."""
    return list(dict.fromkeys(k for row in rows for k in row))


def _peek_jsonl(report: Report, p: Path, where: str) -> DataInfo | None:
    rows: list[dict] = []
    count = 0
    with open(p, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            count += 1
            if len(rows) < PEEK_ROWS:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    if number == 1 and line.lstrip()[:1] == b"[":  # one JSON array, not JSON lines
                        return _peek_json_array(report, p, where)
                    report.problem(f"{where}:{number}: not valid JSON ({exc.msg})")
                    return None
                if not isinstance(row, dict):
                    report.problem(f"{where}:{number}: each line must be a JSON object, got {type(row).__name__}")
                    return None
                rows.append(row)
    if not rows:
        report.problem(f"{where}: no rows")
        return None
    return DataInfo(where, _columns_of(rows), count, rows)


def _peek_json_array(report: Report, p: Path, where: str) -> DataInfo | None:
    data = parsed_or_problem(
        report, where, lambda: json.loads(p.read_text(encoding="utf-8")), (json.JSONDecodeError, UnicodeDecodeError),
        "JSON", lambda d: isinstance(d, list) and d and all(isinstance(r, dict) for r in d[:PEEK_ROWS]),
        "expected JSON lines or a JSON array of objects")
    if data is None:
        return None
    rows = data[:PEEK_ROWS]
    return DataInfo(where, _columns_of(rows), len(data), rows)
