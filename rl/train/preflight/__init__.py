"""`rl train --config RECIPE --dry-run`: check a recipe as a real run would see it, without loading weights.

The preflight is one list of checks (`checks.CHECKS`), each a function over a `RunPlan` (`plan.py`:
the parsed recipe, the world size, DeepSpeed's ZeRO stage, the resolved rewards) returning its
problem in one line or None. `rl train` raises the first problem before any weights load; the dry
run prints them all beside its report; `rl submit` runs the dry run and refuses on a problem.
Adding a check is one function and one entry in `CHECKS`.

What a run resolves, and what the dry-run's report shows and checks instead (nothing is
downloaded, no weights loaded):

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

Modules: `checks` (the check list) and `plan` (`RunPlan`); `rules` (TRL's batch arithmetic and
rules, the DeepSpeed config reader, the override scanner and `TargetMachine`, shared with the
recipe parser); the report: `dryrun` (assembles the report's sections in order), `parse` (the
recipe as the run's machines parse it), `world` (launch plan and world size), `distributed`
(accelerate config, DeepSpeed), `reward_checks`, `models`, `data` / `dataset_peek` / `corpus`
(training data), `batch` (batch arithmetic, steps, checkpoints), `generation` (vLLM, lengths),
`node_layout`, `signal` (RPT format, signal check), `report` (the printed report), `cli` (`main`,
also `python -m rl.train.preflight`).
"""
