"""Will GRPO have signal? The RPT format against the rewards, and the signal check on a local model.

* Format: data built from `corpus` gets `rpt_format` rows; a reward registered for another format
  (registry `rpt_format`), or one asking for a `\\boxed{}` answer on completion rows (`boxed_answer`),
  would stop the run at its first batch, so the dry run reports it now.
* Signal: when the policy is local (a directory or a builtin) and rows are at hand (a prepared
  dataset, or RPT data already built for this run), the dry run loads the weights (the only check
  that does) and runs the same signal check as `rl train` (rl/train/signal_check.py); otherwise it says
  when the check will run.
"""

from __future__ import annotations

from rewards.registry import REGISTRY, spec_of
from rl.errors import UserError
from rl.train.preflight.report import Report, exc_summary


def check_format(report: Report, view, funcs) -> None:
    """Rewards that read a fixed RPT format vs the format the corpus will be built in."""
    if getattr(view, "dataset_path", None) or not getattr(view, "corpus", None):
        return  # a prepared dataset's rows are checked by the reward probe on its first rows
    fmt = getattr(view, "rpt_format", "reasoning")
    fits = " or ".join(f"`{s.name}`" for s in REGISTRY.values() if s.rpt_format == fmt) or "one for that format"
    for func in funcs:
        spec = spec_of(func)
        if spec is None:
            continue
        name = getattr(func, "__name__", repr(func))
        if spec.rpt_format is not None and spec.rpt_format != fmt:
            report.problem(f"reward_funcs: `{name}` scores {spec.rpt_format}-format RPT rows but rpt_format is {fmt}; "
                           f"use reward {fits} or set rpt_format: {spec.rpt_format}")
        if spec.boxed_answer and spec.rpt_format is None and fmt == "completion":
            report.problem(f"reward_funcs: `{spec.name}` asks for a \\boxed{{}} answer but rpt_format is completion "
                           "(the completion itself is the guess); drop it")


def check_signal(report: Report, view, funcs, policy, rows: list[dict] | None):
    """Run the signal check when the model is local and training rows are at hand; its SignalReport
    (the dynamic-sampling cost reads it), or None when it did not run."""
    action = getattr(view, "signal_check", "stop")
    if action == "off":
        report.add("signal check", "off (signal_check: off)")
        return None
    if policy is None or policy.kind not in ("local", "builtin") or not policy.path:
        report.offline.append("signal check: runs when training starts (the model is not local here)")
        return None
    if not rows:
        report.add("signal check", "runs when training starts, on the RPT rows built then")
        return None
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rl.train.signal_check import format_hint, run_signal_check

        tokenizer = AutoTokenizer.from_pretrained(policy.path)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(policy.path, dtype=torch.float32)
        result = run_signal_check(
            model, tokenizer, rows, funcs, getattr(view, "reward_weights", None),
            generations=int(view.num_generations), max_new_tokens=int(view.max_completion_length),
            prompts=int(getattr(view, "signal_check_prompts", 8)), temperature=float(view.temperature),
            top_p=float(view.top_p), top_k=view.top_k, min_p=view.min_p,
            repetition_penalty=float(view.repetition_penalty), seed=int(view.seed))
    except UserError as exc:
        report.problem(str(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - the run would fail the same way at its first batch
        report.problem(f"signal check: sampling or scoring failed ({exc_summary(exc)})")
        return None
    report.add("signal check", result.format().removeprefix("signal check: ") + " (weights loaded for this check)")
    if result.groups_with_signal == 0:
        message = result.no_signal_message(format_hint(funcs))
        if action == "stop":
            report.problem(message)
        else:
            report.note(message)
    return result
