"""Tests for the reward registry (rewards/__init__.py): names, dotted paths, helpful errors."""

from __future__ import annotations

import re

import pytest

import rewards
from rewards import REWARD_FUNCS, get_reward_func, get_reward_funcs
from rewards.rpt import rpt_reward
from rl.errors import UserError


def test_registered_names():
    assert REWARD_FUNCS["rpt"] is rpt_reward
    assert get_reward_func("rpt") is rpt_reward
    assert get_reward_funcs(["rpt", "rpt"]) == [rpt_reward, rpt_reward]
    assert get_reward_funcs("rpt") == [rpt_reward]  # a lone string from YAML counts as one name


def test_dotted_path_imports_users_function():
    assert get_reward_func("rewards.rpt.rpt_reward") is rpt_reward
    import os.path

    assert get_reward_func("os.path.join") is os.path.join


def test_registration_is_one_line(monkeypatch):
    def fake(completions, **kwargs):
        return [0.0] * len(completions)

    monkeypatch.setitem(rewards.REWARD_FUNCS, "fake", fake)
    assert get_reward_funcs(["rpt", "fake"]) == [rpt_reward, fake]


def test_unknown_name_suggests_closest_and_lists_known():
    with pytest.raises(UserError) as info:
        get_reward_func("rtp")
    message = str(info.value)
    assert "'rtp'" in message and "did you mean 'rpt'" in message
    assert re.search(r"known: .*\brpt\b", message)
    with pytest.raises(UserError) as info:
        get_reward_func("completely_different")
    assert "did you mean" not in str(info.value) and re.search(r"known: .*\brpt\b", str(info.value))


@pytest.mark.parametrize(
    "name, needle",
    [
        ("no_such_pkg_xyz.mod.func", "cannot import module 'no_such_pkg_xyz.mod'"),
        ("rewards.no_such_module.func", "cannot import module 'rewards.no_such_module'"),
        ("rewards.rpt.no_such_func", "has no function 'no_such_func'"),
        ("rewards.rpt.__doc__", "is not callable"),
        ("rewards..rpt", "not a valid dotted path"),
        ("", "expected a reward name"),
        (".rpt", "not a valid dotted path"),
        ("rewards.rpt.rpt-reward", "not a valid dotted path"),
    ],
)
def test_dotted_path_errors(name, needle):
    with pytest.raises(UserError, match=None) as info:
        get_reward_func(name)
    assert needle in str(info.value)


def test_empty_list_is_an_error():
    with pytest.raises(UserError, match="no reward functions"):
        get_reward_funcs([])


def test_missing_dependency_inside_users_module_is_not_hidden(tmp_path, monkeypatch):
    source = "import not_installed_dep_xyz\n\n\ndef f(completions, **kw):\n    return []\n"
    (tmp_path / "user_rewards_mod.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="not_installed_dep_xyz"):
        get_reward_func("user_rewards_mod.f")
