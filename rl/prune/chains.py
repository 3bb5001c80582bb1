"""Input rows for `rl prune`: question / reasoning chain / answer, from JSONL or `builtin:champ`.

JSONL: one object per line with string fields `question`, `reasoning`, `answer` (names configurable)
and an optional `id`; other fields are kept as the row's columns (what a reward sees when the policy
writes the chains, rl/prune/samples.py, where the reasoning field may be absent). `builtin:champ`:
the 270 CHAMP problems (PyPI champ-dataset 1.0.0, MIT), whose human-written solution steps (one per
line) are the chain and whose final answer is the answer, in the dataset's own order; ids
`champ/<problem id>`. Every problem is reported as one line naming file, line and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rl.errors import UserError

FIELDS = ("question", "reasoning", "answer")


@dataclass
class Chain:
    id: str
    question: str
    reasoning: str
    answer: str
    columns: dict = field(default_factory=dict)  # the row's other fields (the columns a reward sees)


def read_chains(spec: str, fields: tuple[str, str, str] = FIELDS, limit: int | None = None,
                need_reasoning: bool = True, flag: str = "--data") -> list[Chain]:
    """All rows of `spec` (first `limit`), checked; UserError naming the flag (`--data`, `--few-shot`),
    file/line/field on bad input. `need_reasoning=False` (the policy writes the chains) accepts rows
    without the reasoning field."""
    if spec.strip().lower() == "builtin:champ":
        rows = _champ()
    elif spec.strip().lower().startswith("builtin:"):
        raise UserError(f"{flag} {spec}: unknown builtin; the builtin chains are builtin:champ")
    else:
        rows = _jsonl(Path(spec).expanduser(), fields, need_reasoning, flag)
    out = []
    for chain in rows:
        if limit is not None and len(out) >= limit:
            break
        out.append(chain)
    if not out:
        raise UserError(f"{flag} {spec}: no rows; give a JSONL file with {', '.join(fields)} fields per line")
    return out


def _jsonl(path: Path, fields: tuple[str, str, str], need_reasoning: bool = True, flag: str = "--data"):
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory; give a .jsonl file" + (" or builtin:champ" if flag == "--data"
                                                                                else ""))
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file; give a .jsonl file" + (" or builtin:champ" if flag == "--data"
                                                                              else ""))
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{flag} {where}: not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                                "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UserError(f"{where}: not valid JSON ({exc.msg}); one JSON object per line") from None
            if not isinstance(row, dict):
                raise UserError(f"{where}: a JSON object with {', '.join(fields)} fields is needed")
            values = []
            for role, name in zip(FIELDS, fields):
                if role == "reasoning" and not need_reasoning and name not in row:
                    values.append("")
                    continue
                if name not in row:
                    raise UserError(f"{where}: no {name!r} field (the {role}); every row needs "
                                    f"{', '.join(repr(f) for f in fields)}, or name the field with --{role}-field")
                if not isinstance(row[name], str):
                    raise UserError(f"{where}: field {name!r} must be a string, not {type(row[name]).__name__}")
                values.append(row[name])
            columns = {k: v for k, v in row.items() if k not in fields and k != "id"}
            chain = Chain(str(row.get("id", where)), *values, columns)
            yield check_chain(chain, where, fields, need_reasoning)


def check_chain(chain: Chain, where: str, fields: tuple[str, str, str] = FIELDS, need_reasoning: bool = True) -> Chain:
    """Refuse an empty question, chain or answer (nothing to ask / prune / score)."""
    if not chain.question.strip():
        raise UserError(f"{where}: field {fields[0]!r} is empty; a question is needed")
    if need_reasoning and not chain.reasoning.strip():
        raise UserError(f"{where}: field {fields[1]!r} is empty; a chain with at least one token is needed")
    if not chain.answer.strip():
        raise UserError(f"{where}: field {fields[2]!r} is empty; pruning keeps the answer's likelihood, so an answer "
                        "is needed")
    return chain


def _champ():
    try:
        import champ_dataset
    except ImportError as exc:
        raise UserError("builtin:champ needs the champ-dataset package: pip install champ-dataset==1.0.0") from exc
    for pid, p in champ_dataset.load("v0").problems.items():
        steps = "\n".join(s.text.strip() for s in p.solution.steps if s.text and s.text.strip())
        if steps and (p.answer or "").strip():
            yield Chain(f"champ/{pid}", p.text.strip(), steps, p.answer.strip())


def check_fits(enc_len: int, max_len: int | None, chain_id: str, chain_tokens: int) -> None:
    """Refuse a row longer than the pruner's context (it could not be scored in one forward)."""
    if max_len and enc_len > max_len:
        raise UserError(f"row {chain_id}: question + chain ({chain_tokens} tokens) + answer is {enc_len} tokens, "
                        f"longer than the model's context of {max_len}; shorten the chain or use a longer-context model")
