"""A policy-scored reward (`rlp`) failing on one rank of two (gloo on CPU): every rank stops with the
same one-line error, in bounded time, and the ranks stay in step for the next call; with
`reward_error_policy: none` every rank scores that batch None and goes on. The worker
(tests/faults/policy_reward_worker.py) breaks rank 1 only, while preparing its rows, in the policy's
forward and in the teacher's forward (issue 22 finding 3: the per-sample re-score repeated the reward's
collectives on the failing rank alone, and the ranks hung); a reward without collectives failing on one
sample of rank 1 also stops both ranks with the same line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ranks import launch_ranks

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_TIMEOUT_S = 300


def test_one_rank_failing_in_a_policy_scored_reward_stops_every_rank_alike(tmp_path):
    launch_ranks(["-m", "tests.faults.policy_reward_worker", str(tmp_path)], env={"ACCELERATE_USE_CPU": "1"},
                 timeout=LAUNCH_TIMEOUT_S, check=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    by = {s["scenario"]: (a, b) for s, a, b in zip(r0, r0, r1)}

    for name in ("ok", "ok-again"):  # before and after the failures: scored on both ranks
        a, b = by[name]
        assert len(a["scores"]) == 3 and len(b["scores"]) == 5, (name, a, b)
        assert all(isinstance(v, float) for v in a["scores"] + b["scores"])
    assert by["ok"][0]["scores"] == pytest.approx(by["ok-again"][0]["scores"])

    for name in ("prep", "policy", "teacher"):
        a, b = by[name]
        assert "error" in a and "error" in b, (name, a, b)
        assert a["error"] == b["error"], f"{name}: the ranks stop with different errors:\n{a}\n{b}"
        assert a["type"] == b["type"] == "RewardError"
        assert "\n" not in a["error"]
        assert "rlp_reward" in a["error"] and "rank 1" in a["error"] and "injected failure on rank 1" in a["error"]
        assert "rank 0" not in a["error"]

    a, b = by["none-policy"]
    assert a["scores"] == [None] * 3 and b["scores"] == [None] * 5, (a, b)

    a, b = by["none-length"]  # a wrong number of scores stops every rank, whatever the policy
    assert a.get("error") == b.get("error") and "rank 1 returned 4 values for 5 completions" in a["error"], (a, b)

    # a reward without collectives: rank 1 isolates its failing sample, then every rank stops alike
    a, b = by["plain"]
    assert a.get("error") == b.get("error"), (a, b)
    assert a["type"] == "RewardError" and "\n" not in a["error"]
    assert a["error"].startswith("rank 1: reward `plain_reward`: raised Injected: injected failure on rank 1 on "
                                 "sample 2 of the batch"), a["error"]
    a, b = by["none-plain"]  # policy none: only that sample None, the other rank untouched
    assert a["scores"] == [10.0, 10.0, 10.0] and b["scores"] == [10.0, 10.0, None, 10.0, 10.0], (a, b)


def test_rl_train_two_ranks_stop_alike_when_rlp_fails_on_one(tmp_path, tiny_model_dir_plain):
    """The same through `rl train` under `accelerate launch` (DDP, 2 CPU ranks, full-model `base` teacher):
    both ranks print the same one-line `error:` and exit 2, well within the timeout."""
    import yaml

    from rewards.rlp import rlp_prompt
    from tests.kit import tiny_recipe

    rows = []
    for i in range(8):
        context, nxt = f"Counting: {i}, {i + 1},", f" {i + 2}"
        rows.append({"prompt": rlp_prompt(context, False), "context": context, "continuation": nxt,
                     "boundaries": [len(nxt.encode())]})
    data = tmp_path / "rlp.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = tiny_recipe(tiny_model_dir_plain, tmp_path / "run", dataset_path=str(data), reward_funcs=["rlp"],
                         rlp_teacher="base", use_cpu=False, save_strategy="no", optim="adamw_torch")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    proc = launch_ranks([str(ROOT / "tests" / "faults" / "rlp_rank_fault_worker.py"), "--",
                         "train", "--config", str(tmp_path / "recipe.yaml")],
                        env={"ACCELERATE_USE_CPU": "1"}, timeout=LAUNCH_TIMEOUT_S)
    log = proc.stdout + proc.stderr
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, f"expected one error line per rank:\n{log[-4000:]}"
    assert errors[0] == errors[1], errors
    assert "rlp_reward" in errors[0] and "rank 1 raised ValueError: injected scorer failure on rank 1" in errors[0]
    assert proc.returncode != 0
