"""`rl train --config RECIPE.yaml [--field value ...]`: one GRPO run with entropy-rl's rewards.

The recipe is parsed TRL-style (rl/train/recipe.py), the model name resolved (`builtin:` names convert
once into the cache), the dataset loaded or built from a corpus (main process first, the others
reuse it), and `EntropyGRPOTrainer` (a thin TRL GRPOTrainer subclass) trains. Resuming accepts
`--resume_from_checkpoint auto|PATH` (auto: the newest checkpoint with a COMPLETE marker). On
SIGUSR1/SIGTERM the run finishes the current optimizer step, saves a complete checkpoint and stops;
under Slurm the batch script (slurm/train.sbatch) then requeues the job (rl/runtime/checkpoint.py).
Bad input (recipe, data rows, model directory, tokenizer) is refused before any model loads;
faults during the run (a raising reward, NaN/inf steps, a full disk, W&B unreachable, secrets in
arguments) are handled by the guards in rl/runtime/faults.py.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from rl.errors import UserError
from rl.data.loading import check_columns, check_reward_signatures, prepare_dataset
from rl.runtime.assets import resolve_model
from rl.runtime.cpu_distributed import apply_cpu_workarounds
from rl.runtime.disk_errors import checkpoint_save_error, is_disk_error
from rl.runtime.library_noise import (
    import_integrations_quietly, quiet_checkpointing_rename, quiet_library_deprecations,
)
from rl.runtime.models import check_model_dir, load_tokenizer
from rl.runtime.wandb_secrets import move_secret_args, wandb_fallback
from rl.train.preflight.plan import RunPlan

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
        from rl.train.recipe import make_parser

        make_parser().print_help()
        return 0
    if args.dry_run and not args.help:
        from rl.train.preflight.cli import main as dry_run_main

        return dry_run_main((["--config", args.config] if args.config else []) + list(args.extra))
    if args.help or not (args.config or args.extra):
        args._train_parser.print_help()
        return 0
    return train((["--config", args.config] if args.config else []) + list(args.extra))


def build_trainer(script_args, training_args, model_args, callbacks=()):
    """Resolve model, tokenizer, rewards and data, and construct the trainer (no training)."""
    from trl import get_peft_config

    from rewards import get_reward_funcs
    from rl.train.trainer import EntropyGRPOTrainer

    if not model_args.model_name_or_path:
        raise UserError("recipe: set `model_name_or_path` (builtin:smollm2-135m-instruct, a hub id or a local dir)")
    from rl.runtime.faults import wrap_reward_funcs

    model_path = resolve_model(model_args.model_name_or_path)
    check_model_dir(model_path)
    reward_funcs = get_reward_funcs(script_args.reward_funcs, settings=training_args)  # recipe-set rewards built
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
    apply_cpu_workarounds()  # before accelerate state exists; a no-op with CUDA or one process
    from rl.train.recipe import parse_recipe

    import_integrations_quietly()  # before the recipe's `env:` (WANDB_MODE) applies
    user_wandb_dir = os.environ.get("WANDB_DIR")
    user_wandb_mode = os.environ.get("WANDB_MODE")
    with quiet_checkpointing_rename(argv):
        script_args, training_args, model_args = parse_recipe(argv)
    move_secret_args(training_args)
    if training_args.report_to and "wandb" in training_args.report_to:
        # The W&B run lives with the run's outputs unless the user chose a place (env or recipe `env:`).
        if not os.environ.get("WANDB_DIR"):
            os.environ["WANDB_DIR"] = str(Path(training_args.output_dir))
        _reset_idle_wandb()
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        wandb_fallback(training_args.report_to)  # no key / unreachable: offline, one warning
    try:
        with quiet_library_deprecations():
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
    from rl.runtime.checkpoint import CheckpointCallback, find_resume_checkpoint, generation_cycle_steps, resolve_resume
    from rl.runtime.preemption import PreemptionCallback, PreemptionHandler

    # Resolve before any model loads: a bad path is a one-line error, "auto" finds the newest
    # checkpoint that carries a COMPLETE marker (a truncated newer one is skipped with a warning).
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    from rl.train.preflight.checks import raise_first

    raise_first(RunPlan.for_this_launch(script_args, training_args, model_args))  # the dry run's checks, first problem
    cycle = generation_cycle_steps(training_args)

    # Old checkpoints are deleted by CheckpointCallback only after the new one is marked COMPLETE
    # (HF's own rotation runs before the marker: with save_total_limit 1 a kill in between lost both).
    keep = training_args.save_total_limit
    training_args.save_total_limit = None
    handler = PreemptionHandler().install()
    try:
        from rl.runtime.wandb_run import wandb_run_callbacks

        callbacks = [CheckpointCallback(keep=keep), PreemptionCallback(handler, check_every=cycle),
                     *wandb_run_callbacks(training_args)]  # one W&B run per run dir, across requeues
        trainer = build_trainer(script_args, training_args, model_args, callbacks=callbacks)
        guard = trainer.nonfinite_guard  # the trainer class carries the fault guards (rl/runtime/faults.py)
        if resume is None:  # a resumed run was checked when it started
            from rl.train.signal_check import check_signal_before_training

            check_signal_before_training(trainer, script_args, training_args)
        trainer.train(resume_from_checkpoint=resume)
        guard.raise_if_diverged(training_args.output_dir)  # nothing of the bad steps was saved
        if not handler.preempted:
            try:
                trainer.save_model(training_args.output_dir)
            except Exception as exc:  # noqa: BLE001 - only disk errors are turned into one line
                if not is_disk_error(exc, training_args.output_dir):
                    raise
                newest = find_resume_checkpoint(training_args.output_dir)
                raise checkpoint_save_error(training_args.output_dir, exc, newest) from exc
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


def _reset_idle_wandb() -> None:
    """wandb caches its settings (the run dir) process-wide after the first run, even a finished one;
    with no run active, drop them so this run's WANDB_DIR applies."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is None and hasattr(wandb, "teardown"):
        wandb.teardown()


def _finish_wandb() -> None:
    """Close this run's W&B run, so a second `train()` in the same process starts its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    if wandb is not None and hasattr(wandb, "teardown"):
        wandb.teardown()  # drop the cached settings (run dir) so the next run's WANDB_DIR applies
