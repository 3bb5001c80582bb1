"""Each RPT build setting is declared once (rl/data/settings.py): the `rpt_*` recipe fields and the
`rl data rpt` flags are derived from it, with the same defaults, help text and one name per concept."""

from __future__ import annotations

import dataclasses

import pytest

from rl.data.settings import (
    DEFAULT_RPT_PROMPT,
    RPTBuildConfig,
    config_from_args,
    config_from_recipe,
    flag_name,
    recipe_name,
    settings,
)


def _rpt_parser():
    import argparse

    from rl.data.cli import register

    root = argparse.ArgumentParser()
    register(root.add_subparsers(dest="command"))
    return root


def test_every_recipe_field_is_a_setting_with_its_default_and_help():
    from rl.train.config import ScriptArguments

    recipe = {f.name: f for f in dataclasses.fields(ScriptArguments)}
    for s in settings():
        name = recipe_name(s.name)
        if not s.metadata["recipe"]:
            assert name not in recipe
            continue
        assert name in recipe, name
        assert recipe[name].default == s.default, name
        assert recipe[name].metadata == {"help": s.metadata["help"]}, name
    # no rpt_* recipe field is declared anywhere else
    declared = {recipe_name(s.name) for s in settings()}
    assert {n for n in recipe if n.startswith("rpt_")} <= declared
    assert recipe["rpt_prompt_template"].default == DEFAULT_RPT_PROMPT


def test_flags_are_named_after_the_setting_and_parse_to_its_defaults():
    parser = _rpt_parser()
    args = parser.parse_args(["data", "rpt", "--corpus", "c.txt", "--output", "out"])
    cfg = config_from_args(args, corpus=args.corpus, proxy_model=args.proxy_model)
    assert cfg == RPTBuildConfig(corpus="c.txt", proxy_model=args.proxy_model)
    flags = {flag_name(s) for s in settings()} - {None}
    assert "--proxy-batch-size" in flags and "--batch-size" not in flags
    assert "--prompt-template-file" in flags


def test_flags_and_recipe_fields_reach_the_same_config(tmp_path):
    from types import SimpleNamespace

    template = tmp_path / "t.txt"
    template.write_text("Guess: {context}", encoding="utf-8")
    parser = _rpt_parser()
    args = parser.parse_args(["data", "rpt", "--corpus", "c.txt", "--output", "out", "--proxy-batch-size", "7",
                              "--min-entropy", "1.5", "--max-documents", "3", "--prompt-template-file", str(template),
                              "--format", "completion", "--id-field", "key", "--chat", "no"])
    from_cli = config_from_args(args, corpus="c.txt", proxy_model="m")
    recipe = SimpleNamespace(**{recipe_name(s.name): getattr(from_cli, s.name) for s in settings()})
    from_recipe = config_from_recipe(recipe, corpus="c.txt", proxy_model="m", chat="no")
    assert from_cli == from_recipe
    assert (from_cli.proxy_batch_size, from_cli.min_entropy, from_cli.max_documents) == (7, 1.5, 3)
    assert from_cli.prompt_template == "Guess: {context}"


def test_rlp_has_no_format_flag_and_uses_its_own_prompt():
    parser = _rpt_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "rlp", "--corpus", "c", "--output", "o", "--format", "completion"])
    args = parser.parse_args(["data", "rlp", "--corpus", "c", "--output", "o"])
    cfg = config_from_args(args, corpus="c", proxy_model="m")
    assert cfg.format == "rlp" and cfg.prompt_template == ""


def test_fingerprint_names_each_setting_as_declared():
    fp = RPTBuildConfig(corpus="builtin:champ", proxy_model="m", proxy_batch_size=5).fingerprint()
    assert fp["proxy_batch_size"] == 5 and "batch_size" not in fp and fp["block_documents"] == 64


def test_data_layer_does_not_import_train():
    import ast
    from pathlib import Path

    import rl.data

    for path in Path(rl.data.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("rl.train", "rl.eval", "rl.prune", "rl.launch")), (path, node.module)
