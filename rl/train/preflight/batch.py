"""The report's batch arithmetic at the run's world size, and the steps and checkpoints that follow.

Completions per optimizer step, the generation batch and the optimizer steps it serves (TRL's
arithmetic: `RunPlan.generation_batch`), whether the dataset holds one generation batch of
prompts, and the output directory. The batch rules (whole prompt groups, global batches, the eval
batch, `save_steps` on generation-cycle boundaries) are the preflight's checks (checks.py).
"""

from __future__ import annotations

from pathlib import Path

from rl.errors import UserError
from rl.train.preflight.dataset_peek import DataInfo
from rl.train.preflight.plan import RunPlan
from rl.train.preflight.report import Report


def enum_value(x) -> str:
    """An enum's value (TrainingArguments turns strategies into enums), else str(x)."""
    return str(getattr(x, "value", x))


def check_batch(report: Report, view, run_plan: RunPlan, data: DataInfo | None) -> None:
    """The batch arithmetic at the run's world size, for the report; the batch rules themselves are the
    preflight's checks (rl/train/preflight/checks.py), which report a recipe that breaks them."""
    batch = run_plan.generation_batch()
    if isinstance(batch, str):
        return
    world, per_device, accum, G = batch.world, batch.per_device, batch.accumulation, batch.num_generations
    iters = int(getattr(view, "num_iterations", 1) or 1)
    gen_batch, spg, prompts = batch.size, batch.steps_per_generation, batch.prompts
    per_step = per_device * world * accum
    lines = [f"{per_device} completion(s)/device x {world} process(es) x {accum} accumulation = "
             f"{per_step} completions per optimizer step"
             + (f" = {per_step // G} prompts x {G}" if per_step % G == 0 else f" ({per_step / G:g} prompts x {G})")]
    if spg % accum == 0:
        opt_steps = spg * iters // accum
        lines.append(f"generation batch: {gen_batch} completions = {prompts} prompts x {G}, used for {opt_steps} "
                     f"optimizer step(s) (steps_per_generation {spg} / accumulation {accum}"
                     + (f" x num_iterations {iters}" if iters != 1 else "") + ")")
    else:
        opt_steps = spg * iters / accum
        lines.append(f"generation batch: {gen_batch} completions = {prompts} prompts x {G} every {spg} micro-steps")
        report.note(f"steps_per_generation {spg} is not a multiple of gradient_accumulation_steps {accum}: "
                    "generation batches straddle optimizer steps")
    if per_step % G and spg == accum:
        report.note(f"an optimizer step holds {per_step} completions, not whole groups of {G}")
    if getattr(view, "top_entropy_quantile", 1.0) < 1.0:
        scope = getattr(view, "entropy_mask_scope", "step")
        population = (f"each generation batch ({gen_batch} completions)" if scope == "step"
                      else f"each micro-batch ({per_device} completions/device, gathered over {world} processes)")
        lines.append(f"forking mask: top {view.top_entropy_quantile:g} of completion tokens by entropy over "
                     f"{population}; loss normalised over {getattr(view, 'entropy_mask_normalize', 'kept')} tokens")
    max_steps = int(getattr(view, "max_steps", -1) or -1)
    rows = data.num_rows if data is not None else None
    if rows is not None and rows < prompts:
        report.problem(f"{data.source}: {rows} rows, fewer than the {prompts} prompts of one generation batch; "
                       "TRL's sampler would yield no batch")
    if max_steps > 0:
        batches = max_steps / opt_steps
        consumed = batches * prompts
        text = f"max_steps {max_steps:,} optimizer steps = {batches:,.4g} generation batches = {consumed:,.0f} prompts"
        if rows:
            text += f" ({consumed / rows:.3g} passes over {rows:,} rows)"
        lines.append(text)
    elif rows:
        epochs = float(getattr(view, "num_train_epochs", 1) or 1)
        per_epoch = rows // prompts  # TRL's sampler drops an incomplete last generation batch
        lines.append(f"{epochs:g} epoch(s) of {per_epoch:,} generation batch(es) over {rows:,} rows = about "
                     f"{epochs * per_epoch * opt_steps:,.0f} optimizer steps")
    trl_gb = getattr(view, "_trl_generation_batch_size", None)
    if trl_gb is not None and trl_gb != gen_batch:  # our arithmetic and TRL's must agree
        report.note(f"TRL derived generation_batch_size {trl_gb}, the dry-run {gen_batch}")
    report.add("batch", "\n".join(lines))


def check_output(report: Report, view) -> None:
    """The output directory (and a checkpoint it already holds) and how often the run checkpoints."""
    out = Path(str(view.output_dir))
    text = str(out)
    if out.is_dir():
        from transformers.trainer_utils import get_last_checkpoint

        try:
            last = get_last_checkpoint(str(out))
        except Exception:  # noqa: BLE001
            last = None
        if last:
            text += f" (holds {Path(last).name}; --resume_from_checkpoint auto continues from it)"
    if enum_value(view.save_strategy) == "steps":
        text += f"; checkpoint every {view.save_steps} steps"
    report.add("output", text)
    resume = getattr(view, "resume_from_checkpoint", None)
    if resume is not None:
        from rl.runtime.checkpoint import resolve_resume

        try:  # the run resolves it the same way before any model loads
            resolve_resume(resume, str(out))
        except UserError as exc:
            report.problem(str(exc))
