"""Recipe dataclasses and recipe loading for `rl train`.

A recipe is a TRL-style flat YAML file read by `trl.TrlParser` into three dataclasses:
`ScriptArguments` (data and rewards), `EntropyGRPOConfig` (TRL's GRPOConfig plus the forking-mask
fields) and TRL's `ModelConfig` (model path, dtype, LoRA). Command-line flags override the file
exactly as in TRL (`rl train --config r.yaml --learning_rate 1e-6`).

Before TRL sees the file we validate it ourselves, so that a typo becomes one line naming the file
and field (with the closest valid name) instead of an argparse usage dump or a traceback.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import GRPOConfig, ModelConfig, TrlParser

from rl.errors import UserError

DEFAULT_RPT_PROMPT = (
    'Complete the text under "### Context" by predicting its next token.\n'
    "Reason step by step about what most plausibly comes next: list a few candidate tokens and "
    "pick the most probable one.\n"
    "Put only the predicted token in \\boxed{}, copied exactly as it would appear in the text. "
    "A token may start with a space, as in \\boxed{ para}; never wrap it in \\text{}.\n\n"
    "### Context\n{context}"
)


@dataclass
class ScriptArguments:
    """Data and reward settings of a run (the part of a recipe that is not TRL's config)."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "An RPT dataset made by `rl data rpt` (a `save_to_disk` dir or a .jsonl file), or any "
            "dataset with a `prompt` column plus the columns your rewards need. Leave unset and set "
            "`corpus` to build the RPT dataset first."
        },
    )
    corpus: str | None = field(
        default=None,
        metadata={
            "help": "Corpus to build RPT data from when `dataset_path` is unset: `builtin:champ`, a .txt file "
            "or dir, a .jsonl/.parquet file with a `text` column, or a local HF dataset dir. The built "
            "dataset goes to `<output_dir>/rpt-data` and is reused if already there."
        },
    )
    proxy_model: str | None = field(
        default=None,
        metadata={
            "help": "Model whose next-token entropy chooses the training positions (the paper uses a small "
            "model of the same family). Default: the policy model itself."
        },
    )
    accelerate_config: str | None = field(
        default=None,
        metadata={"help": "Accelerate config this recipe is meant for (e.g. recipes/accelerate/zero3.yaml); "
                  "`rl train --dry-run` checks it."},
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["rpt"],
        metadata={
            "help": "Reward functions by registry name (`rpt`, ...) or dotted import path "
            "(`my_pkg.rewards.my_reward`), each with TRL's reward-function signature."
        },
    )
    rpt_entropy: str = field(
        default="topk",
        metadata={"help": "Entropy used to pick positions: `topk` (renormalised top-k, as in the paper) or `full`."},
    )
    rpt_top_k: int = field(default=16, metadata={"help": "k for `rpt_entropy: topk` (paper: 16)."})
    rpt_min_entropy: float = field(
        default=0.5, metadata={"help": "Keep only positions whose proxy next-token entropy (nats) is at least this."}
    )
    rpt_max_per_doc: int = field(default=8, metadata={"help": "At most this many positions sampled per document."})
    rpt_continuation_tokens: int = field(
        default=8, metadata={"help": "Ground-truth tokens kept after each position (the prefix-match targets)."}
    )
    rpt_max_context_tokens: int = field(
        default=512, metadata={"help": "Long contexts keep only their most recent this-many tokens."}
    )
    rpt_min_context_tokens: int = field(
        default=16, metadata={"help": "Positions with fewer preceding tokens than this are not used."}
    )
    rpt_window_tokens: int = field(
        default=1024, metadata={"help": "Proxy forward window (tokens); windows overlap by half."}
    )
    rpt_max_documents: int | None = field(
        default=None, metadata={"help": "Read at most this many documents from the corpus (None: all)."}
    )
    rpt_prompt_template: str = field(
        default=DEFAULT_RPT_PROMPT,
        metadata={"help": "Instruction with a `{context}` placeholder (RPT paper template v0 in spirit)."},
    )
    rpt_proxy_batch_size: int = field(default=4, metadata={"help": "Windows per proxy forward pass."})
    rpt_seed: int = field(default=0, metadata={"help": "Seed for sampling positions."})
    eval_fraction: float = field(
        default=0.0, metadata={"help": "Hold out this fraction of rows (by document) as an eval split."}
    )


@dataclass
class EntropyGRPOConfig(GRPOConfig):
    """TRL's GRPOConfig plus the forking-token mask ("Beyond the 80/20 Rule", arXiv 2506.01939).

    `top_entropy_quantile` keeps TRL's meaning: the fraction of completion tokens that receive
    policy gradient (0.2 in the paper; 1.0 turns the mask off).
    """

    entropy_mask_scope: str = field(
        default="step",
        metadata={
            "help": "`step`: choose the top-`top_entropy_quantile` tokens over every completion token of one "
            "optimizer step (all ranks, all accumulation micro-batches), from the policy's entropies at "
            "generation time. `micro_batch`: TRL / paper-code behaviour, per micro-batch."
        },
    )
    entropy_mask_normalize: str = field(
        default="kept",
        metadata={
            "help": "`kept`: average the policy loss over the kept tokens (paper Eq. 6). `all`: over all "
            "completion tokens, as TRL does (the update shrinks by about the kept ratio)."
        },
    )
    forking_table_steps: int = field(
        default=50,
        metadata={"help": "Every this many steps, log a W&B table of the most frequent forking tokens (0: never)."},
    )
    max_bad_steps: int = field(
        default=3,
        metadata={"help": "Stop with a clear error after this many consecutive steps with a NaN/inf loss."},
    )

    def __post_init__(self):
        if self.entropy_mask_scope not in ("step", "micro_batch"):
            raise UserError(
                f"entropy_mask_scope: expected `step` or `micro_batch`, got {self.entropy_mask_scope!r}"
            )
        if self.entropy_mask_normalize not in ("kept", "all"):
            raise UserError(
                f"entropy_mask_normalize: expected `kept` or `all`, got {self.entropy_mask_normalize!r}"
            )
        if not 0.0 < self.top_entropy_quantile <= 1.0:
            raise UserError(
                f"top_entropy_quantile: the fraction of tokens kept must be in (0, 1], got {self.top_entropy_quantile}"
            )
        super().__post_init__()


RECIPE_DATACLASSES = (ScriptArguments, EntropyGRPOConfig, ModelConfig)


def make_parser() -> TrlParser:
    return TrlParser(dataclass_types=list(RECIPE_DATACLASSES))


def load_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe with a safe YAML loader; one-line UserError naming the file (and line) on failure."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{where}: not valid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: recipe is not UTF-8 text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a YAML mapping of field: value, got {type(data).__name__}")
    return data


def _check_fields(path: Path, data: dict[str, Any], parser: TrlParser) -> None:
    """Unknown fields (with the closest valid name) and values of the wrong type, before TRL parses."""
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    for key, value in data.items():
        if key == "env":
            if not isinstance(value, dict):
                raise UserError(f"{path}: field 'env' must be a mapping of VARIABLE: value")
            continue
        if key not in actions:
            close = difflib.get_close_matches(str(key), list(actions), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"{path}: unknown field '{key}'{hint}")
        action = actions[key]
        if value is None:
            continue
        values = value if (action.nargs in ("+", "*") and isinstance(value, list)) else [value]
        if action.nargs not in ("+", "*") and isinstance(value, (list, dict)) and action.type not in (None, str):
            raise UserError(f"{path}: field '{key}' expects a single value, got a {type(value).__name__}")
        if action.choices is not None:
            for item in values:
                if str(item) not in [str(c) for c in action.choices]:
                    raise UserError(
                        f"{path}: field '{key}' must be one of {list(action.choices)}, got {item!r}"
                    )
        if callable(action.type):
            for item in values:
                if isinstance(item, (dict, list)):
                    continue
                try:
                    action.type(str(item) if not isinstance(item, str) else item)
                except (ValueError, TypeError, Exception):
                    kind = getattr(action.type, "__name__", "value")
                    raise UserError(f"{path}: field '{key}' expects {kind}, got {item!r}") from None


def parse_recipe(argv: list[str]) -> tuple[ScriptArguments, EntropyGRPOConfig, ModelConfig]:
    """Parse `--config RECIPE.yaml` plus CLI overrides into the three recipe dataclasses.

    Raises UserError (one line) for a missing/malformed file, unknown or mistyped fields and bad
    overrides; TRL's own parser does the actual merge so the semantics stay TRL's.
    """
    parser = make_parser()
    argv = list(argv)
    if "--config" in argv:
        idx = argv.index("--config")
        if idx + 1 >= len(argv):
            raise UserError("--config needs a recipe path")
        config_path = Path(argv[idx + 1])
        data = load_recipe_file(config_path)
        _check_fields(config_path, data, parser)
    try:
        script_args, training_args, model_args = parser.parse_args_and_config(argv)
    except SystemExit as exc:  # argparse already printed the offending flag
        raise UserError("invalid command-line override (see the message above)") from exc
    except UserError:
        raise
    except (ValueError, TypeError) as exc:
        raise UserError(f"recipe: {str(exc).splitlines()[0]}") from None
    return script_args, training_args, model_args
