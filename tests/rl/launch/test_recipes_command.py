"""rl/launch/recipes.py (`rl recipes`) and rl/launch/shipped.py: listing, copying, never overwriting, the shipped lookup."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from rl.launch import shipped
from rl.cli import main as rl_main
from rl.errors import UserError
from rl.launch.recipes import copy_recipes, find_recipe, header_summary, list_recipes

ROOT = Path(__file__).resolve().parents[3]


def test_list_names_every_shipped_yaml_with_its_first_header_line():
    recipes = list_recipes()
    names = [r.name for r in recipes]
    expected = sorted(p.relative_to(ROOT / "recipes").with_suffix("").as_posix()
                      for p in (ROOT / "recipes").rglob("*.yaml"))
    assert names == expected
    demo = find_recipe("rpt_smollm2_cpu", recipes)
    assert demo.summary.startswith("The main job of `make demo`")
    assert all(r.summary for r in recipes), [r.name for r in recipes if not r.summary]


def test_cli_lists_recipes(capsys):
    assert rl_main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "rpt/forking-rpt" in out and "RPT with the forking-token mask" in out
    assert rl_main(["recipes", "list", "--paths"]) == 0
    assert str(ROOT / "recipes" / "rpt" / "forking-rpt.yaml") in capsys.readouterr().out


def test_header_summary():
    assert header_summary("\n#\n#  First line.\n# second\nkey: 1\n") == "First line."
    assert header_summary("key: 1\n# late comment\n") == ""


@pytest.mark.parametrize("name", ["rpt/forking-rpt", "rpt/forking-rpt.yaml", "recipes/rpt/forking-rpt.yaml"])
def test_find_recipe_accepts_path_forms(name):
    assert find_recipe(name, list_recipes()).name == "rpt/forking-rpt"


def test_find_recipe_unknown_suggests():
    with pytest.raises(UserError, match=r"forking-rpt: no such shipped recipe; did you mean rpt/forking-rpt"):
        find_recipe("forking-rpt", list_recipes())


def test_copy_keeps_layout_and_brings_the_accelerate_config_it_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert rl_main(["recipes", "copy", "rpt/forking-rpt"]) == 0  # default -o recipes
    out = capsys.readouterr().out
    copied = tmp_path / "recipes" / "rpt" / "forking-rpt.yaml"
    zero3 = tmp_path / "recipes" / "accelerate" / "zero3.yaml"
    assert copied.read_bytes() == (ROOT / "recipes" / "rpt" / "forking-rpt.yaml").read_bytes()
    assert zero3.read_bytes() == (ROOT / "recipes" / "accelerate" / "zero3.yaml").read_bytes()
    assert out.splitlines() == ["wrote recipes/rpt/forking-rpt.yaml", "wrote recipes/accelerate/zero3.yaml"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["forking-rpt.yaml", "zero3.yaml"]


def test_copy_never_overwrites_without_flag(tmp_path, capsys):
    mine = tmp_path / "accelerate" / "zero3.yaml"
    mine.parent.mkdir()
    mine.write_text("my own edits\n")
    with pytest.raises(UserError, match=r"zero3.yaml already exists with other contents; nothing was copied; "
                                        r"pass --overwrite"):
        copy_recipes(["rpt/forking-rpt"], tmp_path)
    assert mine.read_text() == "my own edits\n"
    assert not (tmp_path / "rpt").exists()  # all targets checked before anything is written
    assert rl_main(["recipes", "copy", "rpt/forking-rpt", "-o", str(tmp_path)]) == 2
    assert "error: " in capsys.readouterr().err and mine.read_text() == "my own edits\n"

    out = io.StringIO()
    written = copy_recipes(["rpt/forking-rpt"], tmp_path, overwrite=True, out=out)
    assert set(written) == {tmp_path / "rpt" / "forking-rpt.yaml", mine}
    assert f"replaced {mine}" in out.getvalue() and f"wrote {tmp_path / 'rpt' / 'forking-rpt.yaml'}" in out.getvalue()
    assert mine.read_bytes() == (ROOT / "recipes" / "accelerate" / "zero3.yaml").read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))


def test_copy_leaves_identical_files_and_refuses_a_file_as_output(tmp_path):
    out = io.StringIO()
    first = copy_recipes([], tmp_path / "r", copy_all=True, out=out)
    shipped_files = [p for p in (ROOT / "recipes").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert len(first) == len(shipped_files) and (tmp_path / "r" / "accelerate" / "README.md").is_file()
    again = io.StringIO()
    assert copy_recipes([], tmp_path / "r", copy_all=True, out=again) == []
    assert "unchanged" in again.getvalue() and "wrote" not in again.getvalue()
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is not a directory"):
        copy_recipes(["rpt_smollm2_cpu"], tmp_path / "f")
    with pytest.raises(UserError, match="--all"):
        copy_recipes([], tmp_path / "r")


def test_copy_elsewhere_explains_the_references(tmp_path):
    out = io.StringIO()
    copy_recipes(["forking/qwen3-8b-dapo"], tmp_path / "mine", out=out)
    assert "note: recipes name their accelerate configs as recipes/accelerate/" in out.getvalue()


def test_shipped_path_prefers_the_wheel_copy(tmp_path, monkeypatch):
    assert shipped.shipped_path("slurm/train.sbatch") == ROOT / "slurm" / "train.sbatch"  # checkout
    wheel = tmp_path / "_shipped"
    (wheel / "recipes").mkdir(parents=True)
    (wheel / "slurm").mkdir()
    (wheel / "slurm" / "train.sbatch").write_text("#!/bin/bash\n")
    monkeypatch.setattr(shipped, "_WHEEL_ROOT", wheel)
    assert shipped.shipped_path("slurm/train.sbatch") == wheel / "slurm" / "train.sbatch"
    monkeypatch.setattr(shipped, "_CHECKOUT_ROOT", tmp_path / "nothing")
    monkeypatch.setattr(shipped, "_WHEEL_ROOT", tmp_path / "nothing")
    with pytest.raises(UserError, match="shipped files .* are missing"):
        shipped.shipped_path("slurm/train.sbatch")


@pytest.mark.parametrize("bad", ["rl/cli.py", "../setup.py", "/etc/passwd", "recipes/../pyproject.toml"])
def test_shipped_path_only_serves_shipped_folders(bad):
    with pytest.raises(UserError, match="not a shipped path"):
        shipped.shipped_path(bad)


def test_shipped_path_missing_file():
    with pytest.raises(UserError, match="no such shipped file"):
        shipped.shipped_path("recipes/nope.yaml")
