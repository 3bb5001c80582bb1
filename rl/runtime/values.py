"""Number checks every command option and recipe field goes through, before any work starts.

One rule: a number the user gives is finite (NaN and inf refused) and in its range, checked where it
is read, and reported in one line naming the option or field.

* Command options: `Number(...)` is the argparse `type=` of every numeric option (`POSITIVE_INT`,
  `POSITIVE`, `NON_NEGATIVE`, `FRACTION`, ...); a bad value is an argparse error, which `rl.cli`
  prints as one line naming the subcommand and the option. `non_finite_options` is `rl.cli.main`'s
  net for any float option declared without one.
* Functions called from Python as well as from the CLI check their arguments with `check_number`.
* Recipe fields (YAML values and `--field value` overrides): `recipe_value_problem`, called by
  rl/train/recipe.py on each raw value after its type conversion and before TRL parses: every float
  field finite, and the fields in `RECIPE_RANGES` in their range (values the run cannot use, that
  TRL or peft would only refuse after the model loads, or never).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from rl.errors import UserError


@dataclass(frozen=True)
class Range:
    """A closed or open interval; None: unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value) -> str | None:
        """Why `value` is not a finite number in this range (None when it is)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number{self.words(prefix=' ')}"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return f"must be{self.words(prefix=' ')}" if below or above else None

    def words(self, prefix: str = "") -> str:
        lo, hi = _fmt(self.low), _fmt(self.high)
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"> {lo}" if self.low_open else f"at least {lo}"
        elif self.high is not None:
            text = f"< {hi}" if self.high_open else f"at most {hi}"
        else:
            return ""
        return prefix + text


def _fmt(x) -> str:
    return "" if x is None else (str(int(x)) if float(x).is_integer() else str(x))


class Number:
    """argparse `type=`: parse an int or float and check it is finite and in range (else one argparse error)."""

    def __init__(self, kind: type = float, low=None, high=None, *, low_open: bool = False, high_open: bool = False):
        self.kind = kind
        self.range = Range(low, high, low_open, high_open)
        self.__name__ = "integer" if kind is int else "number"  # argparse names the type in its messages

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            what = "a whole number" if self.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}{self.range.words(prefix=' ')}, got {text!r}") from None
        problem = self.range.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value

    def __repr__(self) -> str:  # shown by argparse only in its own bugs; keep it short
        return f"Number({self.kind.__name__}{self.range.words(prefix=', ')})"


POSITIVE_INT = Number(int, 1)
NON_NEGATIVE_INT = Number(int, 0)
FINITE = Number(float)
POSITIVE = Number(float, 0, low_open=True)
NON_NEGATIVE = Number(float, 0)
FRACTION = Number(float, 0, 1)  # [0, 1]


def check_number(name: str, value, low=None, high=None, *, low_open: bool = False, high_open: bool = False,
                 optional: bool = True):
    """`value` (None allowed when `optional`) finite and in range, else a one-line UserError naming `name`."""
    if value is None and optional:
        return value
    problem = Range(low, high, low_open, high_open).problem(value)
    if problem:
        raise UserError(f"{name}: {problem}, got {value}")
    return value


def non_finite_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """`--flag value` for every float option of `parser` (the subcommand's own) that holds NaN or inf."""
    bad = []
    for action in parser._actions:
        if not action.option_strings or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, float) and not math.isfinite(item):
                flag = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
                bad.append(f"{flag} {item}")
    return bad


# Recipe fields that a finite value can still make unusable, with the range a run can use.
RECIPE_RANGES: dict[str, Range] = {
    "temperature": Range(0, low_open=True),  # GRPO samples: TRL divides the logits by it
    "top_p": Range(0, 1, low_open=True),
    "min_p": Range(0, 1),
    "lora_r": Range(1),  # peft refuses r = 0 when the model is wrapped
    "lora_alpha": Range(0, low_open=True),
    "lora_dropout": Range(0, 1, high_open=True),
    "weight_decay": Range(0),
    "warmup_ratio": Range(0, 1),
    "max_grad_norm": Range(0),
    "beta": Range(0),
    "dynamic_sampling_max_batches": Range(1),  # the first generation batch counts
    "dynamic_sampling_start_step": Range(0),
}
# (learning_rate, top_entropy_quantile, batch sizes ... are checked in rl/train/config.py __post_init__.)


def recipe_value_problem(field: str, value) -> str | None:
    """Why a recipe field's (already type-converted) value cannot be used: non-finite, or outside
    `RECIPE_RANGES`; None when it can."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    rng = RECIPE_RANGES.get(field)
    if rng is not None and isinstance(value, (int, float)):
        return rng.problem(value)
    return None
