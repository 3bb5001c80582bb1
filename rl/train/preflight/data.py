"""The training data as the run will see it: `dataset_path` (only its features and first rows are
read), or the `corpus` spec plus the RPT build settings when the data is built at the start of the
run; the columns the rewards need, and the prompts' form and token lengths.
"""

from __future__ import annotations

import math

from rl.train.preflight.corpus import check_corpus
from rl.train.preflight.dataset_peek import DataInfo, peek_dataset
from rl.train.preflight.models import ModelInfo, prompt_tokens
from rl.train.preflight.report import Report, first_line
from rl.train.preflight.reward_checks import columns_needed, func_name, probe_rewards, run_reward_probes


def check_data(report: Report, view, funcs, policy: ModelInfo | None) -> DataInfo | None:
    dataset_path = getattr(view, "dataset_path", None)
    corpus = getattr(view, "corpus", None)
    if dataset_path:
        if corpus:
            report.note("both dataset_path and corpus are set: dataset_path is used, corpus is ignored")
        data = peek_dataset(report, str(dataset_path))
    elif corpus:
        data = check_corpus(report, view, str(corpus), policy)
    else:
        report.problem("recipe: set `dataset_path` (a prepared dataset) or `corpus` (to build RPT data)")
        return None
    if data is None:
        return None
    where = data.source
    cols = set(data.columns)
    if "prompt" not in cols:
        report.problem(f"{where}: no `prompt` column (columns: {sorted(cols)})")
    required, optional = columns_needed(funcs)
    lacking = set()
    for name, needed in required.items():
        missing = [c for c in needed if c not in cols]
        if missing:
            lacking.add(name)
            report.problem(f"{where}: reward `{name}` needs column(s) {missing}; the dataset has {sorted(cols)}")
    for name, maybe in optional.items():
        missing = [c for c in maybe if c not in cols and c not in required.get(name, [])]
        if missing:
            report.note(f"reward `{name}` reads optional column(s) {missing}, which the dataset lacks")
    if data.rows:
        _check_prompts(report, data, policy)
        run_reward_probes(report, funcs, data.rows)
        probe_rewards(report, [f for f in funcs if func_name(f) not in lacking], data.rows)
    rows = f"{data.num_rows:,} rows" if data.num_rows is not None else "rows counted when built"
    report.add("data", f"{where}: {rows}; columns {', '.join(data.columns)}")
    return data


def _check_prompts(report: Report, data: DataInfo, policy: ModelInfo | None) -> None:
    tok = policy.tokenizer if policy is not None else None
    lengths = []
    for i, row in enumerate(data.rows):
        prompt = row.get("prompt")
        is_chat = isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt)
        if not isinstance(prompt, str) and not is_chat:
            report.problem(f"{data.source}: row {i}: `prompt` must be text or a list of chat messages "
                           f"({{role, content}}), got {type(prompt).__name__}")
            return
        if tok is None:  # no tokenizer offline: estimate (3 characters/token, + 32 for a chat template)
            text = prompt if isinstance(prompt, str) else "".join(str(m.get("content", "")) for m in prompt)
            lengths.append(math.ceil(len(text) / 3) + (32 if is_chat else 0))
            continue
        if is_chat:
            if not getattr(tok, "chat_template", None):
                report.note(f"{data.source}: prompts are chat messages but the tokenizer has no chat template; "
                            "the run uses the message text as a plain prompt")
                return
            try:
                lengths.append(prompt_tokens(tok, prompt))
            except Exception as exc:  # noqa: BLE001
                report.problem(f"{data.source}: row {i}: the chat template fails on this prompt ({first_line(exc)})")
                return
        else:
            lengths.append(prompt_tokens(tok, prompt))
    if lengths:
        data.max_prompt_tokens = max(lengths)
        data.prompt_bound_note = f"longest of the first {len(lengths)} prompts" + (
            "" if tok is not None else ", estimated at 3 characters/token without the tokenizer")
