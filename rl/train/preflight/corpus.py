"""RPT data built from the recipe's `corpus` at the start of the run (or reused from <output_dir>/rpt-data):
the corpus's first document, the RPT build settings, the proxy model and the prompt-length bound.
"""

from __future__ import annotations

import math
from pathlib import Path

from rl.data.rpt import make_prompt, uses_chat
from rl.train.preflight.dataset_peek import DataInfo, peek_dataset
from rl.train.preflight.models import ModelInfo, check_model, prompt_tokens
from rl.train.preflight.report import Report, exc_summary
from rl.errors import UserError
from rl.data.corpus import read_corpus
from rl.data.loading import rpt_change, rpt_config_for_run

# Columns of the rows `rl data rpt` builds (rl/data/rpt.py).
RPT_COLUMNS = ("prompt", "rpt_format", "context", "continuation", "boundaries", "entropy", "doc_id", "position")


def rpt_build_config(view, policy: ModelInfo | None, chat: str):
    """The RPTBuildConfig `rl train` would build from this recipe (the same mapping: rl.data.loading)."""
    model_path = policy.path if policy is not None and policy.path else view.model_name_or_path
    return rpt_config_for_run(view, model_path, None, chat=chat)


def check_corpus(report: Report, view, corpus: str, policy: ModelInfo | None) -> DataInfo | None:
    """RPT data built from `corpus` at the start of the run (or reused from <output_dir>/rpt-data)."""
    from rl.data.rpt import saved_build_config

    from rl.data.rpt import check_rpt_output

    tok = policy.tokenizer if policy is not None else None
    built = Path(str(view.output_dir)) / "rpt-data"
    saved = saved_build_config(built)
    chat = ("yes" if getattr(tok, "chat_template", None) else "no") if tok is not None else (saved or {}).get("chat")
    current = None
    try:
        current = rpt_build_config(view, policy, chat or "auto").fingerprint()
    except Exception as exc:  # noqa: BLE001 - an unreadable corpus dir: reported below by the corpus read
        report.note(f"RPT data: the corpus files could not be listed ({exc_summary(exc)})")
    if saved is not None and current is not None and saved == current:
        report.note(f"RPT data already built in {built} from these settings and corpus files; the run reuses it")
        return peek_dataset(report, str(built), "RPT data (built from the corpus)")
    if saved is not None and current is not None:
        report.note(f"RPT data in {built} does not match the run ({rpt_change(saved, current)}); the run rebuilds it")
    try:
        check_rpt_output(rpt_build_config(view, policy, "auto"), built, "output_dir (its rpt-data)",
                         overwrite_flag=None)
    except UserError as exc:
        report.problem(f"{exc} (the run would build RPT data there)")
    try:
        rpt_build_config(view, policy, "auto").validate()
    except UserError as exc:
        report.problem(f"RPT build settings: {exc}")
    proxy = policy
    if view.proxy_model:
        proxy = check_model(report, "proxy model", str(view.proxy_model), view)
    elif policy is not None:
        report.add("proxy model", "the policy model itself (proxy_model: null)")
    if proxy is not None and proxy.max_positions and view.rpt_window_tokens > proxy.max_positions:
        report.problem(f"rpt_window_tokens {view.rpt_window_tokens} exceeds the proxy model's "
                       f"{proxy.max_positions} positions")
    data = DataInfo(f"corpus {corpus}", list(RPT_COLUMNS), None, [])  # built when the run starts
    # the rows' prompt around an empty context, made as `rl data rpt` makes it (rl/data/rpt.py make_prompt)
    try:
        cfg = rpt_build_config(view, policy, chat or "auto")
    except Exception:  # noqa: BLE001 - unreadable corpus files: reported by the corpus read below
        cfg = None
    if cfg is not None:
        _prompt_bound(data, view, cfg, tok)
    try:
        first = next(iter(read_corpus(corpus, text_field=getattr(view, "rpt_text_field", "text"),
                                      id_field=getattr(view, "rpt_id_field", None))), None)
    except UserError as exc:
        report.problem(f"{exc} (prepare it as the recipe header says)")
        return data  # the columns RPT rows will have are known anyway
    except Exception as exc:  # noqa: BLE001
        report.problem(f"corpus {corpus!r}: cannot be read ({exc_summary(exc)})")
        return data
    if first is None:
        report.problem(f"corpus {corpus!r}: no documents")
        return data
    report.add("corpus", f"{corpus}: first document {first.doc_id!r} ({len(first.text):,} characters); RPT data "
               f"is built into {built} when the run starts (proxy entropy {view.rpt_entropy}"
               + (f" top-{view.rpt_top_k}" if view.rpt_entropy == "topk" else "")
               + f" >= {view.rpt_min_entropy} nats, at most {view.rpt_max_per_doc} positions/document)")
    return data


def _prompt_bound(data: DataInfo, view, cfg, tok) -> None:
    """The longest prompt RPT rows can have: `rpt_max_context_tokens` plus the prompt made around an empty
    context exactly as `rl data rpt` makes it (rl/data/rpt.py make_prompt), tokenized when the policy's
    tokenizer is at hand, else estimated."""
    use_chat = uses_chat(cfg.chat, tok) if tok is not None else cfg.chat != "no"  # no tokenizer: assume the template
    empty = make_prompt(cfg.format, cfg.prompt_template, "", use_chat)
    layout = f"{cfg.format} prompt" + (" in the chat template" if isinstance(empty, list) else " as plain text")
    if tok is not None:
        overhead = prompt_tokens(tok, empty)
        how = f"{layout} around the context, tokenized"
    else:
        text = empty if isinstance(empty, str) else "".join(str(m.get("content", "")) for m in empty)
        overhead = math.ceil(len(text) / 3) + (32 if isinstance(empty, list) else 1)
        how = f"{layout} around the context at 3 characters/token" + (
            " + 32 for the chat template" if isinstance(empty, list) else " + 1 special token") + ", estimated"
    data.max_prompt_tokens = view.rpt_max_context_tokens + overhead
    data.prompt_bound_note = f"rpt_max_context_tokens {view.rpt_max_context_tokens} + {overhead}: {how}"
