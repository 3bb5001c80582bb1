"""What the benches' `--smoke` modes share: a tiny local model and a tiny corpus in place of the builtin
SmolLM2 and CHAMP (no download, no conversion, seconds to build). Not a bench.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["SMOKE_DOCS", "rpt_overrides", "tiny_corpus", "tiny_model"]

# Sixteen short documents with stable ids (the held-out split by doc_id is the same on every run).
SMOKE_DOCS = [f"Problem {i}: add {i} and {i + 1}. Solution: {i} plus {i + 1} is {2 * i + 1}, so the answer is "
              f"{2 * i + 1}." for i in range(16)]


def tiny_model(root: Path | str, chat_template: bool = True, **kwargs) -> Path:
    """A random 2-layer Qwen2 with GPT-2's tokenizer (tests/tiny_models.py), saved under `root`/tiny-model."""
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(Path(root) / "tiny-model", chat_template=chat_template, **kwargs)


def tiny_corpus(root: Path | str) -> Path:
    """`SMOKE_DOCS` as a JSONL corpus (`id`, `text`) under `root`; its path."""
    path = Path(root) / "smoke-corpus.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": f"doc{i}", "text": d}) + "\n" for i, d in enumerate(SMOKE_DOCS)),
                    encoding="utf-8")
    return path


def rpt_overrides(model: Path | str, corpus: Path | str) -> list[str]:
    """Recipe overrides that point an RPT/RLP recipe (or `python -m rl.demo`) at the tiny model and corpus:
    RPT row filters loose enough for short documents, 8 of them (2 held out), 2 rows each."""
    return ["--model_name_or_path", str(model), "--corpus", str(corpus), "--rpt_min_entropy", "0",
            "--rpt_max_per_doc", "2", "--rpt_min_context_tokens", "4", "--rpt_max_documents", "8",
            "--rpt_id_field", "id"]
