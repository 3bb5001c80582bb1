"""`rl merge ADAPTER -o DIR`: a LoRA run's adapter merged into its base, saved as a plain model.

`rl train` (`model_name_or_path`), `rl data rpt --proxy-model` and `rl prune --model` need full
weights; a LoRA run saves only the adapter (its run dir and every checkpoint-N hold
adapter_config.json + adapter_model.safetensors + the tokenizer). This loads the base model, applies
the adapter with peft, merges it (`merge_and_unload`: W + scale * B @ A in float32) and saves the
result with the tokenizer and chat template as an ordinary transformers checkpoint.

Order of work: every check before any weights load, each a one-line error naming the argument:
ADAPTER is an adapter dir (adapter_config.json, readable, a mergeable peft type, intact adapter
weights); the base (`--base`, else the adapter's `base_model_name_or_path`) is a complete full model
or a downloaded hub id; the output passes rl/runtime/outputs.py (not an input, not inside one, a
non-empty directory not written by `rl merge` needs --overwrite). Then load, merge, cast to --dtype,
save into a temp dir beside the output and rename it into place (with the `rl-output.json` marker).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rl.errors import UserError
from rl.runtime.library_noise import quiet_library_deprecations
from rl.runtime.models import check_model_arg, check_not_adapter
from rl.runtime.outputs import check_output_dir, replace_dir, written_files

COMMAND = "rl merge"
DTYPES = ("auto", "float32", "bfloat16", "float16")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

EXAMPLES = """examples:
  rl merge runs/lora -o runs/lora-merged                       # a finished LoRA run (its final adapter)
  rl merge runs/lora/checkpoint-200 -o runs/merged-200 --dtype bfloat16
  rl merge adapter/ --base builtin:smollm2-135m-instruct -o runs/merged   # base not in adapter_config.json

then: rl train --config recipe.yaml --model_name_or_path runs/lora-merged
      rl data rpt --corpus builtin:champ --proxy-model runs/lora-merged --output runs/rpt
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "merge", help="merge a LoRA adapter into its base model (a full checkpoint for rl train / rl data rpt)",
        description="Merge a LoRA run's adapter (a run dir or checkpoint-N with adapter_config.json) into its\n"
        "base model with peft's merge_and_unload, and save the full model with the tokenizer and chat\n"
        "template as a plain transformers checkpoint.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("adapter", metavar="ADAPTER", help="LoRA adapter dir: a LoRA run's output_dir or one of its "
                   "checkpoint-N dirs (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("-o", "--output", required=True, help="new directory for the merged model")
    p.add_argument("--base", default=None, help="base model (dir, hub id already downloaded, builtin: name); "
                   "default: base_model_name_or_path from ADAPTER/adapter_config.json")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="dtype of the saved weights (the merge itself runs in float32); auto: the base's "
                   "config dtype, float32 when it names none")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output directory not written by rl merge (never one that holds an input)")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------- checks


def check_adapter(adapter: str) -> dict:
    """ADAPTER is a mergeable adapter dir with intact weights; returns its adapter_config.json (one-line errors)."""
    from rl.runtime.checkpoint import check_safetensors

    p = Path(adapter).expanduser()
    if not p.exists():
        raise UserError(f"ADAPTER: {adapter}: no such directory; give a LoRA run's output_dir or a checkpoint-N in it")
    if not p.is_dir():
        raise UserError(f"ADAPTER: {adapter} is a file; give the directory that holds adapter_config.json")
    cfg_path = p / "adapter_config.json"
    if not cfg_path.is_file():
        if (p / "config.json").is_file():
            raise UserError(f"ADAPTER: {adapter} is a full model (config.json, no adapter_config.json), not a LoRA "
                            "adapter; it needs no merge: use it as it is")
        newest = _newest_adapter_checkpoint(p)
        hint = f" (its newest adapter checkpoint is {newest})" if newest else ""
        raise UserError(f"ADAPTER: {adapter} has no adapter_config.json{hint}; give a LoRA run's output_dir after "
                        "training finished, or one of its checkpoint-N dirs")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError(f"a JSON {type(config).__name__}, not an object")
    except (OSError, ValueError) as exc:
        raise UserError(f"ADAPTER: {cfg_path} is unreadable ({exc}); re-save the adapter") from None
    kind = str(config.get("peft_type") or "?")
    if kind.upper() in {"PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING", "ADAPTION_PROMPT"}:
        raise UserError(f"ADAPTER: {adapter} is a {kind} adapter (virtual tokens, no weights to merge); only "
                        "weight adapters such as LoRA can be merged into the base")
    weights = [p / w for w in ADAPTER_WEIGHTS if (p / w).is_file()]
    if not weights:
        raise UserError(f"ADAPTER: {adapter} has adapter_config.json but no adapter weights "
                        f"({' or '.join(ADAPTER_WEIGHTS)}); the save was interrupted: use an earlier checkpoint")
    if weights[0].suffix == ".safetensors":
        problem = check_safetensors(weights[0])
        if problem:
            raise UserError(f"ADAPTER: {adapter}: {problem}; the save was interrupted: use an earlier checkpoint")
    return config


def _newest_adapter_checkpoint(run_dir: Path) -> str | None:
    steps = []
    for c in run_dir.glob("checkpoint-*"):
        if c.name[len("checkpoint-"):].isdigit() and (c / "adapter_config.json").is_file():
            steps.append((int(c.name[len("checkpoint-"):]), c))
    return str(max(steps)[1]) if steps else None


def check_base(base: str | None, adapter: str, config: dict) -> str:
    """The base model to load: `--base`, else the adapter's base_model_name_or_path; a full model whose
    config reads (no weights load). Returns the resolved path or hub id."""
    if base is not None:
        flag = "--base"
    else:
        base = config.get("base_model_name_or_path")
        flag = f"base_model_name_or_path in {Path(adapter) / 'adapter_config.json'}"
        if not isinstance(base, str) or not base.strip():
            raise UserError(f"ADAPTER: {Path(adapter) / 'adapter_config.json'} names no base model "
                            "(base_model_name_or_path); pass --base MODEL, the model the adapter was trained on")
    path = check_model_arg(base, flag)
    check_not_adapter(path, flag)
    return path


def tokenizer_source(adapter: str, base: str) -> str:
    """The adapter dir when it holds a tokenizer (rl train saves it there), else the base."""
    return adapter if any((Path(adapter) / f).is_file() for f in _TOKENIZER_FILES) else base


def save_dtype(choice: str, base: str):
    """The torch dtype to save in: --dtype, or with `auto` the base config's dtype (float32 if it names none)."""
    import torch

    if choice != "auto":
        return getattr(torch, choice)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base)
    named = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(named, str):
        named = getattr(torch, named, None)
    return named if isinstance(named, torch.dtype) and named.is_floating_point else torch.float32


# ---------------------------------------------------------------------------------------------- the run


def merge_adapter(adapter: str, base: str, dtype):
    """(merged model in `dtype`, tokenizer): base in float32, adapter applied with peft, merged, cast."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(adapter, base))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model = model.to(dtype)
    model.config.dtype = dtype
    return model.eval(), tokenizer


def run(args) -> int:
    adapter = str(Path(args.adapter).expanduser())
    inputs = {"ADAPTER": adapter, "--base": args.base}

    def check_out():
        return check_output_dir(args.output, "-o/--output", COMMAND, overwrite=args.overwrite, inputs=inputs,
                                containers=inputs)

    config = check_adapter(adapter)
    base = check_base(args.base, adapter, config)
    inputs["base model"] = base  # a base named by the adapter config is an input too
    out = check_out()
    dtype = save_dtype(args.dtype, base)

    print(f"merging {adapter} into {base} ...", flush=True)
    with quiet_library_deprecations():  # peft and save_pretrained call transformers' renamed checkpointing methods
        model, tokenizer = merge_adapter(adapter, base, dtype)
        with replace_dir(out, COMMAND, recheck=check_out) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"merged model: {out} ({n_params:,} parameters, {str(dtype).removeprefix('torch.')})")
    for f in written_files(out):
        print(f"wrote {f}")
    return 0
