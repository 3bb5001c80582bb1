"""The rules the recipe parser and the preflight share: TRL's batch arithmetic and rules (raised while
parsing, as `BatchRuleError`; the preflight's batch checks and the dry run's batch report read the same
functions), the DeepSpeed config reader, the command-line override scanner, and the target machine.

The target machine is an explicit value: `rl train` checks for the processes it runs in
(`WORLD_SIZE`, set by accelerate/torchrun/DeepSpeed launchers), the dry run for the machines the
recipe will run on (`TargetMachine`, e.g. 16 processes with bf16 GPUs, checked from a CPU login node).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rl.errors import UserError


@dataclasses.dataclass(frozen=True)
class TargetMachine:
    """The machines a recipe is parsed for: training processes, and whether they have bf16 GPUs."""

    world_size: int = 1
    bf16_gpus: bool = True


_TARGET: contextvars.ContextVar[TargetMachine | None] = contextvars.ContextVar("rl_target_machine", default=None)


@contextlib.contextmanager
def parsing_for(target: TargetMachine | None) -> Iterator[None]:
    """Within this block `EntropyGRPOConfig.world_size` is the target's (None: this process's own)."""
    token = _TARGET.set(target)
    try:
        yield
    finally:
        _TARGET.reset(token)


def current_target() -> TargetMachine | None:
    return _TARGET.get()


def launch_world_size() -> int:
    """Training processes of this launch: the target's when parsing for one, else the launcher's WORLD_SIZE."""
    target = current_target()
    if target is not None:
        return target.world_size
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


class BatchRuleError(UserError):
    """A batch rule broken while parsing (`generation_batch_problem`, `eval_batch_problem`): the dry run
    reports it from its own batch check, beside the arithmetic, and knows it by this type."""


@dataclasses.dataclass(frozen=True)
class GenerationBatch:
    """TRL's generation batch at a world size: `size` completions, `steps_per_generation` micro-steps
    of `per_device` x `world` completions each (GRPOConfig.__post_init__, TRL 1.16)."""

    per_device: int
    world: int
    accumulation: int
    num_generations: int
    size: int
    steps_per_generation: int

    @property
    def prompts(self) -> int:
        return self.size // self.num_generations


def generation_batch(per_device: int, accumulation: int, num_generations: int | None,
                     generation_batch_size: int | None, steps_per_generation: int | None,
                     world: int) -> GenerationBatch | str:
    """TRL's GRPO batch arithmetic and rules, worded with the fix: the batch, or the problem (one line).

    The generation batch (per_device x world x steps_per_generation, or `generation_batch_size`)
    must hold whole groups of `num_generations`; `generation_batch_size` must split into global
    batches; the two knobs exclude each other; GRPO needs 2+ generations.
    """
    G = num_generations
    if G is None or G < 2:
        return f"num_generations: GRPO needs at least 2 generations per prompt, got {G}; set num_generations to 2 or more"
    if generation_batch_size is not None and steps_per_generation is not None:
        return "generation_batch_size and steps_per_generation can not both be set; keep one"
    global_batch = per_device * world
    if generation_batch_size is None:
        spg = steps_per_generation if steps_per_generation is not None else accumulation
        gen_batch = global_batch * spg
    else:
        gen_batch = generation_batch_size
        if gen_batch % global_batch:
            return (f"generation_batch_size {gen_batch} must be a multiple of the global batch "
                    f"(per_device_train_batch_size {per_device} x {world} processes = {global_batch}): make "
                    "generation_batch_size a multiple of it, or leave generation_batch_size unset")
        spg = gen_batch // global_batch
    if gen_batch % G:
        mult = G // math.gcd(G, per_device * spg)
        return (f"batch: the generation batch ({per_device} per device x {world} processes x {spg} "
                f"steps_per_generation = {gen_batch} completions) is not a multiple of num_generations {G}: "
                f"TRL needs whole prompt groups. At {world} processes use e.g. per_device_train_batch_size x "
                f"steps_per_generation divisible by {G // math.gcd(G, world)}; with these batch settings the "
                f"world size must be a multiple of {mult}")
    return GenerationBatch(per_device, world, accumulation, G, gen_batch, spg)


def generation_batch_problem(per_device: int, accumulation: int, num_generations: int | None,
                             generation_batch_size: int | None, steps_per_generation: int | None,
                             world: int) -> str | None:
    """The problem `generation_batch` finds, or None."""
    found = generation_batch(per_device, accumulation, num_generations, generation_batch_size, steps_per_generation,
                             world)
    return found if isinstance(found, str) else None


def eval_batch_problem(eval_strategy, per_device_eval: int, world: int, generations: int | None) -> str | None:
    """TRL's eval batch rule (evaluating runs only): the global eval batch holds whole groups."""
    if str(getattr(eval_strategy, "value", eval_strategy)) == "no" or not generations:
        return None
    eval_global = int(per_device_eval) * world
    if eval_global % generations:
        return (f"eval batch: per_device_eval_batch_size {per_device_eval} x {world} processes = {eval_global} is "
                f"not a multiple of {generations} generations; change per_device_eval_batch_size or "
                "num_generations_eval")
    return None


def read_deepspeed_config(where: str, value: Any, field: str | None = "deepspeed") -> tuple[dict | None, str | None]:
    """A `deepspeed` setting (a dict, inline JSON, or a JSON file path): (the config, None) or (None, problem).

    (None, None) when there is nothing to read: unset, or base64-encoded JSON (transformers decodes
    and checks that itself). Problems start with `where` and the recipe `field` (None: `where` says it).
    """
    where = f"{where}: field '{field}'" if field else where
    if isinstance(value, dict):
        return value, None
    if not isinstance(value, str) or not value.strip():
        return None, None
    stripped = value.strip()
    if stripped.startswith("{"):
        text, source = stripped, "inline JSON"
    else:
        path = Path(stripped).expanduser()
        if path.is_file():
            try:
                text, source = path.read_text(encoding="utf-8"), str(path)
            except (OSError, UnicodeDecodeError) as exc:
                return None, f"{where}: {path} cannot be read ({exc})"
        elif path.suffix.lower() in (".json", ".yaml", ".yml") or "/" in stripped:
            return None, (f"{where}: {path} not found; give the path of an existing DeepSpeed "
                          "JSON config, or leave `deepspeed` unset")
        else:
            return None, None
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
        at = f":{line}:{col}" if line else ""
        return None, (f"{where}: {source}{at}: not valid JSON ({getattr(exc, 'msg', exc)}); "
                      "fix the DeepSpeed config")
    if not isinstance(parsed, dict):
        return None, f"{where}: {source} must hold a JSON object, got {type(parsed).__name__}"
    return parsed, None


def cli_overrides(argv: list[str]) -> list[tuple[str, list[str]]]:
    """`--name value...` / `--name=value` pairs of the command line, without `--config PATH`."""
    out: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--config":
            i += 2
            continue
        if tok.startswith("--"):
            if "=" in tok:
                name, value = tok.split("=", 1)
                out.append((name, [value]))
            else:
                values = []
                while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    i += 1
                    values.append(argv[i])
                out.append((tok, values))
        else:
            out.append(("", [tok]))
        i += 1
    return out


def override_value(argv: list[str], name: str) -> str | None:
    """The last value given for `--name` among command-line overrides (`--name v` or `--name=v`), else None."""
    found = None
    for flag, values in cli_overrides(argv):
        if flag == f"--{name}" and values:
            found = values[0]
    return found
