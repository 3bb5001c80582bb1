"""`rl train --config RECIPE.yaml [--field value ...]`: one GRPO run with entropy-rl's rewards.

The recipe is parsed TRL-style (rl/config.py), the model name resolved (`builtin:` names convert
once into the cache), the dataset loaded or built from a corpus (main process first, the others
reuse it), and `EntropyGRPOTrainer` (a thin TRL GRPOTrainer subclass) trains. Resuming accepts
`--resume_from_checkpoint auto|PATH` (auto: the newest checkpoint with a COMPLETE marker). On
SIGUSR1/SIGTERM the run finishes the current optimizer step, saves a complete checkpoint and stops;
under Slurm the batch script (slurm/train.sbatch) then requeues the job (rl/checkpoint.py).
Bad input (recipe, data rows, model directory, tokenizer) is refused before any model loads;
faults during the run (a raising reward, NaN/inf steps, a full disk, W&B unreachable, secrets in
arguments) are handled by the guards in rl/faults.py.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import zlib
from pathlib import Path

from rl.errors import UserError

logger = logging.getLogger(__name__)

TRAIN_EXAMPLES = """examples:
  rl train --config recipes/rpt_smollm2_cpu.yaml
  rl train --config recipes/rpt_smollm2_cpu.yaml --max_steps 2 --report_to none
  rl train --config recipes/rpt_smollm2_cpu.yaml --resume_from_checkpoint auto
  rl train --config recipes/forking/qwen3-8b-dapo.yaml --dry-run           # check a cluster recipe here
  accelerate launch --config_file recipes/accelerate/zero2.yaml -m rl.cli train --config RECIPE.yaml

Any field of the recipe (TRL's GRPOConfig, ModelConfig, entropy-rl's ScriptArguments) can be
overridden on the command line with --<field> <value>, exactly as in TRL's own scripts.
"""

# Parameters of TRL's reward-function signature that are not dataset columns.
_NON_COLUMN_PARAMS = {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train with TRL GRPO and entropy-rl rewards (rl train --help)",
        description="Run GRPO training from a TRL-style YAML recipe. Fields: see the recipe files in recipes/.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    p.add_argument("-h", "--help", action="store_true", help="show this help (and all recipe fields with --help-fields)")
    p.add_argument("--help-fields", action="store_true", help="list every recipe field with its help text")
    p.add_argument("--config", help="the recipe (YAML); any other --field value overrides it")
    p.add_argument("--dry-run", action="store_true",
                   help="check the recipe as a real run would (fields, rewards, data columns, DeepSpeed config, world "
                        "size, batch divisibility, lengths) without loading weights; exit 2 with a numbered list of "
                        "problems. World size: --nodes N --gpus-per-node G, --num_processes N, or the recipe's launch "
                        "line; --accelerate_config PATH")
    p.set_defaults(func=run_train_cli, _train_parser=p, accepts_extra=True)


def run_train_cli(args) -> int:
    if args.help_fields:
        from rl.config import make_parser

        make_parser().print_help()
        return 0
    if args.dry_run and not args.help:
        from rl.dryrun import main as dry_run_main

        return dry_run_main((["--config", args.config] if args.config else []) + list(args.extra))
    if args.help or not (args.config or args.extra):
        args._train_parser.print_help()
        return 0
    return train((["--config", args.config] if args.config else []) + list(args.extra))


def required_columns(reward_funcs) -> dict[str, list[str]]:
    """Dataset columns each reward function needs: its named parameters beyond TRL's own."""
    needed = {}
    for func in reward_funcs:
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            continue
        cols = [
            p.name
            for p in params
            if p.name not in _NON_COLUMN_PARAMS
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.default is inspect.Parameter.empty
        ]
        # A reward may declare columns it cannot work without even though its parameters have
        # defaults (rpt_reward: None rows are allowed, a missing column is not).
        cols += [c for c in getattr(func, "required_columns", ()) if c not in cols]
        needed[getattr(func, "__name__", repr(func))] = cols
    return needed


def load_dataset_path(path: str):
    """Load a train (and optional eval) split from a save_to_disk dir, .jsonl or .parquet file."""
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    p = Path(path)
    if not p.exists():
        raise UserError(f"dataset_path: {path} does not exist (build one with `rl data rpt`)")
    if p.is_file() and p.stat().st_size == 0:
        raise UserError(f"dataset_path: {path} is empty (0 bytes); build the data with `rl data rpt` or point at "
                        "a non-empty .jsonl/.parquet file or save_to_disk dir")
    if p.is_file() and p.suffix in (".jsonl", ".json"):
        # pyarrow's JSON reader does not validate UTF-8: a bad byte would only fail when the row is
        # read, mid-training. One streaming decode pass (fast) finds it now, with its line.
        problem = _first_non_utf8_line(p)
        if problem:
            raise UserError(f"dataset_path: {problem}; re-encode the file as UTF-8")
    if p.is_dir() and _saved_dataset_is_empty(p):
        raise UserError(f"dataset_path: {path} is an empty dataset (0 rows); rebuild it with `rl data rpt`")
    try:
        if p.is_dir():
            data = load_from_disk(str(p))
        elif p.suffix == ".jsonl" or p.suffix == ".json":
            data = load_dataset("json", data_files=str(p), split="train")
        elif p.suffix == ".parquet":
            data = load_dataset("parquet", data_files=str(p), split="train")
        else:
            raise UserError(f"dataset_path: {path}: expected a save_to_disk dir, .jsonl or .parquet file")
    except UserError:
        raise
    except Exception as exc:  # datasets raises many types for unreadable data
        if p.is_file() and p.suffix in (".jsonl", ".json"):
            problem = _first_bad_jsonl_line(p)
            if problem:
                raise UserError(f"dataset_path: {problem}; fix or remove that line") from None
        lines = str(exc).strip().splitlines()
        detail = f"{exc.__class__.__name__}: {lines[0]}" if lines else exc.__class__.__name__
        raise UserError(f"dataset_path: {path}: cannot be read ({detail})") from None
    if isinstance(data, DatasetDict):
        train = data["train"] if "train" in data else data[list(data)[0]]
        evaluation = data.get("test") or data.get("validation")
        return train, evaluation
    assert isinstance(data, Dataset)
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
        from rl.data.rpt import RPTBuildConfig, build_rpt_dataset, saved_build_config

        cfg = RPTBuildConfig(
            corpus=script_args.corpus,
            proxy_model=script_args.proxy_model or model_path,
            entropy=script_args.rpt_entropy,
            top_k=script_args.rpt_top_k,
            min_entropy=script_args.rpt_min_entropy,
            max_per_doc=script_args.rpt_max_per_doc,
            continuation_tokens=script_args.rpt_continuation_tokens,
            max_context_tokens=script_args.rpt_max_context_tokens,
            min_context_tokens=script_args.rpt_min_context_tokens,
            window_tokens=script_args.rpt_window_tokens,
            batch_size=script_args.rpt_proxy_batch_size,
            max_documents=script_args.rpt_max_documents,
            prompt_template=script_args.rpt_prompt_template,
            seed=script_args.rpt_seed,
            chat="yes" if getattr(tokenizer, "chat_template", None) else "no",
        )
        if cfg.chat == "no":
            logger.warning("the tokenizer of %s has no chat template: RPT prompts will be plain text "
                           "(instruction + context), not chat messages", model_path)
        with PartialState().main_process_first():
            # Reuse the data only if it was built with exactly these settings.
            if saved_build_config(out) != cfg.fingerprint():
                _, summary = build_rpt_dataset(cfg, out)
                logger.info("RPT data built in %s\n%s", out, summary.format())
            else:
                logger.info("reusing RPT data in %s (same build settings)", out)
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
    for name, needed in required_columns(reward_funcs).items():
        missing = [c for c in needed if c not in cols]
        if missing:
            raise UserError(
                f"{where}: reward `{name}` needs column(s) {missing}, the dataset has {sorted(cols)}; add them "
                "(RPT data: build it with `rl data rpt`) or choose other reward_funcs"
            )
    for func in reward_funcs:
        check = getattr(func, "check_dataset", None)
        if callable(check):
            check(dataset, where)


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


_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.gguf", "adapter_model.bin")


def check_model_dir(model_path: str) -> None:
    """A local model directory that cannot load (no config, no or truncated weights): one line, before loading.

    Hub ids (not a local directory) are left to transformers. Only file headers are read.
    """
    import json

    from rl.checkpoint import check_safetensors

    p = Path(model_path)
    if not p.is_dir():
        return
    fix = "point model_name_or_path at a complete model directory (config.json, tokenizer, weights) or re-download it"
    config = p / "config.json"
    if not config.is_file() and not (p / "adapter_config.json").is_file():
        raise UserError(f"model_name_or_path: {p} has no config.json; {fix}")
    if config.is_file():
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"model_name_or_path: {config} is not valid JSON ({exc}); {fix}") from None
    weights = sorted({f for pattern in _WEIGHT_GLOBS for f in p.glob(pattern)})
    if not weights:
        raise UserError(f"model_name_or_path: {p} has no weights (*.safetensors, pytorch_model.bin); {fix}")
    for index in p.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"model_name_or_path: {index} is unreadable ({exc}); {fix}") from None
        missing = sorted(s for s in shards if not (p / s).is_file())
        if missing:
            raise UserError(f"model_name_or_path: {p} lacks shard(s) {missing[:3]} named in {index.name}; {fix}")
    for f in weights:
        if f.suffix == ".safetensors":
            problem = check_safetensors(f)
            if problem:
                raise UserError(f"model_name_or_path: {p}: {problem}; {fix}")


def load_tokenizer(model_path: str, model_args, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_path, revision=model_args.model_revision, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, TypeError) as exc:
        lines = str(exc).strip().splitlines()
        fix = ("the directory needs tokenizer files (tokenizer.json or vocab/merges) next to the model"
               if Path(model_path).is_dir() else
               "it is not a local directory and could not be fetched from the hub cache; download it first "
               "(huggingface-cli download ...) or give a local path")
        raise UserError(f"model_name_or_path: cannot load a tokenizer from {model_path!r} "
                        f"({lines[0] if lines else type(exc).__name__}); {fix}") from None
    check_tokenizer(tokenizer, model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_tokenizer(tokenizer, model_path: str) -> None:
    """A tokenizer that cannot encode text, or has ids the model has no embedding for: one line, before loading.

    transformers 5 builds an *empty* tokenizer (1 token, encodes everything to []) from a model
    directory that has no tokenizer files; generation then fails deep inside `generate`.
    """
    import json

    fix = "put the model's tokenizer files (tokenizer.json, tokenizer_config.json) next to its config.json"
    probe = tokenizer("The quick brown fox, 42.", add_special_tokens=False)["input_ids"]
    if len(tokenizer) < 2 or not probe:
        raise UserError(f"model_name_or_path: {model_path}: the tokenizer is empty (no tokenizer files?); {fix}")
    config = Path(model_path) / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # check_model_dir reports it
        vocab = data.get("vocab_size") or (data.get("text_config") or {}).get("vocab_size")
        if not isinstance(vocab, int) or len(tokenizer) <= vocab:
            return
        special = [getattr(tokenizer, f"{n}_token_id", None) for n in ("eos", "pad", "bos")]
        if any(i is not None and i >= vocab for i in [*probe, *special]):  # ids the embedding cannot look up
            raise UserError(f"model_name_or_path: {model_path}: the tokenizer has {len(tokenizer)} tokens but the "
                            f"model only {vocab} embeddings; use the tokenizer that belongs to this model")
        logger.warning("%s: the tokenizer has %d tokens, the model %d embeddings; tokens past %d would fail",
                       model_path, len(tokenizer), vocab, vocab - 1)


def build_trainer(script_args, training_args, model_args, callbacks=()):
    """Resolve model, tokenizer, rewards and data, and construct the trainer (no training)."""
    from trl import get_peft_config

    from rewards import get_reward_funcs
    from rl.assets import resolve_model
    from rl.trainer import EntropyGRPOTrainer

    if not model_args.model_name_or_path:
        raise UserError("recipe: set `model_name_or_path` (builtin:smollm2-135m-instruct, a hub id or a local dir)")
    from rl.faults import wrap_reward_funcs

    model_path = resolve_model(model_args.model_name_or_path)
    check_model_dir(model_path)
    reward_funcs = get_reward_funcs(script_args.reward_funcs)
    check_reward_signatures(reward_funcs, script_args.reward_funcs)
    tokenizer = load_tokenizer(model_path, model_args, training_args.trust_remote_code)
    train_ds, eval_ds = prepare_dataset(script_args, training_args, model_path, tokenizer)
    where = script_args.dataset_path or str(Path(training_args.output_dir) / "rpt-data")
    check_columns(train_ds, reward_funcs, where)
    if eval_ds is not None:
        check_columns(eval_ds, reward_funcs, f"{where} (eval split)")
    reward_funcs = wrap_reward_funcs(reward_funcs, getattr(training_args, "reward_error_policy", "raise"))
    init_kwargs = dict(training_args.model_init_kwargs or {})
    if model_args.dtype is not None:
        init_kwargs.setdefault("dtype", model_args.dtype)
    if model_args.attn_implementation is not None:
        init_kwargs.setdefault("attn_implementation", model_args.attn_implementation)
    training_args.model_init_kwargs = init_kwargs
    return EntropyGRPOTrainer(
        model=model_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=list(callbacks),
    )


def reward_summary(log_history: list[dict]) -> tuple[float | None, float | None]:
    """Mean reward of the first and last logged training steps."""
    rewards = [entry["reward"] for entry in log_history if "reward" in entry and "train_runtime" not in entry]
    if not rewards:
        return None, None
    return rewards[0], rewards[-1]


def train(argv: list[str]) -> int:
    from rl.cpu_distributed import apply_cpu_workarounds

    apply_cpu_workarounds()  # before accelerate state exists; a no-op with CUDA or one process
    from rl.config import parse_recipe

    from rl.faults import move_secret_args, wandb_fallback

    user_wandb_dir = os.environ.get("WANDB_DIR")
    user_wandb_mode = os.environ.get("WANDB_MODE")
    script_args, training_args, model_args = parse_recipe(argv)
    move_secret_args(training_args)
    if training_args.report_to and "wandb" in training_args.report_to:
        # The W&B run lives with the run's outputs unless the user chose a place (env or recipe `env:`).
        if not os.environ.get("WANDB_DIR"):
            os.environ["WANDB_DIR"] = str(Path(training_args.output_dir))
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        wandb_fallback(training_args.report_to)  # no key / unreachable: offline, one warning
    try:
        return _train(script_args, training_args, model_args)
    except UserError:
        _close_progress_bars()  # so the CLI's `error:` line starts a line of its own
        raise
    finally:
        _finish_wandb()
        for name, value in (("WANDB_DIR", user_wandb_dir), ("WANDB_MODE", user_wandb_mode)):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _train(script_args, training_args, model_args) -> int:
    from rl.checkpoint import (
        CheckpointCallback,
        PreemptionCallback,
        PreemptionHandler,
        generation_cycle_steps,
        resolve_resume,
    )

    # Resolve before any model loads: a bad path is a one-line error, "auto" finds the newest
    # checkpoint that carries a COMPLETE marker (a truncated newer one is skipped with a warning).
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    cycle = generation_cycle_steps(training_args)
    if training_args.save_strategy == "steps" and training_args.save_steps and int(training_args.save_steps) % cycle:
        raise UserError(
            f"save_steps: {training_args.save_steps} is not a multiple of the generation cycle ({cycle} optimizer "
            "steps = lcm(steps_per_generation x num_iterations, gradient_accumulation_steps) / "
            "gradient_accumulation_steps); a resume is exact only at those boundaries"
        )
    from rl.faults import NonFiniteGuard, checkpoint_save_error, guard_checkpoint_saves, install_guard, is_disk_error

    # Old checkpoints are deleted by CheckpointCallback only after the new one is marked COMPLETE
    # (HF's own rotation runs before the marker: with save_total_limit 1 a kill in between lost both).
    keep = training_args.save_total_limit
    training_args.save_total_limit = None
    guard = NonFiniteGuard(getattr(training_args, "max_bad_steps", 3))
    handler = PreemptionHandler().install()
    try:
        callbacks = [CheckpointCallback(keep=keep), PreemptionCallback(handler, check_every=cycle), guard]
        trainer = build_trainer(script_args, training_args, model_args, callbacks=callbacks)
        install_guard(trainer, guard)
        guard_checkpoint_saves(trainer)
        trainer.train(resume_from_checkpoint=resume)
        guard.raise_if_diverged(training_args.output_dir)  # nothing of the bad steps was saved
        if not handler.preempted:
            try:
                trainer.save_model(training_args.output_dir)
            except Exception as exc:  # noqa: BLE001 - only disk errors are turned into one line
                if not is_disk_error(exc, training_args.output_dir):
                    raise
                raise checkpoint_save_error(training_args.output_dir, exc, training_args.output_dir) from exc
    finally:
        handler.uninstall()
        training_args.save_total_limit = keep
    first, last = reward_summary(trainer.state.log_history)
    if trainer.is_world_process_zero():
        print(f"output dir: {training_args.output_dir}")
        if first is not None:
            print(f"mean reward: first step {first:.4f}, last step {last:.4f}")
        if handler.preempted:
            print(f"preempted: checkpoint saved at step {trainer.state.global_step}")
    handler.requeue_if_needed()
    return 0


def _close_progress_bars() -> None:
    """Close tqdm bars left open by an exception (the trainer's): each ends its terminal line."""
    import sys

    tqdm_module = sys.modules.get("tqdm")
    instances = getattr(getattr(tqdm_module, "tqdm", None), "_instances", None)
    for bar in list(instances or ()):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - cosmetic only
            pass


def _finish_wandb() -> None:
    """Close this run's W&B run, so a second `train()` in the same process starts its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    if wandb is not None and hasattr(wandb, "teardown"):
        wandb.teardown()  # drop the cached settings (run dir) so the next run's WANDB_DIR applies
