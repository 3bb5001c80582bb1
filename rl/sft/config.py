"""Recipe dataclasses of `rl sft`: TRL's SFTConfig plus the CAFT fields (`aux_mtp: caft`), with help text.

A recipe is a TRL-style flat YAML file read by `trl.TrlParser` into three dataclasses:
`SFTScriptArguments` (data), `CaftSFTConfig` (TRL's SFTConfig plus the auxiliary multi-token heads)
and TRL's `ModelConfig` (model path, dtype, LoRA). Value checks that need no model happen in
`__post_init__`, so a bad field is one line before any weights load.

CAFT (concept-aware fine-tuning, arXiv 2506.07833): K auxiliary heads, head k predicting the token
k positions after the next one. Stage `heads` trains the heads on the frozen model (self-distilled
data); stage `finetune` trains the model with the frozen heads' loss as a small, fading auxiliary term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from rl.errors import UserError

AUX_MTP_CHOICES = ("none", "caft")
HEAD_KINDS = ("decoder_layer", "residual")
STAGES = ("heads", "finetune")
SCHEDULES = ("sine_down", "constant")


@dataclass
class SFTScriptArguments:
    """Where the supervised rows come from (the part of a recipe that is not TRL's config)."""

    dataset_path: str | None = field(
        default=None,
        metadata={"help": "SFT rows: a .jsonl file or a `save_to_disk` dir with TRL's columns (`prompt` + "
                  "`completion`, `messages`, or `text`). Stage `heads` may leave it unset and set "
                  "`caft_prompts` to build the self-distilled set instead."},
    )
    eval_fraction: float = field(
        default=0.1,
        metadata={"help": "Fraction of the rows held out (seeded split) for evaluation; stage `heads` reports "
                  "each head's held-out top-1 on them. 0: no held-out rows."},
    )


@dataclass
class CaftSFTConfig(SFTConfig):
    """TRL's SFTConfig plus concept-aware fine-tuning's auxiliary multi-token heads."""

    aux_mtp: str = field(
        default="none",
        metadata={"help": "Auxiliary multi-token prediction: `none` (plain TRL SFT) or `caft` (CAFT heads).",
                  "choices": list(AUX_MTP_CHOICES)},
    )
    caft_stage: str = field(
        default="finetune",
        metadata={"help": "`heads`: the model frozen, the heads trained (initialised from the last decoder layer), "
                  "loss sum_k decay^k CE_k, saved to `caft_heads_path` (default <output_dir>/caft-heads). "
                  "`finetune`: heads from `caft_heads_path` frozen, the model trained with "
                  "CE_0 + sum_k coefficient * decay^k * schedule(step) * CE_k.",
                  "choices": list(STAGES)},
    )
    caft_num_heads: int = field(
        default=4,
        metadata={"help": "Number of auxiliary heads K; head k (1..K) reads position t and predicts token t+1+k."},
    )
    caft_head_kind: str = field(
        default="decoder_layer",
        metadata={"help": "`decoder_layer`: one decoder layer of the model's own class per head (the paper's); "
                  "`residual`: a Medusa-style block x + SiLU(Wx), W zero-initialised (light). Either is "
                  "followed by the model's final norm and its shared LM head.",
                  "choices": list(HEAD_KINDS)},
    )
    caft_coefficient: float = field(
        default=0.01,
        metadata={"help": "Stage `finetune`: weight of the heads' loss (the paper's 0.01). 0 reproduces plain SFT "
                  "exactly (the heads still run, for their metrics)."},
    )
    caft_decay: float = field(
        default=0.8,
        metadata={"help": "Head k's loss is weighted decay^k (both stages; the paper's 0.8)."},
    )
    caft_schedule: str = field(
        default="sine_down",
        metadata={"help": "Stage `finetune`: `sine_down` multiplies the heads' loss by sin(pi/2 (S - s) / S), 1 at "
                  "step 0 falling to 0 at the last step S (the paper's); `constant`: 1.",
                  "choices": list(SCHEDULES)},
    )
    caft_heads_path: str | None = field(
        default=None,
        metadata={"help": "The heads' directory (caft_heads.json + caft_heads.safetensors). Stage `finetune`: "
                  "required, loaded strictly. Stage `heads`: where the trained heads go (default "
                  "<output_dir>/caft-heads)."},
    )
    caft_prompts: str | None = field(
        default=None,
        metadata={"help": "Stage `heads`: a prompt file (.txt one per line, or .jsonl with `prompt`) the base "
                  "model answers itself; the answers are the heads' training set (self-distillation), "
                  "built once into <output_dir>/distilled."},
    )
    caft_distill_max_new_tokens: int = field(
        default=256, metadata={"help": "Self-distillation: the longest answer generated per prompt (greedy)."},
    )
    caft_distill_batch_size: int = field(
        default=8, metadata={"help": "Self-distillation: prompts generated together (left-padded)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.aux_mtp not in AUX_MTP_CHOICES:
            raise UserError(f"aux_mtp: must be one of {list(AUX_MTP_CHOICES)}, got {self.aux_mtp!r}")
        if self.aux_mtp == "none":
            return
        for name, choices in (("caft_stage", STAGES), ("caft_head_kind", HEAD_KINDS),
                              ("caft_schedule", SCHEDULES)):
            if getattr(self, name) not in choices:
                raise UserError(f"{name}: must be one of {list(choices)}, got {getattr(self, name)!r}")
        if not 1 <= int(self.caft_num_heads) <= 16:
            raise UserError(f"caft_num_heads: must be 1..16, got {self.caft_num_heads}")
        if not self.caft_coefficient >= 0:
            raise UserError(f"caft_coefficient: must be >= 0, got {self.caft_coefficient}")
        if not 0 < self.caft_decay <= 1:
            raise UserError(f"caft_decay: must be in (0, 1], got {self.caft_decay}")
        if self.caft_stage == "finetune" and not self.caft_heads_path:
            raise UserError("caft_heads_path: stage `finetune` needs trained heads; train them with "
                            "`caft_stage: heads` and set caft_heads_path to their directory")
        if self.caft_distill_max_new_tokens < 1 or self.caft_distill_batch_size < 1:
            raise UserError("caft_distill_max_new_tokens / caft_distill_batch_size: must be >= 1")

    @property
    def heads_dir(self) -> str:
        """Where stage `heads` writes the heads (and stage `finetune` reads them)."""
        from pathlib import Path

        return self.caft_heads_path or str(Path(self.output_dir) / "caft-heads")
