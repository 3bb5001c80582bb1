"""Recipe loading for `rl train`: the parser, the file checks and `parse_recipe`.

The dataclasses are rl/train/config.py. Command-line flags override the file exactly as in TRL
(`rl train --config r.yaml --learning_rate 1e-6`). Before TRL sees the file we validate it
ourselves, so that a typo becomes one line naming the file and field (with the closest valid name)
instead of an argparse usage dump or a traceback.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from trl import ModelConfig, TrlParser

from rl.errors import UserError
from rl.runtime.strict_yaml import load_recipe_file
from rl.runtime.values import recipe_value_problem
from rl.train.config import EntropyGRPOConfig, ScriptArguments
from rl.train.dynamic_sampling import metric_problem
from rl.train.launch_section import check_launch_section
from rl.train.preflight.rules import (
    BatchRuleError,
    TargetMachine,
    cli_overrides,
    parsing_for,
    read_deepspeed_config,
)

RECIPE_DATACLASSES = (ScriptArguments, EntropyGRPOConfig, ModelConfig)


class RecipeParser(TrlParser):
    """TRL's parser for recipes, less their `launch:` section: that is how `rl submit` and the dry run
    launch the recipe (rl.train.launch_section), not a training field."""

    def set_defaults_with_config(self, **kwargs) -> list[str]:
        kwargs.pop("launch", None)
        return super().set_defaults_with_config(**kwargs)


def make_parser() -> TrlParser:
    return RecipeParser(dataclass_types=list(RECIPE_DATACLASSES))


def check_fields(path: Path, data: dict[str, Any], parser: TrlParser) -> None:
    """Unknown fields (with the closest valid name) and values of the wrong type, before TRL parses."""
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    for key, value in data.items():
        if key == "env":
            if not isinstance(value, dict):
                raise UserError(f"{path}: field 'env' must be a mapping of VARIABLE: value")
            continue
        if key == "launch":
            check_launch_section(str(path), value)
            continue
        if key not in actions:
            close = difflib.get_close_matches(str(key), list(actions), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"{path}: unknown field '{key}'{hint}")
        action = actions[key]
        if value is None:
            continue
        if action.nargs in ("+", "*") and not isinstance(value, (list, str)):
            raise UserError(f"{path}: field '{key}' expects a list (e.g. {key}: [a, b]), got {value!r}")
        if action.nargs in ("+", "*") and isinstance(value, list):
            nested = [v for v in value if isinstance(v, (list, dict))]
            if nested:
                raise UserError(f"{path}: field '{key}' expects a list of plain values, got {nested[0]!r} in it")
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
                    converted = action.type(str(item) if not isinstance(item, str) else item)
                except (ValueError, TypeError, Exception):
                    raise UserError(f"{path}: field '{key}' expects {_type_name(action.type)}, got {item!r}") from None
                problem = recipe_value_problem(key, converted)  # NaN/inf, and values the run cannot use
                if problem:
                    raise UserError(f"{path}: field '{key}' {problem}, got {item!r}")


def _type_name(kind) -> str:
    name = getattr(kind, "__name__", "a value")
    return {"string_to_bool": "true or false", "float": "a number", "int": "an integer (whole number)",
            "str": "text"}.get(name, name)


def _check_overrides(argv: list[str], parser: TrlParser) -> None:
    """Unknown command-line overrides (closest valid flag) and mistyped values, as one line each."""
    options = {s: a for s, a in parser._option_string_actions.items() if s.startswith("--") and a.dest != "help"}
    for name, values in cli_overrides(argv):
        if not name:
            raise UserError(f"command line: unexpected value {values[0]!r}; overrides are --field value")
        action = options.get(name)
        if action is None:
            close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else "; see `rl train --help-fields`"
            raise UserError(f"command line: unknown override {name}{hint}")
        if action.nargs not in ("+", "*", "?") and action.nargs != 0 and len(values) != 1:
            raise UserError(f"command line: {name} takes one value, got {len(values)}")
        if action.choices is not None:
            for item in values:
                if item not in [str(c) for c in action.choices]:
                    raise UserError(f"command line: {name} must be one of {list(action.choices)}, got {item!r}")
        if callable(action.type):
            for item in values:
                try:
                    converted = action.type(item)
                except Exception:  # noqa: BLE001 - any conversion failure is a wrong type
                    raise UserError(f"command line: {name} expects {_type_name(action.type)}, got {item!r}") from None
                problem = recipe_value_problem(action.dest, converted)
                if problem:
                    raise UserError(f"command line: {name} {problem}, got {item!r}")


def _check_deepspeed(where: str, value: Any) -> None:
    """A `deepspeed` setting that names a JSON file (or holds inline JSON) that does not parse: one line."""
    _, problem = read_deepspeed_config(where, value)
    if problem:
        raise UserError(problem)


def _explain_trl_error(message: str) -> str:
    """Add the fix to TRL's batch-size messages (they name the numbers but not what to change)."""
    if "divisible by num_generations" in message:
        return (message.rstrip(".") + "; the generation batch is per_device_train_batch_size x number of processes "
                "x steps_per_generation (default: gradient_accumulation_steps): change one of them, or "
                "num_generations, so num_generations divides it")
    if "divisible by the global batch size" in message:
        return (message.rstrip(".") + "; the global batch is per_device_train_batch_size x number of processes: "
                "make generation_batch_size a multiple of it, or leave generation_batch_size unset")
    if "at least 2 generations" in message:
        return message.rstrip(".") + "; set num_generations to 2 or more"
    return message


def parse_recipe(argv: list[str], target: TargetMachine | None = None
                 ) -> tuple[ScriptArguments, EntropyGRPOConfig, ModelConfig]:
    """Parse `--config RECIPE.yaml` plus CLI overrides into the three recipe dataclasses.

    Raises UserError (one line) for a missing/malformed file, unknown or mistyped fields and bad
    overrides; TRL's own parser does the actual merge so the semantics stay TRL's. `target`: parse
    for other machines than this one (the dry run: their world size; bf16 GPUs, so a bf16 recipe
    is not refused on a CPU login node); None: this launch's own processes.
    """
    parser = make_parser()
    argv = list(argv)
    if "--config" in argv:
        idx = argv.index("--config")
        if idx + 1 >= len(argv):
            raise UserError("--config needs a recipe path")
        config_path = Path(argv[idx + 1])
        data = load_recipe_file(config_path)
        check_fields(config_path, data, parser)
        where = str(config_path)
    else:
        data, where = {}, "command line"
    _check_overrides(argv, parser)
    ds_overrides = [values for name, values in cli_overrides(argv) if name == "--deepspeed"]
    if ds_overrides:  # the last one wins, as in argparse
        _check_deepspeed("command line", ds_overrides[-1][0] if ds_overrides[-1] else None)
    else:
        _check_deepspeed(where, data.get("deepspeed"))
    # bf16 on the target's GPUs: transformers checks this machine's, so parse with bf16 off and put it back.
    bf16_back = None
    if target is not None and target.bf16_gpus and not _bf16_supported_here():
        bf16_back, argv = _bf16_setting(data, argv), argv + ["--bf16", "false"]
    try:
        with parsing_for(target):
            script_args, training_args, model_args = parser.parse_args_and_config(argv)
    except SystemExit as exc:  # argparse already printed the offending flag
        raise UserError("invalid command-line override (see the message above)") from exc
    except UserError as exc:  # a field value the dataclasses refuse: name the recipe too
        message = str(exc)
        kind = BatchRuleError if isinstance(exc, BatchRuleError) else UserError  # the dry run knows batch rules by type
        raise (exc if message.startswith(where) else kind(f"{where}: {message}")) from None
    except (ValueError, TypeError) as exc:
        lines = str(exc).strip().splitlines()
        raise UserError(f"{where}: {_explain_trl_error(lines[0] if lines else type(exc).__name__)}") from None
    ds_problem = metric_problem(training_args.dynamic_sampling, training_args.dynamic_sampling_metric,
                                script_args.reward_funcs)
    if ds_problem:  # needs the reward list, so after both dataclasses parsed
        raise UserError(f"{where}: {ds_problem}")
    if bf16_back is not None or (target is not None and target.bf16_gpus and not _bf16_supported_here()):
        # as TRL resolves it: unset means bf16 unless fp16
        training_args.bf16 = bf16_back if bf16_back is not None else not training_args.fp16
    return script_args, training_args, model_args


def _bf16_setting(data: dict, argv: list[str]) -> bool | None:
    """The recipe's `bf16` after overrides (None: unset, which TRL resolves to `not fp16`)."""
    values = [v for name, v in cli_overrides(argv) if name == "--bf16"]
    value = values[-1][0] if values and values[-1] else data.get("bf16")
    return None if value is None else str(value).lower() in ("true", "1", "yes")


def _bf16_supported_here() -> bool:
    from transformers.utils import is_torch_bf16_gpu_available

    return bool(is_torch_bf16_gpu_available())
