"""Bad recipes: each is refused with one `error:` line naming the file/field and the fix, exit 2,
before any model loads (the `forbid_model_load` fixture fails the test otherwise)."""

from __future__ import annotations

import pytest

from tests.faults.helpers import one_error_line, run_cli, write_recipe

# (id, recipe overrides | raw YAML text | raw bytes, extra CLI args, substrings the one line must hold)
CASES = [
    ("malformed-yaml", "model_name_or_path: [unclosed\nmax_steps: : 3\n", [], ["recipe.yaml:2", "not valid YAML"]),
    ("tab-indent-yaml", "max_steps: 2\n\tlearning_rate: 1\n", [], ["not valid YAML"]),
    ("not-a-mapping", "- a\n- b\n", [], ["must be a YAML mapping"]),
    ("not-utf8", b"\xff\xfe\x00m\x00a\x00x", [], ["not UTF-8"]),
    ("missing-file", None, [], ["recipe file not found"]),
    ("misspelled-field", {"learnig_rate": 1e-3}, [], ["unknown field 'learnig_rate'", "did you mean 'learning_rate'"]),
    ("misspelled-field-2", {"num_generation": 2}, [], ["'num_generation'", "did you mean 'num_generations'"]),
    ("unknown-field", {"zzz_qqq": 1}, [], ["unknown field 'zzz_qqq'"]),
    ("wrong-type-float", {"learning_rate": "fast"}, [], ["'learning_rate' expects a number", "'fast'"]),
    ("wrong-type-int", {"max_steps": "ten"}, [], ["'max_steps' expects an integer"]),
    ("wrong-type-fraction", {"num_generations": 2.5}, [], ["'num_generations' expects an integer"]),
    ("wrong-type-bool", {"bf16": "maybe"}, [], ["'bf16' expects true or false"]),
    ("wrong-type-list-for-scalar", {"max_steps": [1, 2]}, [], ["'max_steps' expects a single value"]),
    ("wrong-type-scalar-for-list", {"reward_funcs": 5}, [], ["'reward_funcs' expects a list"]),
    ("wrong-type-dict-for-list", {"reward_funcs": {"rpt": 1}}, [], ["'reward_funcs' expects a list"]),
    ("bad-choice", {"reward_error_policy": "ignore"}, [], ["reward_error_policy", "raise", "none"]),
    ("env-not-mapping", {"env": ["A=1"]}, [], ["'env' must be a mapping"]),
    ("launch-not-mapping", {"launch": "2 nodes"}, [], ["'launch' must be a mapping of rl submit settings"]),
    ("launch-misspelled", {"launch": {"node": 2}}, [], ["launch.node: not an rl submit setting", "did you mean 'nodes'"]),
    ("launch-wrong-type", {"launch": {"nodes": "two"}}, [], ["launch.nodes: expects a positive integer, got 'two'"]),
    ("zero-batch", {"per_device_train_batch_size": 0}, [], ["per_device_train_batch_size: must be at least 1"]),
    ("negative-lr", {"learning_rate": -1.0}, [], ["learning_rate: must be >= 0"]),
    ("zero-max-bad-steps", {"max_bad_steps": 0}, [], ["max_bad_steps: must be at least 1"]),
    ("quantile-out-of-range", {"top_entropy_quantile": 2}, [], ["top_entropy_quantile"]),
    ("batch-not-divisible-by-generations", {"per_device_train_batch_size": 3, "num_generations": 2}, [],
     ["recipe.yaml", "generation batch (3 per device x 1 processes x 1 steps_per_generation = 3 completions)",
      "not a multiple of num_generations 2", "per_device_train_batch_size x steps_per_generation divisible by 2"]),
    ("generation-batch-steps", {"per_device_train_batch_size": 1, "steps_per_generation": 3, "num_generations": 2}, [],
     ["= 3 completions) is not a multiple of num_generations 2"]),
    ("generation-batch-vs-global", {"generation_batch_size": 6}, [],
     ["generation_batch_size 6 must be a multiple of the global batch", "leave generation_batch_size unset"]),
    ("one-generation", {"num_generations": 1}, [], ["at least 2 generations", "set num_generations to 2 or more"]),
    ("unknown-reward", {"reward_funcs": ["rtp"]}, [], ["unknown reward 'rtp'", "did you mean 'rpt'"]),
    ("unknown-reward-module", {"reward_funcs": ["no_such_pkg.rewards.f"]}, [],
     ["cannot import module 'no_such_pkg.rewards'"]),
    ("unknown-reward-function", {"reward_funcs": ["rewards.rpt.no_such_reward"]}, [],
     ["has no function 'no_such_reward'"]),
    ("reward-not-callable", {"reward_funcs": ["rewards.rpt.__all__"]}, [], ["is not callable"]),
    ("reward-bad-dotted", {"reward_funcs": ["os.system('rm -rf x')"]}, [], ["not a valid dotted path"]),
    ("deepspeed-bad-json", {"deepspeed": "@DS_BAD@"}, [], ["field 'deepspeed'", "ds.json:3:", "not valid JSON"]),
    ("deepspeed-missing-file", {"deepspeed": "@TMP@/nope/ds_config.json"}, [], ["field 'deepspeed'", "not found"]),
    ("deepspeed-inline-bad-json", {"deepspeed": "{stage: 2}"}, [],
     ["field 'deepspeed'", "inline JSON", "not valid JSON"]),
    ("deepspeed-not-object", {"deepspeed": "@DS_LIST@"}, [], ["must hold a JSON object"]),
    ("override-misspelled", {}, ["--learnig_rate", "1e-4"], ["unknown override --learnig_rate", "--learning_rate"]),
    ("override-wrong-type", {}, ["--max_steps", "lots"], ["--max_steps expects an integer", "'lots'"]),
    ("override-bad-deepspeed", {}, ["--deepspeed", "@DS_BAD@"], ["command line", "not valid JSON"]),
    ("no-model", {"model_name_or_path": None}, [], ["set `model_name_or_path`"]),
    ("no-data", {"dataset_path": None, "corpus": None, "@NO_DATA@": True}, [], ["set `dataset_path`", "`corpus`"]),
]


def _materialise(tmp_path, tiny_model_dir, spec, extra):
    ds_bad = tmp_path / "ds.json"
    ds_bad.write_text('{\n "zero_optimization": {\n   "stage": 2,,\n }\n}\n')
    ds_list = tmp_path / "ds_list.json"
    ds_list.write_text("[1, 2]")
    subst = {"@DS_BAD@": str(ds_bad), "@DS_LIST@": str(ds_list), "@TMP@": str(tmp_path)}

    def fill(value):
        if isinstance(value, str):
            for k, v in subst.items():
                value = value.replace(k, v)
        return value

    extra = [fill(a) for a in extra]
    path = tmp_path / "recipe.yaml"
    if spec is None:
        return ["train", "--config", str(tmp_path / "missing.yaml"), *extra]
    if isinstance(spec, bytes):
        path.write_bytes(spec)
    elif isinstance(spec, str):
        path.write_text(spec, encoding="utf-8")
    else:
        spec = {k: fill(v) for k, v in spec.items() if not k.startswith("@")}
        if "dataset_path" in spec and spec["dataset_path"] is None:  # remove the data entirely
            path = write_recipe(tmp_path, tiny_model_dir, corpus=None, dataset_path=None)
            import yaml

            data = yaml.safe_load(path.read_text())
            data.pop("dataset_path", None)
            path.write_text(yaml.safe_dump(data))
        else:
            path = write_recipe(tmp_path, tiny_model_dir, **spec)
    return ["train", "--config", str(path), *extra]


@pytest.mark.parametrize("case_id,spec,extra,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_recipe_is_one_line_before_model_loads(tmp_path, tiny_model_dir, forbid_model_load, case_id, spec,
                                                   extra, expected):
    rc, lines = run_cli(_materialise(tmp_path, tiny_model_dir, spec, extra))
    line = one_error_line(rc, lines)
    for needle in expected:
        assert needle in line, f"{needle!r} not in {line!r}"


def test_recipes_are_read_with_a_safe_loader(tmp_path, tiny_model_dir, forbid_model_load):
    """A YAML tag that would construct a Python object is refused, never executed."""
    marker = tmp_path / "pwned"
    path = tmp_path / "recipe.yaml"
    path.write_text(f"max_steps: !!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8")
    rc, lines = run_cli(["train", "--config", str(path)])
    assert "not valid YAML" in one_error_line(rc, lines)
    assert not marker.exists()


def test_values_are_never_evaluated(tmp_path, tiny_model_dir, forbid_model_load):
    """Strings that look like code stay strings: a bad value is a type error, not an evaluation."""
    marker = tmp_path / "pwned"
    path = write_recipe(tmp_path, tiny_model_dir, learning_rate=f"__import__('os').system('touch {marker}')")
    rc, lines = run_cli(["train", "--config", str(path)])
    assert "'learning_rate' expects a number" in one_error_line(rc, lines)
    assert not marker.exists()



@pytest.mark.parametrize("case_id,spec,extra,expected", CASES, ids=[c[0] for c in CASES])
def test_dry_run_reports_every_recipe_rl_train_refuses(tmp_path, tiny_model_dir, forbid_model_load, case_id, spec,
                                                       extra, expected):
    """Parity of the two doors: whatever `rl train` refuses before loading weights, `rl train --dry-run`
    lists as a problem (exit 2) that names the same thing (one of the train error's needles)."""
    from rl.train.preflight.dryrun import dry_run
    from rl.train.preflight.report import EXIT_PROBLEMS

    report = dry_run(_materialise(tmp_path, tiny_model_dir, spec, extra)[1:])  # [1:]: drop "train"
    problems = "\n".join(report.problems)
    assert report.exit_code == EXIT_PROBLEMS, f"{case_id}: the dry-run found no problem"
    assert any(needle in problems for needle in expected), \
        f"{case_id}: none of {expected} in the dry-run's problems:\n{problems}"
