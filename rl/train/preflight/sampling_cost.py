"""The report's dynamic-sampling line: what is dropped, from which step, and what it costs.

DAPO's dynamic sampling (rl/train/dynamic_sampling*.py) keeps generating until a generation batch
holds its full number of informative groups. When a share p of groups is informative, filling a
batch takes about 1/p generation batches (2x at p = 0.5), never more than
`dynamic_sampling_max_batches`. The dry run states that cost before any GPU hour is spent: from the
signal check's measured share when the check ran here, else as the formula with the cap.
"""

from __future__ import annotations

from rl.train.preflight.report import Report


def expected_generation_batches(signal_share: float, max_batches: int) -> float:
    """Generation batches per step when a share `signal_share` of groups varies: 1/p, capped.

    1/p is the expectation for a large batch (each round keeps about p of its groups); a share of 0
    means every step runs to the cap (and the run stops after three such steps in a row)."""
    if not 0.0 <= signal_share <= 1.0:
        raise ValueError(f"signal_share must lie in [0, 1], got {signal_share}")
    if max_batches < 1:
        raise ValueError(f"max_batches must be at least 1, got {max_batches}")
    if signal_share == 0.0:
        return float(max_batches)
    return min(float(max_batches), 1.0 / signal_share)


def describe_dynamic_sampling(view, signal=None) -> str | None:
    """The `dynamic sampling` line of the report, or None when the recipe does not use it.

    `signal` is the dry run's SignalReport (rl/train/signal_check.py) when the check ran here."""
    if not getattr(view, "dynamic_sampling", False):
        return None
    metric = getattr(view, "dynamic_sampling_metric", "reward_std")
    cap = int(getattr(view, "dynamic_sampling_max_batches", 10))
    start = int(getattr(view, "dynamic_sampling_start_step", 0) or 0)
    what = "total reward" if metric == "reward_std" else f"`{metric}` reward"
    text = (f"groups whose {view.num_generations} completions all get the same {what} are dropped"
            + (f" from step {start}" if start else "")
            + f"; generation repeats with fresh prompts, at most {cap} generation batch(es) per step")
    if cap == 1:
        return text + "; at 1 it never refills: a step trains on fewer groups, generation costs nothing extra"
    text += (f". Extra generation cost: about 1/p generation batches per step when a share p of groups varies "
             f"(2x at p = 0.5), at most {cap}x")
    if signal is None or not signal.prompts:
        return text + "; the signal check at the start of training measures p"
    share = signal.signal_share
    batches = expected_generation_batches(share, cap)
    measured = f"the signal check saw p = {signal.groups_with_signal}/{signal.prompts}"
    if metric != "reward_std":
        measured += " (on the total reward)"
    if share == 0.0:
        return text + f"; {measured}: every step would run to the cap"
    # p falls as accuracy saturates (more groups all right): the start is the cheapest point, not the average
    return text + (f"; {measured}: about {batches:.2g} generation batches per step at the start "
                   f"(+{100 * (batches - 1):.0f}% generation time), more as accuracy saturates")


def check_dynamic_sampling(report: Report, view, signal=None) -> None:
    """Add the `dynamic sampling` line to the report when the recipe turns it on (a statement, never a problem:
    the fields' own rules are checked where the recipe is parsed)."""
    line = describe_dynamic_sampling(view, signal)
    if line is not None:
        report.add("dynamic sampling", line)
