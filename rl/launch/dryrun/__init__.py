"""`rl train --config RECIPE --dry-run`: check a recipe as a real run would see it, without loading weights.

What a run resolves, and what the dry-run checks instead (nothing is downloaded, no weights loaded):

* the recipe: every field known and well typed (all bad fields reported, not only the first), the
  command-line overrides, and TRL's own validation (`rl.train.recipe.parse_recipe`), evaluated for the
  machines the run will use: the world size below, and GPUs unless the recipe says `use_cpu`
  (so a bf16 GPU recipe can be checked on a CPU login node);
* the launch: world size (= training processes) from, in this order, `--num_processes N`,
  `--nodes N --gpus-per-node G` [`--vllm-server-node`], the recipe's `launch:` section (the
  settings `rl submit` reads), the accelerate config's `num_processes`, else 1. The accelerate
  config comes from `--accelerate_config PATH`, else a recipe field `accelerate_config` (when
  ScriptArguments has one), else `launch.accelerate_config`;
* the batch arithmetic TRL does at that world size (completions per optimizer step, generation
  batch, optimizer steps per generation batch) and its divisibility rules: the generation batch
  holds whole groups of `num_generations`, `generation_batch_size` splits into global batches,
  vLLM's tensor-parallel size divides the processes, the dataset holds at least one generation
  batch of prompts;
* DeepSpeed: the accelerate YAML (its inline `deepspeed_config`, or the JSON it names) and TRL's
  own `deepspeed` field (a JSON path or a dict): ZeRO stage, offload devices, explicit values
  that contradict the recipe (micro-batch, accumulation, train batch, bf16/fp16);
* rewards: every name resolves (`rewards.get_reward_funcs`), and each reward is called once on the
  first rows of the data with an empty completion (cheap: no model), which catches missing or
  malformed columns exactly as training would;
* data: `dataset_path` (only its features and first rows are read), or the `corpus` spec (its
  first document) plus the RPT build settings when the data is built at the start of the run;
* models (policy and RPT proxy): a local directory or an already converted `builtin:` model has its
  config (and tokenizer) read; a hub id is read only from the local Hugging Face cache, else it
  is listed under "not checked offline" (never an error: the hub may simply be unreachable here);
  lengths (prompt bound + `max_completion_length`) against the model's positions and vLLM's
  `vllm_max_model_length`;
* vLLM: server mode needs a host (or `rl submit --vllm-server-node`), colocate tensor parallelism
  fits the processes and one node.

Output: a resolved summary, then "not checked offline" items, notes, and a numbered list of
problems. Exit status 0 with no problems, 2 otherwise (like any user error of `rl`).

Modules: `run` (the order of the checks), `parse` (the recipe as the run's machines parse it),
`world` (launch plan and world size), `distributed` (accelerate config, DeepSpeed),
`reward_checks`, `models`, `data` / `dataset_peek` / `corpus` (training data), `batch` (batch
arithmetic, steps, checkpoints), `generation` (vLLM, lengths), `report` (the printed report),
`cli` (`main`, also `python -m rl.launch.dryrun`).
"""

from rl.launch.dryrun.cli import DRY_RUN_EXAMPLES, main
from rl.launch.dryrun.corpus import RPT_COLUMNS
from rl.launch.dryrun.dataset_peek import PEEK_ROWS, DataInfo
from rl.launch.dryrun.models import ModelInfo
from rl.launch.dryrun.parse import parse_for_target
from rl.launch.dryrun.report import EXIT_OK, EXIT_PROBLEMS, Report
from rl.launch.dryrun.reward_checks import PROBE_ROWS
from rl.launch.dryrun.run import dry_run
from rl.launch.dryrun.world import (
    LaunchPlan,
    plan_from_launch,
    resolve_plan,
    submit_parser,
)

__all__ = [
    "DRY_RUN_EXAMPLES",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "PEEK_ROWS",
    "PROBE_ROWS",
    "RPT_COLUMNS",
    "DataInfo",
    "LaunchPlan",
    "ModelInfo",
    "Report",
    "dry_run",
    "main",
    "parse_for_target",
    "plan_from_launch",
    "resolve_plan",
    "submit_parser",
]
