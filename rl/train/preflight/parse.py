"""Recipe parsing as the run's machines would do it, from this (possibly GPU-less) machine.

* `parse_for_target`: `rl.train.recipe.parse_recipe` for the run's machines (an explicit
  `rl.train.preflight.TargetMachine`), without initialising DeepSpeed;
* the CPU-machine shims: raw field values after file + overrides without the dataclasses'
  validation (`raw_value`, `raw_namespace`), every bad recipe field reported on its own
  (`check_fields`), and the merged view of all parsed fields the checks read (`target_view`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

from rl.errors import UserError
from rl.train.preflight.plan import recipe_view
from rl.train.preflight.report import Report, exc_summary
from rl.runtime.strict_yaml import load_recipe_file
from rl.train.preflight.rules import BatchRuleError, TargetMachine, override_value

class ArgError(Exception):
    pass


def raise_error(message: str):
    raise ArgError(message)


@contextlib.contextmanager
def restored_environ():
    """Restore os.environ as it was on entry (recipes' `env:` sections change it)."""
    saved_env = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)


def parse_for_target(argv: list[str], world_size: int = 1):
    """`rl.train.recipe.parse_recipe(argv)` for the run's machines (`TargetMachine`: its world size, bf16
    GPUs), without initialising DeepSpeed (the `deepspeed` field is checked separately and restored on
    the result); the recipe's `env:` changes os.environ only for the parse."""
    from rl.train.recipe import parse_recipe

    raw_ds = raw_value(argv, "deepspeed")
    with restored_environ(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", FutureWarning)  # TRL's own gradient_checkpointing default warns
        script_args, training_args, model_args = parse_recipe(list(argv) + ["--deepspeed", ""],
                                                              target=TargetMachine(world_size=world_size))
    training_args.deepspeed = raw_ds
    return script_args, training_args, model_args


def _recipe_parser(values: dict):
    """rl's recipe parser with `values` (a recipe file's fields, less `env`) as defaults; errors raise ArgError."""
    from rl.train.recipe import make_parser

    parser = make_parser()
    parser.error = raise_error  # type: ignore[method-assign]
    parser.set_defaults_with_config(**{k: v for k, v in values.items() if k != "env"})
    return parser


def raw_value(argv: list[str], name: str):
    """The value of one recipe field after file + overrides, without building the dataclasses."""
    argv = list(argv)
    data = {}
    if "--config" in argv:
        i = argv.index("--config")
        data = load_recipe_file(argv[i + 1])
        del argv[i:i + 2]
    ns, _ = _recipe_parser(data).parse_known_args(argv)
    return getattr(ns, name, None)


def raw_namespace(clean: dict, overrides: list[str], report: Report):
    """Every field after file + overrides, as argparse sees them (no dataclass __post_init__)."""
    try:
        ns, unknown = _recipe_parser(clean).parse_known_args(overrides)
    except ArgError as exc:
        report.problem(f"command-line override: {exc}")
        return None
    if unknown:
        report.problem(f"command-line override: unknown argument(s) {' '.join(unknown)} (see rl train --help-fields)")
    return ns


def raw_field(clean: dict, overrides: list[str], name: str):
    value = override_value(overrides, name)
    return value if value is not None else clean.get(name)


def script_has_field(name: str) -> bool:
    from rl.train.config import ScriptArguments

    return name in {f.name for f in dataclasses.fields(ScriptArguments)}


def check_fields(path: Path, data: dict, report: Report) -> tuple[dict, list[str]]:
    """Fields of the file, each checked on its own so that every bad one is reported: (good fields, bad keys)."""
    from rl.train.recipe import check_fields, make_parser

    parser = make_parser()
    bad_keys = []
    for key, value in data.items():
        try:
            check_fields(path, {key: value}, parser)
        except UserError as exc:
            report.problem(str(exc))
            bad_keys.append(key)
    return {k: v for k, v in data.items() if k not in bad_keys}, bad_keys


def target_view(path: Path, clean: dict, bad_keys: list[str], overrides: list[str], ns, world: int,
                report: Report) -> tuple[SimpleNamespace | None, str | None]:
    """The full TRL parse for the target machines, merged over the raw namespace `ns`.

    Returns (view, batch error): the view is `ns` itself when TRL's validation fails (and None
    when `ns` is); a batch rule the parse refused (`BatchRuleError`) is returned, not reported: the
    preflight's batch checks report it from the raw values, with the batch arithmetic beside it.
    """
    if ns is None:
        return None, None
    parsed, trl_batch_error = None, None
    recipe_path = path
    tmp = None
    if bad_keys:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8")
        import yaml

        yaml.safe_dump(clean, tmp)
        tmp.close()
        recipe_path = Path(tmp.name)
    try:
        parsed = parse_for_target(["--config", str(recipe_path), *overrides], world)
    except UserError as exc:
        msg = str(exc).replace(str(recipe_path), str(path))
        msg = msg if msg.startswith(str(path)) else f"{path}: {msg}"
        if isinstance(exc, BatchRuleError):
            trl_batch_error = msg  # reported only if the preflight's checks find nothing
        else:
            report.problem(msg)
    except Exception as exc:  # noqa: BLE001 - any other failure of TRL's validation is a finding
        report.problem(f"{path}: {exc_summary(exc)}")
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    if parsed is None:
        return ns, trl_batch_error
    view = recipe_view(parsed, ns)
    view._trl_generation_batch_size = parsed[1].generation_batch_size  # what TRL derived for the run's world size
    return view, trl_batch_error
