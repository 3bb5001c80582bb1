"""Loading and checking the training dataset of `rl train`.

Loads `dataset_path` (save_to_disk dir, .jsonl, .parquet) or builds RPT data from `corpus` (main
process first; others reuse it when the build settings match), holds out whole documents for eval,
and checks, before any model loads, that every reward finds the columns and row values it needs.
"""

from __future__ import annotations

import inspect
import logging
import zlib
from pathlib import Path

from rl.errors import UserError
from rl.data.fingerprint import describe_change
from rl.data.settings import config_from_recipe

logger = logging.getLogger(__name__)

def read_dataset(path: str, field: str = "dataset_path"):
    """Read a save_to_disk dir, .jsonl or .parquet file (a Dataset or DatasetDict), refusing empty,
    non-UTF-8 or malformed data with one line that starts with `field` (the flag or recipe field)."""
    from datasets import load_dataset, load_from_disk

    p = Path(path)
    if not p.exists():
        raise UserError(f"{field}: {path} does not exist (build one with `rl data rpt`)")
    if p.is_file() and p.stat().st_size == 0:
        raise UserError(f"{field}: {path} is empty (0 bytes); build the data with `rl data rpt` or point at "
                        "a non-empty .jsonl/.parquet file or save_to_disk dir")
    if p.is_file() and p.suffix in (".jsonl", ".json"):
        # pyarrow's JSON reader does not validate UTF-8: a bad byte would only fail when the row is
        # read, mid-training. One streaming decode pass (fast) finds it now, with its line.
        problem = _first_non_utf8_line(p)
        if problem:
            raise UserError(f"{field}: {problem}; re-encode the file as UTF-8")
    if p.is_dir() and _saved_dataset_is_empty(p):
        raise UserError(f"{field}: {path} is an empty dataset (0 rows); rebuild it with `rl data rpt`")
    try:
        if p.is_dir():
            data = load_from_disk(str(p))
        elif p.suffix == ".jsonl" or p.suffix == ".json":
            data = load_dataset("json", data_files=str(p), split="train")
        elif p.suffix == ".parquet":
            data = load_dataset("parquet", data_files=str(p), split="train")
        else:
            raise UserError(f"{field}: {path}: expected a save_to_disk dir, .jsonl or .parquet file")
    except UserError:
        raise
    except Exception as exc:  # datasets raises many types for unreadable data
        if p.is_file() and p.suffix in (".jsonl", ".json"):
            problem = _first_bad_jsonl_line(p)
            if problem:
                raise UserError(f"{field}: {problem}; fix or remove that line") from None
        lines = str(exc).strip().splitlines()
        detail = f"{exc.__class__.__name__}: {lines[0]}" if lines else exc.__class__.__name__
        raise UserError(f"{field}: {path}: cannot be read ({detail})") from None
    return data


def load_dataset_path(path: str):
    """Load a train (and optional eval) split from a save_to_disk dir, .jsonl or .parquet file."""
    from datasets import DatasetDict

    data = read_dataset(path)
    if isinstance(data, DatasetDict):
        train = data["train"] if "train" in data else data[list(data)[0]]
        evaluation = data.get("test") or data.get("validation")
        return train, evaluation
    return data, None


def _first_non_utf8_line(path: Path, chunk: int = 1 << 22) -> str | None:
    """`FILE:LINE: not UTF-8 ...` for the first invalid UTF-8 byte of a text file, else None (streams the file)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    newlines = 0
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk)
            try:
                decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                line = newlines + exc.object[: exc.start].count(b"\n") + 1
                return f"{path}:{line}: not UTF-8 text ({exc.reason})"
            if not data:
                return None
            newlines += data.count(b"\n")


def _saved_dataset_is_empty(path: Path) -> bool:
    """A `save_to_disk` directory whose splits hold no data files (datasets cannot even load those)."""
    import json

    states = list(path.glob("state.json")) or list(path.glob("*/state.json"))
    if not states:
        return False
    try:
        return all(not json.loads(s.read_text(encoding="utf-8")).get("_data_files") for s in states)
    except (OSError, ValueError, AttributeError):
        return False


def _first_bad_jsonl_line(path: Path) -> str | None:
    """`FILE:LINE: what is wrong` for the first line of a JSON-lines file that is not a JSON object, else None."""
    import json

    seen = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            seen += 1
            try:
                record = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
            except UnicodeDecodeError as exc:
                return f"{path}:{lineno}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            except ValueError as exc:
                return f"{path}:{lineno}: not valid JSON ({getattr(exc, 'msg', exc)})"
            if not isinstance(record, dict):
                return f"{path}:{lineno}: expected a JSON object per line, got {type(record).__name__}"
    if not seen:
        return f"{path}: has no rows (only blank lines)"
    return None


def split_by_document(dataset, fraction: float, seed: int):
    """Hold out whole documents (by `doc_id` hash) so eval positions never share a document with train."""
    if fraction <= 0:
        return dataset, None
    if "doc_id" not in dataset.column_names:
        parts = dataset.train_test_split(test_size=fraction, seed=seed)
        return parts["train"], parts["test"]
    bucket = [zlib.crc32(f"{seed}:{d}".encode()) % 10_000 < fraction * 10_000 for d in dataset["doc_id"]]
    train = dataset.select([i for i, b in enumerate(bucket) if not b])
    evaluation = dataset.select([i for i, b in enumerate(bucket) if b])
    return train, (evaluation if len(evaluation) else None)


def prepare_dataset(script_args, training_args, model_path: str, tokenizer):
    """The train/eval datasets of the run: `dataset_path`, or built from `corpus` (main process first)."""
    from accelerate import PartialState

    if script_args.dataset_path:
        train_ds, eval_ds = load_dataset_path(script_args.dataset_path)
    elif script_args.corpus:
        out = Path(training_args.output_dir) / "rpt-data"
        from rl.data.rpt import build_rpt_dataset

        cfg = rpt_config_for_run(script_args, model_path, tokenizer)
        if cfg.chat == "no" and cfg.format == "reasoning":
            logger.warning("the tokenizer of %s has no chat template: RPT prompts will be plain text "
                           "(instruction + context), not chat messages", model_path)
        proxy_flag = "proxy_model" if script_args.proxy_model else "model_name_or_path"
        # Decided on every rank before any rank builds: reuse only data built from exactly these
        # settings and input files; a rebuild replaces only a previous `rl data rpt` output.
        reuse = rpt_reuse_decision(cfg, out)
        with PartialState().main_process_first():
            if PartialState().is_main_process and not reuse[0]:
                logger.info("building RPT data in %s (%s)", out, reuse[1])
                _, summary = build_rpt_dataset(cfg, out, flag="output_dir (its rpt-data)", proxy_flag=proxy_flag)
                logger.info("RPT data built in %s\n%s\nwrote %s", out, summary.format(), ", ".join(summary.files))
            elif reuse[0]:
                logger.info("reusing RPT data in %s (same build settings and corpus files)", out)
        train_ds, eval_ds = load_dataset_path(str(out))
    else:
        raise UserError("recipe: set `dataset_path` (a dataset from `rl data rpt`) or `corpus` (to build one)")
    if eval_ds is None and script_args.eval_fraction > 0:
        train_ds, eval_ds = split_by_document(train_ds, script_args.eval_fraction, script_args.rpt_seed)
    if len(train_ds) == 0:
        raise UserError(f"dataset: the train split is empty ({script_args.dataset_path or script_args.corpus})")
    return _fit_prompts_to_tokenizer(train_ds, tokenizer), (
        _fit_prompts_to_tokenizer(eval_ds, tokenizer) if eval_ds is not None else None
    )


def _chat_for(script_args) -> str | None:
    """RLP rows: the recipe's `rlp_thought_prompt` when it is not `auto` (yes/no), else None."""
    choice = getattr(script_args, "rlp_thought_prompt", "auto")
    if script_args.rpt_format != "rlp" or choice == "auto":
        return None
    return "yes" if choice == "chat" else "no"


def rpt_config_for_run(script_args, model_path: str, tokenizer, *, chat: str | None = None):
    """The RPTBuildConfig `rl train` builds `<output_dir>/rpt-data` with: the chat form from the
    policy's tokenizer, or `chat` when given (the dry run may have no tokenizer); every other setting is
    its `rpt_*` recipe field (rl/data/settings.py). `rl train --dry-run` uses it too."""
    return config_from_recipe(
        script_args, corpus=script_args.corpus, proxy_model=script_args.proxy_model or model_path,
        chat=_chat_for(script_args) or chat or ("yes" if getattr(tokenizer, "chat_template", None) else "no"),
    )


def rpt_reuse_decision(cfg, out: Path) -> tuple[bool, str]:
    """(reuse?, why) for RPT data at `out`: reused only when its rpt_build.json records exactly these
    settings and input files (rl/data/fingerprint.py). Otherwise it must be rebuilt, which is allowed
    only over a previous `rl data rpt` output: anything else at `out` is a one-line UserError, before
    any model loads."""
    from rl.data.rpt import check_rpt_output, saved_build_config

    cfg.validate()
    current = cfg.fingerprint()
    saved = saved_build_config(out)
    if saved == current:
        return True, "same build settings and corpus files"
    check_rpt_output(cfg, out, "output_dir (its rpt-data)", overwrite_flag=None)
    return False, rpt_change(saved, current)


def rpt_change(saved: dict | None, current: dict) -> str:
    """Why saved RPT data does not match the run's settings, in a few words."""
    if saved is None:
        return "no RPT data there yet"
    if saved.get("builder") != current.get("builder"):
        return (f"built by an older rl data rpt (builder {saved.get('builder', 1)}, now {current.get('builder')}: "
                "the proxy's entropies are computed differently since)")
    changed = sorted(k for k in set(saved) | set(current) if k != "inputs" and saved.get(k) != current.get(k))
    if changed:
        return f"built with other settings: {', '.join(changed)}"
    inputs_then, inputs_now = saved.get("inputs") or {}, current.get("inputs") or {}
    if inputs_then.get("corpus") != inputs_now.get("corpus"):
        return describe_change(inputs_then.get("corpus"), inputs_now.get("corpus") or {}) + " since it was built"
    return "the proxy model's files changed since it was built"


def _fit_prompts_to_tokenizer(dataset, tokenizer):
    """Chat-message prompts with a tokenizer that has no chat template: fall back to plain text, once, loudly."""
    if "prompt" not in dataset.column_names or len(dataset) == 0:
        return dataset
    if isinstance(dataset[0]["prompt"], list) and not getattr(tokenizer, "chat_template", None):
        logger.warning(
            "the dataset's prompts are chat messages but the tokenizer has no chat template: "
            "using the message text as a plain-text prompt"
        )
        return dataset.map(lambda row: {"prompt": "\n\n".join(m["content"] for m in row["prompt"])})
    return dataset


def check_columns(dataset, reward_funcs, where: str) -> None:
    """Columns and rows the rewards need, checked on the whole dataset before any model loads."""
    cols = set(dataset.column_names)
    if "prompt" not in cols:
        raise UserError(f"{where}: dataset has no `prompt` column (columns: {sorted(cols)}); every row needs "
                        "the prompt to generate from")
    from rewards.registry import required_columns, spec_of

    for name, needed in required_columns(reward_funcs).items():
        missing = [c for c in needed if c not in cols]
        if missing:
            raise UserError(
                f"{where}: reward `{name}` needs column(s) {missing}, the dataset has {sorted(cols)}; add them "
                "(RPT data: build it with `rl data rpt`) or choose other reward_funcs"
            )
    for func in reward_funcs:
        spec = spec_of(func)
        if spec is not None and spec.check_dataset is not None:
            spec.check_dataset(dataset, where)


def check_reward_signatures(funcs, names) -> None:
    """Every reward must take TRL's keyword call f(prompts=..., completions=..., ...): refuse others up front."""
    names = [names] if isinstance(names, str) else list(names)
    for func, name in zip(funcs, names):
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):  # builtins without a signature (exec, eval, ...) are no reward functions
            params = None
        if params is None or not any(
            p.kind is p.VAR_KEYWORD or (p.name == "completions" and p.kind is not p.POSITIONAL_ONLY) for p in params
        ):
            raise UserError(
                f"reward_funcs: {name!r} is not a reward function: TRL calls it as f(prompts=..., completions=..., "
                "completion_ids=..., **columns), so it needs a `completions` parameter or **kwargs"
            )
