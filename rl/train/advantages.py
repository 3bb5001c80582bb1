"""Group advantage scaling G/(G-1), for any reward (recipe field `advantage_group_scaling`).

TRL's `scale_rewards: none` gives each completion the advantage r_i - mean(r) over its group of
G = `num_generations`. RLP (arXiv 2510.01265) and other leave-one-out estimators use
G/(G-1) (r_i - mean(r)) = r_i - mean(r without i): the same direction, scaled so it is the
unbiased leave-one-out baseline. The factor is the same for every group, so it commutes with
anything that keeps or drops whole groups (dynamic sampling).

`group_advantage_factor` is the plain function; `GroupAdvantageScalingMixin` applies it to the
advantages of every generation round TRL scores (put it before GRPOTrainer in the bases).
"""

from __future__ import annotations

__all__ = ["GroupAdvantageScalingMixin", "group_advantage_factor"]


def group_advantage_factor(num_generations: int, enabled: bool = True) -> float:
    """G/(G-1) when `enabled` and G >= 2, else 1 (a group of one has no leave-one-out baseline)."""
    if not enabled or num_generations < 2:
        return 1.0
    return num_generations / (num_generations - 1)


class GroupAdvantageScalingMixin:
    """Multiplies TRL's advantages of each scored generation round by `group_advantage_factor`
    (`args.advantage_group_scaling`; off for a plain GRPOConfig)."""

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        group = self.num_generations if self.model.training else getattr(self, "num_generations_eval", None)
        factor = group_advantage_factor(group or self.num_generations,
                                        bool(getattr(self.args, "advantage_group_scaling", False)))
        if factor != 1.0:
            out["advantages"] = out["advantages"] * factor
        return out
