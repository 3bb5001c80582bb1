"""Recipe dataclasses of `rl train`: every field a recipe can set, with its help text.

A recipe is a TRL-style flat YAML file read by `trl.TrlParser` into three dataclasses:
`ScriptArguments` (data and rewards), `EntropyGRPOConfig` (TRL's GRPOConfig plus the forking-mask
fields) and TRL's `ModelConfig` (model path, dtype, LoRA). Reading and checking a recipe file is
rl/train/recipe.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from rl.data.settings import recipe_fields
from rl.errors import UserError
from rl.train.preflight.rules import (
    BatchRuleError,
    current_target,
    eval_batch_problem,
    generation_batch_problem,
    launch_world_size,
)

# The `rpt_*` fields (RPT build settings, e.g. rpt_min_entropy) are declared once in rl/data/settings.py.
RPTRecipeFields = recipe_fields()


@dataclass
class ScriptArguments(RPTRecipeFields):
    """Data and reward settings of a run (the part of a recipe that is not TRL's config); the `rpt_*`
    fields come from rl/data/settings.py."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "An RPT dataset made by `rl data rpt` (a `save_to_disk` dir or a .jsonl file), or any "
            "dataset with a `prompt` column plus the columns your rewards need. Leave unset and set "
            "`corpus` to build the RPT dataset first."
        },
    )
    corpus: str | None = field(
        default=None,
        metadata={
            "help": "Corpus to build RPT data from when `dataset_path` is unset: `builtin:champ`, a .txt file "
            "or dir, a .jsonl/.parquet file with a `text` column, or a local HF dataset dir. The built "
            "dataset goes to `<output_dir>/rpt-data` and is reused if already there."
        },
    )
    proxy_model: str | None = field(
        default=None,
        metadata={
            "help": "Model whose next-token entropy chooses the training positions (the paper uses a small "
            "model of the same family). Default: the policy model itself."
        },
    )
    accelerate_config: str | None = field(
        default=None,
        metadata={"help": "Accelerate config this recipe is meant for (e.g. recipes/accelerate/zero3.yaml); "
                  "`rl train --dry-run` checks it."},
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["rpt"],
        metadata={
            "help": "Reward functions by registry name (`rpt`, ...) or dotted import path "
            "(`my_pkg.rewards.my_reward`), each with TRL's reward-function signature."
        },
    )
    signal_check: str = field(
        default="stop",
        metadata={
            "help": "Before the first step, sample num_generations completions for `signal_check_prompts` "
            "training rows, score them with the recipe's rewards and print the mean reward and the share of "
            "groups whose rewards are not all equal (GRPO learns only from those). `stop`: stop with one line "
            "when no group has signal; `warn`: print and train anyway; `off`: skip."
        },
    )
    signal_check_prompts: int = field(
        default=8,
        metadata={"help": "Training rows (prompts) sampled by the signal check. It samples with transformers "
                  "`generate` (not vLLM) at max_completion_length: seconds for short completions, minutes for "
                  "4k-token reasoning; lower this for long-reasoning recipes. Skipped under ZeRO-3."},
    )
    eval_fraction: float = field(
        default=0.0, metadata={"help": "Hold out this fraction of rows (by document) as an eval split (0 <= f < 1)."}
    )
    rlp_thought_prompt: str = field(
        default="auto",
        metadata={
            "help": "RLP rows (`rpt_format: rlp`): how the thought is asked for. `chat`: an instruction in the chat "
            "template (the thought is the reply); `plain`: the raw context followed by ` <think>`, so the thought "
            "continues the text (base models; also small chat models); `auto`: chat when the tokenizer has a "
            "chat template.",
            "choices": ["auto", "chat", "plain"],
        },
    )

    # `rl submit --vllm-server-node`: the server's settings TRL's GRPOConfig has no field for (the others,
    # vllm_tensor_parallel_size, vllm_gpu_memory_utilization, vllm_max_model_length, vllm_server_port,
    # vllm_model_impl, reach `trl vllm-serve` too: rl/launch/vllm_server.py). Unset: vllm-serve's default.
    vllm_server_dtype: str | None = field(
        default=None,
        metadata={"help": "`rl submit --vllm-server-node`: the server's `--dtype` (auto, bfloat16, float16, "
                  "float32, half, float); unset: `trl vllm-serve`'s default (auto)."},
    )
    vllm_server_data_parallel_size: int | None = field(
        default=None,
        metadata={"help": "`rl submit --vllm-server-node`: the server's `--data_parallel_size` (vLLM engines on "
                  "the server node; TRL: keep 1 for dense models); unset: 1."},
    )
    vllm_server_enable_prefix_caching: bool | None = field(
        default=None,
        metadata={"help": "`rl submit --vllm-server-node`: the server's `--enable_prefix_caching` (shared prompt "
                  "prefixes of a group computed once); unset: vLLM's default."},
    )

    def __post_init__(self):
        if not 0.0 <= float(self.eval_fraction) < 1.0:
            raise UserError(f"eval_fraction: must be in [0, 1) (a fraction held out for eval; 0 = none), "
                            f"got {self.eval_fraction}")
        if self.rpt_format not in ("reasoning", "completion", "rlp"):
            raise UserError(f"rpt_format: expected `reasoning`, `completion` or `rlp`, got {self.rpt_format!r}")
        if self.rlp_thought_prompt not in ("auto", "chat", "plain"):
            raise UserError(f"rlp_thought_prompt: expected `auto`, `chat` or `plain`, got {self.rlp_thought_prompt!r}")
        if self.signal_check not in ("stop", "warn", "off"):
            raise UserError(f"signal_check: expected `stop`, `warn` or `off`, got {self.signal_check!r}")
        if self.signal_check_prompts < 1:
            raise UserError(f"signal_check_prompts: must be at least 1, got {self.signal_check_prompts}")


@dataclass
class EntropyGRPOConfig(GRPOConfig):
    """TRL's GRPOConfig plus the forking-token mask ("Beyond the 80/20 Rule", arXiv 2506.01939).

    `top_entropy_quantile` keeps TRL's meaning: the fraction of completion tokens that receive
    policy gradient (0.2 in the paper; 1.0 turns the mask off).
    """

    entropy_mask_scope: str = field(
        default="step",
        metadata={
            "help": "`step`: choose the top-`top_entropy_quantile` tokens over every completion token of one "
            "generation batch (all ranks, its `steps_per_generation` micro-batches per rank), from the policy's "
            "entropies at generation time. That is one optimizer step when steps_per_generation equals "
            "gradient_accumulation_steps (TRL's default); with steps_per_generation = k x "
            "gradient_accumulation_steps the population spans k optimizer steps. `micro_batch`: TRL / "
            "paper-code behaviour, per micro-batch."
        },
    )
    entropy_mask_normalize: str = field(
        default="kept",
        metadata={
            "help": "`kept`: average the policy loss over the kept tokens (paper Eq. 6). `all`: over all "
            "completion tokens, as TRL does (the update shrinks by about the kept ratio)."
        },
    )
    entropy_mask_side: str = field(
        default="top",
        metadata={
            "help": "`top`: train on the `top_entropy_quantile` highest-entropy tokens (the paper's method). "
            "`bottom`: train on the complement, the 1 - `top_entropy_quantile` lowest-entropy tokens (the "
            "paper's bottom-80% ablation at 0.2); same scope, tie-break and normalisation.",
            "choices": ["top", "bottom"],
        },
    )
    forking_table_steps: int = field(
        default=50,
        metadata={"help": "Every this many steps, log a W&B table of the most frequent forking tokens (0: never)."},
    )
    max_bad_steps: int = field(
        default=3,
        metadata={
            "help": "An optimizer step whose gradients hold NaN/inf is skipped (not applied, not saved) and counted; "
            "after this many consecutive bad steps the run stops with a clear error (rl/runtime/faults.py)."
        },
    )
    reward_error_policy: str = field(
        default="raise",
        metadata={
            "help": "When a reward function raises (or returns a non-finite or non-numeric score): `raise` stops "
            "the run with an error naming the reward and the sample; `none` scores only the failing samples None "
            "from that reward (a sample every reward scores None is left out of its group's baseline and gets "
            "advantage 0) and goes on, with a warning and a `reward_errors/<name>` metric.",
            "choices": ["raise", "none"],
        },
    )
    overlong_buffer_length: int | None = field(
        default=None,
        metadata={"help": "Reward `soft_overlong_punishment` (DAPO's overlong shaping, TRL's function): completions "
                  "longer than max_completion_length minus this many tokens are penalised linearly from 0 down to "
                  "-1 at max_completion_length (DAPO: 4096 at 20480). Needed by that reward, unused otherwise."},
    )

    rlp_teacher: str = field(
        default="ema",
        metadata={
            "help": "RLP reward (`rlp`): the model scoring the no-think baseline log p(x_t | x_<t). `ema` (the "
            "paper's): moving average of the policy, updated after each optimizer step (LoRA: the adapter "
            "weights only; saved in checkpoints). `base`: the initial model (LoRA: adapter disabled). `none`: "
            "baseline 0. Under ZeRO-3 `ema` and `base` need LoRA. The baseline is the same for all thoughts of a "
            "group, so it changes the logged information gain, not the gradient.",
            "choices": ["ema", "base", "none"],
        },
    )
    rlp_ema_decay: float = field(
        default=0.999, metadata={"help": "RLP `ema` teacher: ema <- decay * ema + (1 - decay) * policy (paper: 0.999)."}
    )
    rlp_next_tokens: int = field(
        default=1,
        metadata={"help": "RLP: how many true next tokens are scored after the thought (log-probs summed). "
                  "The paper scores one."},
    )
    rlp_score_batch_size: int = field(
        default=8,
        metadata={"help": "RLP: sequences per no-grad scoring forward (the LM head sees only the scored "
                  "positions; every rank makes the same number of calls)."},
    )
    rlp_table_steps: int = field(
        default=50,
        metadata={"help": "RLP: every this many steps, log a W&B table of the best and worst thoughts (0: never)."},
    )
    advantage_group_scaling: bool = field(
        default=False,
        metadata={"help": "Multiply advantages by G/(G-1) (G = num_generations). With `scale_rewards: none` this "
                  "gives RLP's advantage G/(G-1) (r_i - mean r) exactly; TRL alone gives r_i - mean r."},
    )
    dynamic_sampling: bool = field(
        default=False,
        metadata={"help": "DAPO's dynamic sampling (arXiv 2503.14476): drop every group whose `num_generations` "
                  "completions all score the same (zero advantage, no gradient) and generate again with fresh "
                  "prompts until the generation batch holds its full number of groups, or "
                  "`dynamic_sampling_max_batches` generation batches were made (then train on the groups kept; "
                  "logged, warned once). All ranks keep the same number of groups. Logs dynamic_sampling/*."},
    )
    dynamic_sampling_metric: str = field(
        default="reward_std",
        metadata={"help": "What makes a group uninformative: `reward_std` (the group's total reward, TRL's "
                  "weighted sum, has standard deviation 0), or the name of one reward in `reward_funcs` (that "
                  "reward's scores are all equal in the group, as verl's `filter_groups.metric`)."},
    )
    dynamic_sampling_max_batches: int = field(
        default=10,
        metadata={"help": "Dynamic sampling: at most this many generation batches per training generation batch "
                  "(the first included; verl's `max_num_gen_batches`). At 1 it only drops groups, never refills."},
    )
    dynamic_sampling_start_step: int = field(
        default=0,
        metadata={"help": "Dynamic sampling acts from this optimizer step on (0: from the start; RPT used it from "
                  "step 500); before it, every group is trained as TRL does."},
    )

    def __post_init__(self):
        if self.entropy_mask_scope not in ("step", "micro_batch"):
            raise UserError(
                f"entropy_mask_scope: expected `step` or `micro_batch`, got {self.entropy_mask_scope!r}"
            )
        if self.entropy_mask_normalize not in ("kept", "all"):
            raise UserError(
                f"entropy_mask_normalize: expected `kept` or `all`, got {self.entropy_mask_normalize!r}"
            )
        if self.entropy_mask_side not in ("top", "bottom"):
            raise UserError(f"entropy_mask_side: expected `top` or `bottom`, got {self.entropy_mask_side!r}")
        if not 0.0 < self.top_entropy_quantile <= 1.0:
            raise UserError(
                f"top_entropy_quantile: the fraction of tokens kept must be in (0, 1], got {self.top_entropy_quantile}"
            )
        if self.entropy_mask_side == "bottom" and self.top_entropy_quantile >= 1.0:
            # 1.0 turns the mask off, so `bottom` would silently train on every token instead of none.
            raise UserError("entropy_mask_side: `bottom` trains on the 1 - top_entropy_quantile lowest-entropy tokens, "
                            "which is nothing at top_entropy_quantile 1.0; set top_entropy_quantile below 1 (the "
                            "paper's bottom-80% ablation: 0.2) or entropy_mask_side: top")
        if self.reward_error_policy not in ("raise", "none"):
            raise UserError(f"reward_error_policy: expected `raise` or `none`, got {self.reward_error_policy!r}")
        if self.rlp_teacher not in ("ema", "base", "none"):
            raise UserError(f"rlp_teacher: expected `ema`, `base` or `none`, got {self.rlp_teacher!r}")
        if not 0.0 <= self.rlp_ema_decay < 1.0:
            raise UserError(f"rlp_ema_decay: must be in [0, 1) (paper: 0.999), got {self.rlp_ema_decay}")
        for name in ("rlp_next_tokens", "rlp_score_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.rlp_table_steps < 0:
            raise UserError(f"rlp_table_steps: must be >= 0 (0: no table), got {self.rlp_table_steps}")
        if self.advantage_group_scaling and self.num_generations is not None and self.num_generations < 2:
            raise UserError("advantage_group_scaling: needs num_generations >= 2 (G/(G-1))")
        if self.dynamic_sampling and self.num_generations is not None and self.num_generations < 2:
            raise UserError("dynamic_sampling: needs num_generations >= 2 (a group of one completion always has equal "
                            "rewards, so every group would be dropped)")
        if self.dynamic_sampling_max_batches < 1:
            raise UserError(f"dynamic_sampling_max_batches: must be at least 1 (the first generation batch counts), "
                            f"got {self.dynamic_sampling_max_batches}")
        if self.dynamic_sampling_start_step < 0:
            raise UserError(f"dynamic_sampling_start_step: must be >= 0, got {self.dynamic_sampling_start_step}")
        if self.dynamic_sampling and 0 < self.max_steps <= self.dynamic_sampling_start_step:
            raise UserError(f"dynamic_sampling_start_step: {self.dynamic_sampling_start_step} is not below max_steps "
                            f"{self.max_steps}, so dynamic sampling would never act; lower it or set "
                            "dynamic_sampling: false")
        if not self.dynamic_sampling_metric:
            raise UserError("dynamic_sampling_metric: expected `reward_std` or the name of a reward in reward_funcs")
        # Values torch/TRL would only reject after the model has loaded (or never).
        for name in ("max_bad_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "num_iterations"):
            value = getattr(self, name, None)
            if value is not None and value < 1:
                raise UserError(f"{name}: must be at least 1, got {value}")
        if self.max_completion_length is not None and self.max_completion_length < 1:
            raise UserError(f"max_completion_length: must be at least 1 token, got {self.max_completion_length}")
        if self.learning_rate < 0:
            raise UserError(f"learning_rate: must be >= 0, got {self.learning_rate}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise UserError(f"max_steps: must be a positive number of optimizer steps, or -1 to train for "
                            f"num_train_epochs, got {self.max_steps}")
        # TRL's batch rules, worded with the fix; the dry run reports the same functions' words.
        world = launch_world_size()
        batch_problem = generation_batch_problem(
            self.per_device_train_batch_size, self.gradient_accumulation_steps, self.num_generations,
            self.generation_batch_size, self.steps_per_generation, world) or eval_batch_problem(
            self.eval_strategy, self.per_device_eval_batch_size, world, self.num_generations_eval or self.num_generations)
        if batch_problem:
            raise BatchRuleError(batch_problem)
        super().__post_init__()

    @property
    def world_size(self) -> int:
        """The processes this config is for: the dry run's target machine while parsing for one, else the
        launch's own (transformers' `TrainingArguments.world_size`)."""
        target = current_target()
        return target.world_size if target is not None else super().world_size


def entropy_setting(args, name: str):
    """`args.<name>`, or `EntropyGRPOConfig`'s default for the field when `args` is a plain GRPOConfig:
    the trainer reads every entropy-rl field through this, so each has one default (the dataclass's)."""
    if hasattr(args, name):
        return getattr(args, name)
    return EntropyGRPOConfig.__dataclass_fields__[name].default
