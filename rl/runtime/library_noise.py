"""Library notices `rl train` silences because the user can do nothing about them.

Each is filtered by its exact message, category and emitting module, never by category alone:

* transformers 5.x renamed `gradient_checkpointing` to `activation_checkpointing` and warns
  (FutureWarning, transformers.training_args) whenever the old field is set. TRL's GRPOConfig sets
  the old field by default, so every run whose recipe does not name either field warned. Dropped
  only when the recipe and the overrides do not name `gradient_checkpointing(_kwargs)`: a user
  who writes the old name still learns it is deprecated.
* `PreTrainedModel.is_gradient_checkpointing`, `gradient_checkpointing_disable` and
  `gradient_checkpointing_enable` (FutureWarning, transformers.modeling_utils: renamed to
  `*activation_checkpointing*`) are called by TRL (around every generation and the forking-mask
  pre-pass) and peft (LoRA wrapping): library code talking to library code.
* "[INFO] Running in WANDB offline mode" is a `print` at import of
  transformers.integrations.integration_utils whenever WANDB_MODE=offline, whatever `report_to`
  says (the demo recipe's `env:` sets that mode). `import_integrations_quietly` imports that module
  before the recipe's `env:` applies and drops exactly that line; W&B's own messages (and
  rl.runtime.faults's offline fallback warning) still report the mode of a run that logs to W&B.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import warnings
from typing import Iterator, Sequence

WANDB_OFFLINE_BANNER = "[INFO] Running in WANDB offline mode"
_INTEGRATIONS = "transformers.integrations.integration_utils"
_RENAMED_FIELDS = ("gradient_checkpointing", "gradient_checkpointing_kwargs")
_MODEL_RENAMES = r"`(is_gradient_checkpointing|gradient_checkpointing_enable|gradient_checkpointing_disable)` is deprecated"


def import_integrations_quietly() -> None:
    """Import transformers' reporting integrations with their WANDB offline banner dropped (other output kept)."""
    if _INTEGRATIONS in sys.modules:
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            importlib.import_module(_INTEGRATIONS)
    except Exception:  # noqa: BLE001 - the real import later reports any real problem
        pass
    finally:
        kept = [line for line in captured.getvalue().splitlines(keepends=True) if line.strip() != WANDB_OFFLINE_BANNER]
        sys.stdout.write("".join(kept))


def names_field(argv: Sequence[str], field: str) -> bool:
    """Whether the command line (`--field`, `--field=v`) or the `--config` recipe sets `field`."""
    argv = list(argv)
    if any(tok == f"--{field}" or str(tok).startswith(f"--{field}=") for tok in argv):
        return True
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        import yaml

        try:
            with open(argv[argv.index("--config") + 1], encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except (OSError, ValueError, yaml.YAMLError):
            return False  # the recipe parser reports an unreadable recipe
        return isinstance(data, dict) and field in data
    return False


@contextlib.contextmanager
def quiet_checkpointing_rename(argv: Sequence[str]) -> Iterator[None]:
    """Around recipe parsing: drop transformers' `gradient_checkpointing` rename warning when only TRL's default set it."""
    with warnings.catch_warnings():
        for field in _RENAMED_FIELDS:
            if not names_field(argv, field):
                warnings.filterwarnings("ignore", message=rf"`{field}` is deprecated", category=FutureWarning,
                                        module=r"transformers\.training_args")
        yield


@contextlib.contextmanager
def quiet_library_deprecations() -> Iterator[None]:
    """Around building and training the trainer: drop the renamed model methods TRL and peft call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_MODEL_RENAMES, category=FutureWarning,
                                module=r"transformers\.modeling_utils")
        yield
