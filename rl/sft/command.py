"""`rl sft --config RECIPE.yaml [--field value ...] [--dry-run]`: TRL SFT, with CAFT heads when `aux_mtp: caft`.

The recipe is TRL-style YAML read by `TrlParser` (rl/sft/config.py: SFTScriptArguments, CaftSFTConfig,
TRL's ModelConfig, LoRA included), with `rl train`'s field checks, overrides, checkpoints (COMPLETE
markers, `--resume_from_checkpoint auto`), preemption (SIGUSR1/SIGTERM: finish the step, save, stop,
requeue) and one W&B run per run dir.

CAFT stage `heads` (stage 1): the self-distilled set is built from `caft_prompts` when no
`dataset_path` is given, the model is frozen, the heads trained and saved apart from the policy in
`caft_heads_path` (default <output_dir>/caft-heads), and each head's held-out top-1 is printed.
Stage `finetune` (stage 2): the saved heads load strictly, frozen, and the policy trains with their
fading auxiliary loss; the policy checkpoint is a plain model or adapter.

Every check that needs no weights (recipe, data, model directory and architecture, heads directory
and its fit) runs before any model loads; `--dry-run` runs them all and lists every problem.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rl.errors import UserError
from rl.runtime.assets import resolve_model
from rl.runtime.cpu_distributed import apply_cpu_workarounds
from rl.runtime.library_noise import import_integrations_quietly
from rl.runtime.models import check_model_dir, load_tokenizer
from rl.runtime.outputs import check_output_dir, replace_dir
from rl.runtime.strict_yaml import load_recipe_file
from rl.runtime.wandb_secrets import move_secret_args, wandb_fallback
from rl.sft.data import load_rows, read_prompts
from rl.train.preflight.rules import read_deepspeed_config

EXAMPLES = """examples:
  rl sft --config recipes/caft/smoke-heads.yaml               # CAFT stage 1: self-distil, train the heads (CPU)
  rl sft --config recipes/caft/smoke-finetune.yaml            # CAFT stage 2: fine-tune with the frozen heads
  rl sft --config recipes/caft/llama3.1-8b-lora.yaml --dry-run
  rl sft --config RECIPE.yaml --resume_from_checkpoint auto
Any recipe field (TRL's SFTConfig, ModelConfig, the caft_* fields) can be overridden with --<field> <value>.
"""
HEADS_COMMAND = "rl sft (caft heads)"


def register(subparsers) -> None:
    p = subparsers.add_parser("sft", help="supervised fine-tuning (TRL SFT) with CAFT multi-token heads",
                              description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    p.add_argument("-h", "--help", action="store_true", help="show this help (and recipe fields with --help-fields)")
    p.add_argument("--help-fields", action="store_true", help="list every recipe field with its help text")
    p.add_argument("--config", help="the recipe (YAML); any other --field value overrides it")
    p.add_argument("--dry-run", action="store_true", help="check recipe, data, model config and heads without "
                   "loading weights; exit 2 with a numbered list of problems")
    p.set_defaults(func=run_sft_cli, _sft_parser=p, accepts_extra=True)


def run_sft_cli(args) -> int:
    if args.help_fields:
        make_parser().print_help()
        return 0
    if args.help or not (args.config or args.extra):
        args._sft_parser.print_help()
        return 0
    argv = (["--config", args.config] if args.config else []) + list(args.extra)
    return dry_run(argv) if args.dry_run else train(argv)


def make_parser():
    from trl import ModelConfig

    from rl.sft.config import CaftSFTConfig, SFTScriptArguments
    from rl.train.recipe import RecipeParser

    return RecipeParser(dataclass_types=[SFTScriptArguments, CaftSFTConfig, ModelConfig])


def parse_sft_recipe(argv: list[str], dry: bool = False):
    """(script_args, training_args, model_args); one line for a bad file, field, value or override.
    `dry`: parsed for the GPUs the recipe targets, so bf16 is not refused on a CPU login node."""
    from rl.train.recipe import _check_overrides, check_fields  # rl train's own checks, shared as they are

    parser = make_parser()
    where, data = "command line", {}
    if "--config" in argv:
        idx = argv.index("--config")
        if idx + 1 >= len(argv):
            raise UserError("--config needs a recipe path")
        path = Path(argv[idx + 1])
        data = load_recipe_file(path)
        check_fields(path, data, parser)
        where = str(path)
        _, problem = read_deepspeed_config(where, data.get("deepspeed"))
        if problem:
            raise UserError(problem)
    _check_overrides(argv, parser)
    from transformers.utils import is_torch_bf16_gpu_available

    # TRL's SFTConfig defaults to bf16: without bf16 GPUs here, leave it off unless the recipe asks for it
    # (the dry run always: it checks a recipe for the GPUs it targets, on a CPU login node)
    if not is_torch_bf16_gpu_available() and (dry or ("--bf16" not in argv and "bf16" not in data)):
        argv = [*argv, "--bf16", "false"]
    try:
        return parser.parse_args_and_config(argv)
    except SystemExit as exc:
        raise UserError("invalid command-line override (see the message above)") from exc
    except UserError as exc:
        message = str(exc)
        raise (exc if message.startswith(where) else UserError(f"{where}: {message}")) from None
    except (ValueError, TypeError) as exc:
        lines = str(exc).strip().splitlines()
        raise UserError(f"{where}: {lines[0] if lines else type(exc).__name__}") from None


def preflight(script_args, training_args, model_args, notes: list[str] | None = None) -> list[str]:
    """Every problem the weights-free checks find, in order (an empty list: ready to train); what could not
    be checked here (a hub model offline) goes to `notes`."""
    problems: list[str] = []
    notes = [] if notes is None else notes

    def check(fn, *a):
        try:
            return fn(*a)
        except UserError as exc:
            problems.append(str(exc))
            return None

    model_path = check(_model_path, model_args)
    caft = training_args.aux_mtp == "caft"
    if caft and training_args.caft_stage == "heads" and model_args.use_peft:
        problems.append("use_peft: caft_stage heads trains only the heads (the model is frozen); set use_peft: false")
    if script_args.dataset_path:
        check(_rows, script_args.dataset_path)
    elif caft and training_args.caft_stage == "heads" and training_args.caft_prompts:
        check(read_prompts, training_args.caft_prompts)
    else:
        problems.append("dataset_path: set the SFT rows (stage heads may set caft_prompts instead, to self-distil)")
    if caft and model_path is not None and not Path(model_path).is_dir():
        # a hub id: its config is not read offline (login nodes); the heads directory still is
        notes.append(f"model {model_args.model_name_or_path}: a hub id, not checked offline (architecture, heads fit)")
        if training_args.caft_stage == "finetune":
            from rl.sft.heads import read_heads_config

            check(read_heads_config, training_args.caft_heads_path)
    elif caft and model_path is not None:
        config = check(_model_config, model_path, model_args)
        if config is not None:
            check(_check_architecture, config)
            if training_args.caft_stage == "finetune":
                check(_check_saved_heads, training_args, config, model_args.model_name_or_path)
    return problems


def _model_path(model_args) -> str:
    if not model_args.model_name_or_path:
        raise UserError("model_name_or_path: set it (builtin:smollm2-135m-instruct, a hub id or a local dir)")
    path = resolve_model(model_args.model_name_or_path)
    check_model_dir(path)
    return path


def _rows(path: str):
    return load_rows(path)


def _model_config(path: str, model_args):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=bool(getattr(model_args, "trust_remote_code", False)))
    except Exception as exc:  # noqa: BLE001 - an unreadable config is the user's model dir
        raise UserError(f"model_name_or_path: cannot read the model config of {path} ({str(exc).splitlines()[0]})") from None


def _check_architecture(config) -> None:
    """Find the decoder layers on a weightless (meta-device) model built from the config."""
    import torch
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from rl.sft.heads import find_trunk

    try:  # the class itself, not from_config: under ZeRO-3 from_config would partition (and fail on meta)
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        with torch.device("meta"):
            model = model_class(config)
    except Exception as exc:  # noqa: BLE001 - not a causal LM transformers can build
        raise UserError(f"aux_mtp: caft needs a causal LM; {config.model_type} is not one transformers builds "
                        f"({str(exc).splitlines()[0][:160]})") from None
    find_trunk(model)


def _check_saved_heads(training_args, config, model_name: str) -> None:
    from rl.sft.heads import check_heads_match, model_identity, read_heads_config

    saved = read_heads_config(training_args.caft_heads_path)
    check_heads_match(saved, model_identity(config, model_name), training_args.caft_num_heads,
                      training_args.caft_head_kind)


def dry_run(argv: list[str]) -> int:
    script_args, training_args, model_args = parse_sft_recipe(argv, dry=True)
    notes: list[str] = []
    problems = preflight(script_args, training_args, model_args, notes)
    for note in notes:
        print(f"rl sft --dry-run: note: {note}")
    if problems:
        print(f"rl sft --dry-run: {len(problems)} problem(s)")
        for n, problem in enumerate(problems, 1):
            print(f"  {n}. {problem}")
        return 2
    what = (f"CAFT stage {training_args.caft_stage}, {training_args.caft_num_heads} {training_args.caft_head_kind} "
            "heads" if training_args.aux_mtp == "caft" else "plain SFT")
    print(f"rl sft --dry-run: ok ({what}; model {model_args.model_name_or_path}; output_dir {training_args.output_dir})")
    return 0


def train(argv: list[str]) -> int:
    apply_cpu_workarounds()  # before accelerate state exists

    import_integrations_quietly()
    script_args, training_args, model_args = parse_sft_recipe(argv)
    move_secret_args(training_args)
    problems = preflight(script_args, training_args, model_args)
    if problems:
        raise UserError(problems[0])
    if training_args.report_to and "wandb" in training_args.report_to:
        os.environ.setdefault("WANDB_DIR", str(Path(training_args.output_dir)))
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        wandb_fallback(training_args.report_to)
    try:
        return _train(script_args, training_args, model_args)
    finally:
        import sys

        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()


def _dataset(script_args, training_args, model_args, model_path: str, tokenizer):
    """(train, held-out): the rows, or stage 1's self-distilled set (built by the main process first)."""
    from accelerate import PartialState

    from rl.sft import data

    path = script_args.dataset_path
    if not path:
        directory = Path(training_args.output_dir) / "distilled"
        settings = data.distill_settings(training_args.caft_prompts, model_args.model_name_or_path,
                                         training_args.caft_distill_max_new_tokens)
        with PartialState().main_process_first():
            if PartialState().is_main_process and not data.reusable(directory, settings):
                data.build_distilled(directory, settings, model_path, tokenizer, data.read_prompts(training_args.caft_prompts),
                                     training_args.caft_distill_max_new_tokens, training_args.caft_distill_batch_size)
        path = str(directory / data.ROWS)
    return data.split_rows(data.load_rows(path), script_args.eval_fraction, training_args.seed)


def build_trainer(script_args, training_args, model_args, callbacks=()):
    from trl import get_peft_config

    from rl.sft.trainer import CaftSFTTrainer

    model_path = _model_path(model_args)
    tokenizer = load_tokenizer(model_path, model_args, training_args.trust_remote_code)
    train_ds, eval_ds = _dataset(script_args, training_args, model_args, model_path, tokenizer)
    init_kwargs = dict(training_args.model_init_kwargs or {})
    if model_args.dtype is not None:
        init_kwargs.setdefault("dtype", model_args.dtype)
    if model_args.attn_implementation is not None:
        init_kwargs.setdefault("attn_implementation", model_args.attn_implementation)
    training_args.model_init_kwargs = init_kwargs
    return CaftSFTTrainer(model=model_path, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
                          processing_class=tokenizer, peft_config=get_peft_config(model_args),
                          callbacks=list(callbacks), base_model_name=model_args.model_name_or_path)


def _train(script_args, training_args, model_args) -> int:
    from rl.runtime.checkpoint import CheckpointCallback, resolve_resume
    from rl.runtime.preemption import PreemptionCallback, PreemptionHandler
    from rl.runtime.wandb_run import wandb_run_callbacks

    caft = training_args.aux_mtp == "caft"
    heads_stage = caft and training_args.caft_stage == "heads"
    if heads_stage:  # the heads' directory is a safe output: refused before any work when foreign
        check_output_dir(training_args.heads_dir, "caft_heads_path", HEADS_COMMAND,
                         inputs={"model_name_or_path": model_args.model_name_or_path,
                                 "dataset_path": script_args.dataset_path, "caft_prompts": training_args.caft_prompts})
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    keep = training_args.save_total_limit
    training_args.save_total_limit = None  # CheckpointCallback rotates, after the COMPLETE marker
    handler = PreemptionHandler().install()
    try:
        callbacks = [CheckpointCallback(keep=keep), PreemptionCallback(handler), *wandb_run_callbacks(training_args)]
        trainer = build_trainer(script_args, training_args, model_args, callbacks=callbacks)
        trainer.train(resume_from_checkpoint=resume)
        if not handler.preempted:
            if heads_stage:
                _finish_heads(trainer, training_args)
            else:
                trainer.save_model(training_args.output_dir)
    finally:
        handler.uninstall()
        training_args.save_total_limit = keep
    if trainer.is_world_process_zero():
        print(f"output dir: {training_args.output_dir}")
        if handler.preempted:
            print(f"preempted: checkpoint saved at step {trainer.state.global_step}")
    handler.requeue_if_needed()
    return 0


def _finish_heads(trainer, training_args) -> None:
    """Stage 1's end: held-out top-1 per head offset, then the heads (with that report) apart from the policy."""
    from rl.sft.heads import heads_of, heads_state, write_heads

    report = trainer.heldout_top1()
    state = heads_state(heads_of(trainer.model))  # every rank joins the ZeRO-3 gather
    if not trainer.is_world_process_zero():
        return
    extra = {"stage": "heads", "decay": training_args.caft_decay, "global_step": trainer.state.global_step,
             "heldout_top1": {f"+{k + 1}": {"top1": round(v, 6), "positions": n} for k, (v, n) in report.items()}}
    target = training_args.heads_dir
    with replace_dir(target, HEADS_COMMAND) as tmp:
        write_heads(tmp, state, heads_of(trainer.model), trainer.caft_identity, extra)
    print(f"wrote CAFT heads to {target}")
    if report:
        print("held-out top-1 per head (head k predicts token t+1+k from position t):")
        for k, (top1, n) in report.items():
            print(f"  head {k} (token t+{k + 1}): top-1 {100 * top1:.2f}% over {n} positions")
