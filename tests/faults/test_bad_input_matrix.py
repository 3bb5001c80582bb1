"""The bad-input matrix: every subcommand's bad input, through the real CLI (`rl.cli.main`, in process).

Each case in `CASES` is one command line that must be refused before any work: exit status 2, exactly one
`error: ...` line that contains every `expect` string (the option or field at fault, and the subcommand
where argparse reports it), no model weights loaded (`forbid_model_load`), and the whole tree of inputs
and outputs (`in/`, `out/`) unchanged byte for byte.

A new command (or a new flag of one) adds its cases HERE: one `Case(id, argv, expect)` row per kind of
bad input (NaN/inf and out-of-range numbers, a missing/unreadable/non-UTF-8 input, an output that is or
holds an input, an output of another command, contradictory or ignored flags, unknown flags). argv may
use the placeholders {in} (the inputs dir), {out} (the outputs dir) and {model} (a tiny local model);
`WORLD` says what is in them. Keep cases fast: they must fail before a model loads.

Recipes with bad values are `rl train` cases; the dry run's own report of them is `DRY_RUN_CASES`
(exit 2, the field named in its problems, nothing written).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.faults.helpers import one_error_line, run_cli
from tests.kit import rpt_rows, tiny_recipe, write_jsonl, write_yaml

CHAINS = [{"id": f"c{i}", "question": f"What is {i} + {i}?", "reasoning": f"{i} plus {i} makes {2 * i}.",
           "answer": str(2 * i)} for i in range(3)]
CORPUS = [{"doc": f"d{i}", "text": f"Document {i}: the quick brown fox jumps over the lazy dog. " * 4}
          for i in range(3)]


def _world(root: Path, model: Path) -> dict[str, str]:
    """WORLD: in/ holds every kind of input; out/ holds outputs a bad command must leave alone."""
    inp, out = root / "in", root / "out"
    write_jsonl(inp / "chains.jsonl", CHAINS)
    write_jsonl(inp / "corpus.jsonl", CORPUS)
    write_jsonl(inp / "data.jsonl", rpt_rows(32))  # enough for a 2-rank generation batch (rl submit --cpu)
    (inp / "prompts.txt").write_text("What is 2+2?\n", encoding="utf-8")
    (inp / "notes.txt").write_text(CORPUS[0]["text"], encoding="utf-8")
    (inp / "bad-utf8.jsonl").write_bytes(json.dumps(CHAINS[0]).encode() + b'\n{"question": "caf\xe9"}\n')
    (inp / "a-directory").mkdir()
    adapter = inp / "adapter"  # a LoRA adapter dir on the tiny model
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(model)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    # an `rl data rpt` output (marker + its files) and an `rl prune` output holding the user's few-shot file
    rpt = out / "rpt"
    write_jsonl(rpt / "rows.jsonl", rpt_rows(2))
    (rpt / "rl-output.json").write_text(json.dumps({"command": "rl data rpt", "files": ["rows.jsonl"]}))
    write_jsonl(out / "prune" / "fewshot.jsonl", CHAINS[:1])
    (out / "prune" / "rl-output.json").write_text(json.dumps({"command": "rl prune", "files": []}))
    (out / "gen" / "template.txt").parent.mkdir(parents=True)
    (out / "gen" / "template.txt").write_text("Predict: {context}", encoding="utf-8")
    for name, fields in (("lr-nan", {"learning_rate": float("nan")}), ("min-entropy-nan", {"rpt_min_entropy": float("nan")}),
                         ("temperature-0", {"temperature": 0}), ("lora-r-0", {"use_peft": True, "lora_r": 0}),
                         ("lr-inf", {"learning_rate": float("inf")})):
        write_yaml(inp / f"{name}.yaml", tiny_recipe(model, out / f"run-{name}", dataset_path=str(inp / "data.jsonl"),
                                                     **fields))
    write_yaml(inp / "recipe.yaml", tiny_recipe(model, out / "run", dataset_path=str(inp / "data.jsonl")))
    for name, launch in (("launch-bad-time", {"cpu": True, "time": "25:99"}),
                         ("launch-cpu-gpus", {"cpu": True, "gpus_per_node": 8})):
        write_yaml(inp / f"{name}.yaml", tiny_recipe(model, out / "run", dataset_path=str(inp / "data.jsonl"),
                                                     launch=launch))
    return {"in": str(inp), "out": str(out), "model": str(model)}


@dataclass
class Case:
    id: str
    argv: str  # one command line; placeholders {in} {out} {model}
    expect: list[str] = field(default_factory=list)  # substrings of the one error line


PRUNE = "prune --data {in}/chains.jsonl --model {model} -o {out}/new-prune"
SAMPLE = PRUNE + " --sample 2 --reward math"
BITS = "profile bits --model {model} --data {in}/corpus.jsonl --text-field text -o {out}/bits"
ENTROPY = "profile entropy --model {model} --data {in}/corpus.jsonl --text-field text -o {out}/entropy"
RPT = "data rpt --corpus {in}/corpus.jsonl --proxy-model {model} -o {out}/new-rpt"
RLP = "data rlp --corpus {in}/corpus.jsonl --proxy-model {model} -o {out}/new-rlp"
EVAL = "eval next-token --model {model} --data {in}/data.jsonl"
MATH = "eval math --model {model} --data {in}/data.jsonl"  # RPT rows: no `solution` column
SUBMIT = "submit --config {in}/recipe.yaml --dry-run"
SFT = "sft --model_name_or_path {model} --dataset_path {in}/corpus.jsonl --aux_mtp caft --output_dir {out}/sft"

CASES = [
    # --- data loss: each command owns its outputs; --overwrite never touches an input
    Case("rlp-over-rpt-output", "data rlp --corpus {in}/corpus.jsonl --proxy-model {model} -o {out}/rpt",
         ["--output", "`rl data rpt`", "`rl data rlp`"]),
    Case("prune-overwrite-few-shot-inside", SAMPLE.replace("{out}/new-prune", "{out}/prune")
         + " --overwrite --few-shot {out}/prune/fewshot.jsonl", ["--output-dir", "--few-shot"]),
    Case("rpt-overwrite-template-inside", RPT.replace("{out}/new-rpt", "{out}/gen")
         + " --overwrite --prompt-template-file {out}/gen/template.txt", ["--output", "--prompt-template-file"]),
    Case("eval-output-is-data", EVAL + " --output {in}/data.jsonl --overwrite", ["--output", "--data"]),
    # --- unreadable inputs, named by their own flag
    Case("prune-data-non-utf8", PRUNE.replace("chains.jsonl", "bad-utf8.jsonl"), ["--data", "bad-utf8.jsonl:2", "UTF-8"]),
    Case("prune-few-shot-non-utf8", SAMPLE + " --few-shot {in}/bad-utf8.jsonl", ["--few-shot", "bad-utf8.jsonl:2"]),
    Case("prune-few-shot-missing", SAMPLE + " --few-shot {in}/nope.jsonl", ["--few-shot", "no such file"]),
    Case("prune-data-directory", PRUNE.replace("chains.jsonl", "a-directory"), ["--data", "is a directory"]),
    Case("prune-model-adapter", PRUNE.replace("{model}", "{in}/adapter"), ["--model", "LoRA adapter"]),
    Case("prune-policy-adapter", SAMPLE + " --policy {in}/adapter", ["--policy", "LoRA adapter"]),
    Case("prune-bad-reward", PRUNE + " --sample 2 --reward no_such_reward", ["--reward no_such_reward"]),
    Case("prune-output-unwritable", PRUNE.replace("{out}/new-prune", "/proc/rl-bad-input"), ["--output-dir", "/proc"]),
    Case("rlp-id-field-missing", RLP + " --id-field nope", ["'nope'", "--id-field"]),
    Case("rpt-id-field-missing", RPT + " --id-field nope", ["'nope'", "--id-field"]),
    Case("rpt-id-field-on-txt", RPT.replace("corpus.jsonl", "notes.txt") + " --id-field doc", ["--id-field", ".txt"]),
    # --- numbers: finite and in range, before any work
    Case("bits-threshold-nan", BITS + " --threshold nan", ["rl profile bits", "--threshold", "finite"]),
    Case("bits-threshold-inf", BITS + " --threshold inf", ["--threshold", "finite"]),
    Case("bits-threshold-add-nan", BITS + " --threshold-add nan", ["--threshold-add", "finite"]),
    Case("bits-target-inf", BITS + " --target-bytes-per-patch inf", ["--target-bytes-per-patch", "finite"]),
    Case("bits-target-zero", BITS + " --target-bytes-per-patch 0", ["--target-bytes-per-patch", "> 0"]),
    Case("bits-temperature-nan", "profile bits --model {model} --generate {in}/prompts.txt -o {out}/bits "
         "--temperature nan", ["--temperature", "finite"]),
    Case("bits-eta-out-of-range", BITS + " --eta 1.5", ["--eta", "[0, 1]"]),
    Case("entropy-temperature-nan", ENTROPY + " --temperature nan", ["rl profile entropy", "--temperature"]),
    Case("entropy-temperature-inf", ENTROPY.replace("--data {in}/corpus.jsonl", "--generate {in}/prompts.txt")
         + " --temperature inf", ["--temperature", "finite"]),
    Case("rpt-min-entropy-nan", RPT + " --min-entropy nan", ["rl data rpt", "--min-entropy"]),
    Case("rpt-min-surprise-nan", RPT + " --select-by surprisal --min-surprise nan", ["--min-surprise"]),
    Case("rlp-top-k-zero", RLP + " --top-k 0", ["rl data rlp", "--top-k", "at least 1"]),
    Case("rpt-shard-index-out-of-range", RPT + " --num-shards 2 --shard-index 2", ["--shard-index 2", "out of range"]),
    Case("rpt-shard-index-alone", RPT + " --shard-index 1", ["--num-shards and --shard-index", "give both"]),
    Case("merge-no-shards", "data merge -o {out}/new-rpt", ["--output", "no shards to merge"]),
    Case("prune-min-reward-nan", SAMPLE + " --min-reward nan", ["--min-reward", "finite"]),
    Case("prune-temperature-zero", SAMPLE + " --temperature 0", ["--temperature", "> 0"]),
    Case("prune-max-chain-tokens-negative", PRUNE + " --max-chain-tokens -5", ["--max-chain-tokens", "at least 1"]),
    Case("prune-keep-collide", PRUNE + " --keep 0.3,0.301,0.5", ["--keep", "sft/keep-0.30.jsonl"]),
    Case("prune-keep-empty", PRUNE + " --keep ,", ["--keep", "comma-separated"]),
    Case("prune-keep-nan", PRUNE + " --keep nan", ["--keep", "[0, 1]"]),
    Case("eval-temperature-inf", EVAL + " --temperature inf", ["rl eval next-token", "--temperature"]),
    Case("eval-thresholds-nan", EVAL + " --thresholds 0.5,nan,1.5", ["--thresholds", "finite"]),
    Case("eval-limit-zero", EVAL + " --limit 0", ["--limit", "at least 1"]),
    Case("math-no-solution-column", MATH, ["--data", "no `solution` column"]),
    Case("math-data-missing", MATH.replace("data.jsonl", "nope.jsonl"), ["--data", "no such file"]),
    Case("math-samples-zero", MATH + " --samples 0", ["rl eval math", "--samples", "at least 1"]),
    Case("math-pass-k-above-samples", MATH + " --samples 4 --pass-k 1,8", ["--pass-k", "between 1 and --samples"]),
    Case("math-output-is-data", MATH + " --output {in}/data.jsonl --overwrite", ["--output", "--data"]),
    # --- recipes: values a run cannot use (rl train; the dry run: DRY_RUN_CASES)
    Case("train-learning-rate-nan", "train --config {in}/lr-nan.yaml", ["learning_rate", "finite"]),
    Case("train-learning-rate-inf", "train --config {in}/lr-inf.yaml", ["learning_rate", "finite"]),
    Case("train-rpt-min-entropy-nan", "train --config {in}/min-entropy-nan.yaml", ["rpt_min_entropy", "finite"]),
    Case("train-temperature-0", "train --config {in}/temperature-0.yaml", ["temperature", "> 0"]),
    Case("train-lora-r-0", "train --config {in}/lora-r-0.yaml", ["lora_r", "at least 1"]),
    Case("train-override-nan", "train --config {in}/recipe.yaml --learning_rate nan", ["--learning_rate", "finite"]),
    Case("train-dynamic-sampling-one-generation", "train --config {in}/recipe.yaml --dynamic_sampling true "
         "--num_generations 1", ["dynamic_sampling", "num_generations >= 2"]),
    Case("train-dynamic-sampling-cap-0", "train --config {in}/recipe.yaml --dynamic_sampling_max_batches 0",
         ["--dynamic_sampling_max_batches", "at least 1"]),
    Case("train-dynamic-sampling-unknown-metric", "train --config {in}/recipe.yaml --dynamic_sampling true "
         "--dynamic_sampling_metric no_such_reward", ["dynamic_sampling_metric", "'no_such_reward'", "reward_std"]),
    Case("train-dynamic-sampling-start-beyond-max-steps", "train --config {in}/recipe.yaml --dynamic_sampling true "
         "--max_steps 3 --dynamic_sampling_start_step 5", ["dynamic_sampling_start_step", "max_steps 3"]),
    # --- rl submit: Slurm times parsed, ignored flags refused
    Case("submit-cpu-and-gpus", SUBMIT + " --cpu --gpus-per-node 8", ["--gpus-per-node", "--cpu"]),
    Case("submit-time-bad-seconds", SUBMIT + " --cpu --time 25:99", ["rl submit", "--time", "25:99"]),
    Case("submit-time-bad-hours", SUBMIT + " --cpu --time 1-25:00", ["--time", "hours"]),
    Case("submit-time-garbage", SUBMIT + " --cpu --time soon", ["--time", "D-HH:MM:SS"]),
    Case("submit-signal-after-time", SUBMIT + " --cpu --time 00:01:00 --signal-seconds 600",
         ["--signal-seconds 600", "--time 00:01:00"]),
    Case("bits-text-field-missing", BITS.replace("--text-field text", "--text-field body"), ["'body'", "--text-field"]),
    # --- rl sft (CAFT; more in tests/rl/sft/test_sft_command.py: heads of another size or model, no decoder layers)
    Case("sft-finetune-without-heads", "sft --model_name_or_path {model} --aux_mtp caft --output_dir {out}/sft",
         ["caft_heads_path", "caft_stage: heads"]),
    Case("sft-heads-path-missing", SFT + " --caft_heads_path {in}/nope", ["caft_heads_path", "does not exist"]),
    Case("sft-heads-path-not-heads", SFT + " --caft_heads_path {in}/a-directory", ["caft_heads_path", "no CAFT heads"]),
    Case("sft-num-heads-0", SFT + " --caft_heads_path {in}/nope --caft_num_heads 0", ["caft_num_heads", "1..16"]),
    Case("sft-head-kind-unknown", SFT + " --caft_head_kind mlp", ["--caft_head_kind", "decoder_layer"]),
    # --- rl recipes
    Case("recipes-copy-unknown", "recipes copy no-such-recipe -o {out}/recipes", ["no-such-recipe"]),
    # --- argparse: one line naming the subcommand (usage stays in --help)
    Case("prune-unknown-flag", PRUNE + " --bogus", ["rl prune", "unrecognized arguments: --bogus"]),
    Case("bits-unknown-flag", BITS + " --bogus 1", ["rl profile bits", "--bogus"]),
    Case("rpt-missing-corpus", "data rpt -o {out}/x", ["rl data rpt", "--corpus"]),
    Case("unknown-command", "frobnicate", ["rl", "invalid choice"]),
    Case("recipes-unknown-flag", "recipes list --bogus", ["rl recipes list", "--bogus"]),
    Case("submit-launch-bad-time", "submit --config {in}/launch-bad-time.yaml --dry-run", ["launch.time", "25:99"]),
    Case("submit-launch-cpu-gpus", "submit --config {in}/launch-cpu-gpus.yaml --dry-run", ["launch", "--cpu"]),
    Case("submit-unknown-flag", SUBMIT + " --cpu --bogus 1", ["rl submit", "--bogus"]),
    Case("submit-vllm-server-more-gpus-than-node", SUBMIT + " --nodes 2 --gpus-per-node 2 --vllm-server-node -- "
         "--vllm_tensor_parallel_size 4", ["vllm_tensor_parallel_size", "the node has 2"]),
    Case("submit-vllm-server-bad-dtype", SUBMIT + " --nodes 2 --gpus-per-node 1 --vllm-server-node -- "
         "--vllm_server_dtype fp8", ["vllm_server_dtype", "'fp8'"]),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with a digest of its bytes ('dir' for directories)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("bad-input")
    return root, _world(root, tiny_model_dir)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_before_any_work(case, world, forbid_model_load, monkeypatch):
    root, places = world
    monkeypatch.chdir(root)
    before = _snapshot(root)
    argv = [a.format(**places) for a in case.argv.split()]
    line = one_error_line(*run_cli(argv))
    for needle in case.expect:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert _snapshot(root) == before, "a refused command changed its inputs or outputs"


DRY_RUN_CASES = [
    ("launch-bad-time", "launch.time"),
    ("lr-nan", "learning_rate"),
    ("min-entropy-nan", "rpt_min_entropy"),
    ("temperature-0", "temperature"),
    ("lora-r-0", "lora_r"),
]


@pytest.mark.parametrize("name,field_name", DRY_RUN_CASES, ids=[c[0] for c in DRY_RUN_CASES])
def test_dry_run_reports_unusable_recipe_values(name, field_name, world, forbid_model_load, monkeypatch, capsys):
    from rl.cli import main

    root, places = world
    monkeypatch.chdir(root)
    before = _snapshot(root)
    assert main(["train", "--config", f"{places['in']}/{name}.yaml", "--dry-run"]) == 2
    report = capsys.readouterr().out
    problems = report[report.index("problems"):] if "problems" in report else report
    assert field_name in problems, report
    assert _snapshot(root) == before


def test_bits_target_unreachable_is_reported():
    """Not a refusal: a --target-bytes-per-patch that --max-patch-length makes unreachable is reported, in the
    JSON (`targets`, `reached: false`) and in the printed output."""
    from rl.eval.bits import patch_modes, target_lines
    from rl.eval.patches import threshold_for_target

    seqs = [[0.1, 3.0, 0.2, 2.5, 0.1, 0.1, 4.0, 0.3]]
    theta, got, reached = threshold_for_target(seqs, 16, 100.0, "global", max_patch_length=2)
    assert not reached and got <= 4.0
    theta, got, reached = threshold_for_target(seqs, 16, 4.0, "global")
    assert reached and got >= 4.0
    targets: list[dict] = []
    patch_modes(1.0, 0.0, 2, [{"entropy": seqs[0], "bytes": [2] * 8}], 100.0, targets)
    assert [t["reached"] for t in targets] == [False, False, False]
    text = "\n".join(target_lines({"targets": targets, "settings": {"max_patch_length": 2}}))
    assert "target NOT reached: global" in text and "--max-patch-length 2" in text
