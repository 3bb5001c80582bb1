"""One W&B run per run directory (rl/runtime/wandb_run.py): the id is recorded in the run dir and
reused by a resumed run, a user's WANDB_RUN_ID wins, and steps a checkpoint replays are not logged
twice. The end-to-end test reads the offline run files W&B itself wrote (`.wandb` record logs)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from rl.runtime import wandb_run as wr
from tests.kit import rpt_rows, tiny_recipe, write_jsonl, write_yaml

# ---------------------------------------------------------------- reading W&B's offline run files


def wandb_records(path: Path):
    """The protobuf records of a `.wandb` file (W&B's LevelDB-style log: 7-byte file header, 32 KiB
    blocks, each record chunk `crc32 u32, length u16, type u8` with FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    block, pos, chunks, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
            pending = b""
    for chunk in chunks:
        record = pb.Record()
        record.ParseFromString(chunk)
        yield record


def offline_runs(run_dir: Path) -> list[dict]:
    """Each offline run W&B wrote under `run_dir/wandb`, oldest first: its run id and history rows."""
    out = []
    for d in sorted((run_dir / "wandb").glob("offline-run-*")):
        (f,) = d.glob("run-*.wandb")
        run_id, rows = None, []
        for r in wandb_records(f):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run_id = r.run.run_id
            elif kind == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        out.append({"dir": d, "run_id": run_id, "rows": rows})
    return out


# ---------------------------------------------------------------- the id and the environment


def args(tmp_path, report_to=("wandb",), resume="auto"):
    return SimpleNamespace(report_to=list(report_to), output_dir=str(tmp_path / "run"),
                           resume_from_checkpoint=resume)


def test_no_wandb_no_file_no_environment(tmp_path):
    env = {}
    assert wr.wandb_run_callbacks(args(tmp_path, report_to=["none"]), env) == []
    assert wr.wandb_run_callbacks(args(tmp_path), {"WANDB_MODE": "disabled"}) == []
    assert wr.wandb_run_callbacks(args(tmp_path), {"WANDB_DISABLED": "true"}) == []
    assert env == {} and not (tmp_path / "run").exists()


def test_id_recorded_then_reused_by_a_resumed_run(tmp_path):
    env = {}
    (cb,) = wr.wandb_run_callbacks(args(tmp_path, report_to=["all"]), env)
    run_id = env["WANDB_RUN_ID"]
    assert env["WANDB_RESUME"] == "allow" and len(run_id) == 8 and run_id.isalnum()
    assert wr.read_run_file(tmp_path / "run") == {"run_id": run_id, "last_step": 0, "wandb_step": 0}
    wr.write_run_file(tmp_path / "run", run_id, 7, 30)  # what on_log records
    cb.restore_environ()
    assert env == {}

    (cb,) = wr.wandb_run_callbacks(args(tmp_path), env)  # requeued / resubmitted: same id, replay bound 7
    assert env["WANDB_RUN_ID"] == run_id and cb.replayed_until == 7 and cb.wandb_step == 30
    cb.restore_environ()
    (cb,) = wr.wandb_run_callbacks(args(tmp_path, resume=None), env)  # a fresh run: a new W&B run
    assert env["WANDB_RUN_ID"] != run_id and cb.replayed_until == 0
    assert wr.read_run_file(tmp_path / "run")["run_id"] == env["WANDB_RUN_ID"]


def test_user_run_id_and_resume_mode_win(tmp_path):
    wr.write_run_file(tmp_path / "run", "ours1234", 5)
    env = {"WANDB_RUN_ID": "users-run", "WANDB_RESUME": "must"}
    (cb,) = wr.wandb_run_callbacks(args(tmp_path), env)
    assert env["WANDB_RUN_ID"] == "users-run" and env["WANDB_RESUME"] == "must" and cb.replayed_until == 0
    assert wr.read_run_file(tmp_path / "run") == {"run_id": "users-run", "last_step": 0, "wandb_step": 0}
    cb.restore_environ()
    assert env == {"WANDB_RUN_ID": "users-run", "WANDB_RESUME": "must"}


def test_only_rank_zero_writes_and_a_leftover_id_of_ours_is_not_the_users(tmp_path):
    env = {"RANK": "1"}
    (cb,) = wr.wandb_run_callbacks(args(tmp_path), env)
    assert not (tmp_path / "run" / wr.RUN_FILE).exists() and env["WANDB_RUN_ID"]
    # an earlier run in this process that did not reach on_train_end left its id set: not taken as the user's
    env = {"WANDB_RUN_ID": "stale123", wr._OURS: "stale123"}
    wr.wandb_run_callbacks(args(tmp_path), env)
    assert env["WANDB_RUN_ID"] != "stale123"


def test_unreadable_run_file_starts_a_new_run(tmp_path, caplog):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / wr.RUN_FILE).write_text("{not json")
    env = {}
    (cb,) = wr.wandb_run_callbacks(args(tmp_path), env)
    assert cb.replayed_until == 0 and "unreadable" in caplog.text
    assert wr.read_run_file(tmp_path / "run")["run_id"] == env["WANDB_RUN_ID"]


def test_replayed_steps_are_dropped_from_every_wandb_log(tmp_path, monkeypatch):
    """The filter sits on `wandb.log` itself, so TRL's profiling rows and tables and RLP's go through it
    as the metrics do. Replay ends when step replayed_until + 1 begins: TRL logs its profiling timings
    while a step runs, before the step count moves."""
    import wandb

    logged, run = [], SimpleNamespace(step=0)  # a resumed offline run: W&B's row counter starts at 0

    def log(data, step=None, commit=None):
        logged.append(data)
        assert (step, commit) == ((20, True) if len(logged) == 1 else (None, None))
        run.step = (run.step if step is None else step) + 1

    monkeypatch.setattr(wandb, "run", run)
    monkeypatch.setattr(wandb, "log", log)
    out = tmp_path / "run"
    cb = wr.WandbContinuity(out, "abc", replayed_until=3, saved_env={}, environ={}, wandb_step=20)
    state = SimpleNamespace(global_step=1, is_world_process_zero=True)  # resumed from checkpoint-1
    cb.on_train_begin(None, state, None)
    for step in (2, 3, 4, 5):
        cb.on_step_begin(None, state, None)
        wandb.log({"profiling": step})  # during the step: the count is still step - 1
        state.global_step = step
        cb.on_step_end(None, state, None)
        wandb.log({"loss": step, "train/global_step": step})  # WandbCallback.on_log
        cb.on_log(None, state, None, logs={})
    cb.on_train_end(None, state, None)
    assert logged == [{"profiling": 4, "train/global_step": 3}, {"loss": 4, "train/global_step": 4},
                      {"profiling": 5, "train/global_step": 4}, {"loss": 5, "train/global_step": 5}]
    assert wr.read_run_file(out) == {"run_id": "abc", "last_step": 5, "wandb_step": 24}
    assert wandb.log is log  # unwrapped


# ---------------------------------------------------------------- end to end: rl train, offline W&B


@pytest.mark.slow
def test_resumed_training_is_one_wandb_run_with_each_step_once(tmp_path, tiny_model_dir):
    """2 steps with a checkpoint each; checkpoint-2 loses its COMPLETE marker (killed while saving,
    after step 2 was logged); resuming to 4 replays step 2 from checkpoint-1: one W&B run, steps
    1..4 each logged once, the second attempt's axis starting at 3."""
    from rl.cli import main as rl_main
    from rl.runtime.checkpoint import MARKER_NAME

    run = tmp_path / "run"
    data = write_jsonl(tmp_path / "rows.jsonl", rpt_rows(8))
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(
        tiny_model_dir, run, dataset_path=str(data), report_to=["wandb"],
        env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"}))
    before = {k: os.environ.get(k) for k in ("WANDB_RUN_ID", "WANDB_RESUME")}
    assert rl_main(["train", "--config", str(recipe)]) == 0
    first = wr.read_run_file(run)
    assert first["last_step"] == 2
    (run / "checkpoint-2" / MARKER_NAME).unlink()
    assert rl_main(["train", "--config", str(recipe), "--max_steps", "4", "--resume_from_checkpoint", "auto"]) == 0
    assert {k: os.environ.get(k) for k in before} == before  # nothing left for a later run in this process

    assert wr.read_run_file(run)["run_id"] == first["run_id"] and wr.read_run_file(run)["last_step"] == 4
    runs = offline_runs(run)
    assert len(runs) == 2 and {r["run_id"] for r in runs} == {first["run_id"]}
    trained = [row["train/global_step"] for r in runs for row in r["rows"] if "train/loss" in row]
    assert trained == [1, 2, 3, 4]
    # nothing of step 2 again, not even TRL's profiling rows; those of step 3 (logged while it runs)
    # carry the step count 2, not the 0 W&B fills in for a row without it in a new process
    assert min(row["train/global_step"] for row in runs[1]["rows"]) == 2
    # W&B's own row counter goes on too (offline it would restart at 0): `wandb sync --append` needs that
    steps = [row["_step"] for r in runs for row in r["rows"]]
    assert steps == list(range(len(steps))) and wr.read_run_file(run)["wandb_step"] == len(steps)
