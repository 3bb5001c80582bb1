"""rl/runtime/checkpoint.py: completeness markers, newest-complete lookup, resume resolution, preemption flag.

Fake checkpoints use the real file formats (safetensors, torch zip) so truncation checks are real;
one test runs a real (tiny) HF Trainer to prove the layout it writes validates and resumes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from transformers import TrainerControl, TrainerState

from rl.runtime import checkpoint as ck
from rl.runtime import preemption
from rl.runtime import ranks
from rl.errors import UserError


def make_checkpoint(out: Path, step: int, *, optimizer=True, world_size=1, marker=True) -> Path:
    """A checkpoint-<step> directory shaped like the HF Trainer's (tiny real files)."""
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(d / "model.safetensors"))
    if optimizer:
        torch.save({"state": {0: torch.zeros(64)}}, d / "optimizer.pt")
        torch.save({"last_epoch": step}, d / "scheduler.pt")
    names = ["rng_state.pth"] if world_size == 1 else [f"rng_state_{i}.pth" for i in range(world_size)]
    for n in names:
        torch.save({"cpu": torch.random.get_rng_state()}, d / n)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if marker:
        ck.write_complete_marker(d, world_size=world_size)
    return d


def truncate(path: Path, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


# ---------------------------------------------------------------- markers and validation


def test_marker_written_for_complete_checkpoint(tmp_path):
    d = make_checkpoint(tmp_path, 5)
    manifest = json.loads((d / ck.MARKER_NAME).read_text())
    assert manifest["step"] == 5
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                      "trainer_state.json"}
    assert ck.check_complete(d) is None
    assert not list(d.glob(".COMPLETE.tmp*"))


@pytest.mark.parametrize("damage, expected", [
    (lambda d: (d / "optimizer.pt").unlink(), "no optimizer state"),
    (lambda d: (d / "rng_state.pth").unlink(), "rng_state.pth missing"),
    (lambda d: (d / "trainer_state.json").write_text('{"global_st'), "trainer_state.json unreadable"),
    (lambda d: (d / "trainer_state.json").write_text('{"global_step": 4}'), "global_step 4"),
    (lambda d: truncate(d / "model.safetensors", 100), "model.safetensors: truncated"),
    (lambda d: truncate(d / "optimizer.pt", 60), "optimizer.pt: truncated zip"),
    (lambda d: (d / "model.safetensors").unlink(), "no model weights"),
])
def test_marker_refused_for_incomplete_checkpoint(tmp_path, damage, expected):
    d = make_checkpoint(tmp_path, 5, marker=False)
    damage(d)
    with pytest.raises(ck.CheckpointIncomplete, match=expected):
        ck.write_complete_marker(d)
    assert not (d / ck.MARKER_NAME).exists()


def test_multi_rank_rng_files_required(tmp_path):
    d = make_checkpoint(tmp_path, 3, world_size=2, marker=False)
    assert ck.validate_checkpoint(d, world_size=2) == []
    (d / "rng_state_1.pth").unlink()
    assert ck.validate_checkpoint(d, world_size=2) == ["rng_state_1.pth missing"]


def test_save_only_model_needs_no_optimizer(tmp_path):
    d = make_checkpoint(tmp_path, 3, optimizer=False, marker=False)
    assert ck.validate_checkpoint(d, require_optimizer=False) == []
    assert ck.validate_checkpoint(d) == ["no optimizer state (optimizer.pt, DeepSpeed or FSDP)"]


# ---------------------------------------------------------------- newest-complete lookup


def test_truncated_newest_is_skipped_with_warning(tmp_path, caplog):
    make_checkpoint(tmp_path, 10)
    newest = make_checkpoint(tmp_path, 20)
    truncate(newest / "model.safetensors", 50)  # e.g. a crash while a later sync was rewriting it
    with caplog.at_level(logging.WARNING, logger="rl.runtime.checkpoint"):
        assert ck.find_resume_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert any("checkpoint-20" in r.getMessage() for r in caplog.records)


def test_interrupted_save_without_marker_is_skipped(tmp_path, caplog):
    make_checkpoint(tmp_path, 2)
    make_checkpoint(tmp_path, 9)
    make_checkpoint(tmp_path, 10, marker=False)  # killed between the trainer's save and our marker
    with caplog.at_level(logging.WARNING, logger="rl.runtime.checkpoint"):
        assert ck.find_resume_checkpoint(tmp_path) == str(tmp_path / "checkpoint-9")  # numeric, not lexical
    assert "checkpoint-10" in caplog.text and "COMPLETE" in caplog.text


def test_find_resume_none(tmp_path):
    assert ck.find_resume_checkpoint(tmp_path / "does-not-exist") is None
    make_checkpoint(tmp_path, 1, marker=False)
    (tmp_path / "checkpoint-x").mkdir()
    assert ck.find_resume_checkpoint(tmp_path) is None


def test_resolve_resume(tmp_path, caplog):
    assert ck.resolve_resume("auto", tmp_path) is None  # fresh start
    assert ck.resolve_resume(None, tmp_path) is None
    assert ck.resolve_resume(False, tmp_path) is None
    assert ck.resolve_resume("false", tmp_path) is None
    with pytest.raises(UserError, match="no complete checkpoint"):
        ck.resolve_resume(True, tmp_path)
    good = make_checkpoint(tmp_path, 4)
    bad = make_checkpoint(tmp_path, 8, marker=False)
    (bad / "optimizer.pt").unlink()
    assert ck.resolve_resume("auto", tmp_path) == str(good)
    assert ck.resolve_resume(True, tmp_path) == str(good)
    assert ck.resolve_resume(str(good), tmp_path) == str(good)
    with pytest.raises(UserError, match="checkpoint-8 is incomplete"):
        ck.resolve_resume(str(bad), tmp_path)
    with pytest.raises(UserError, match="not a directory"):
        ck.resolve_resume(str(tmp_path / "nope"), tmp_path)
    foreign = make_checkpoint(tmp_path / "other", 3, marker=False)  # e.g. saved by plain HF
    with caplog.at_level(logging.WARNING, logger="rl.runtime.checkpoint"):
        assert ck.resolve_resume(str(foreign), tmp_path) == str(foreign)
    assert "no COMPLETE marker" in caplog.text


def test_checkpoint_callback_marks_only_complete(tmp_path, caplog):
    make_checkpoint(tmp_path, 2, marker=False)
    make_checkpoint(tmp_path, 4, marker=False)
    (tmp_path / "checkpoint-4" / "scheduler.pt").unlink()
    args = SimpleNamespace(output_dir=str(tmp_path), world_size=1, save_only_model=False)
    cb = ck.CheckpointCallback()
    for step in (2, 4):
        cb.on_save(args, TrainerState(global_step=step), TrainerControl())
    assert (tmp_path / "checkpoint-2" / ck.MARKER_NAME).exists()
    assert not (tmp_path / "checkpoint-4" / ck.MARKER_NAME).exists()
    assert "scheduler.pt missing" in caplog.text
    state = TrainerState(global_step=2, is_world_process_zero=False)
    (tmp_path / "checkpoint-2" / ck.MARKER_NAME).unlink()
    cb.on_save(args, state, TrainerControl())  # non-zero ranks never write
    assert not (tmp_path / "checkpoint-2" / ck.MARKER_NAME).exists()


# ---------------------------------------------------------------- preemption


def wait_for(pred, timeout=2.0):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.01)
    return pred()


def test_sigusr1_sets_flag_and_callback_stops_at_step_end():
    before = signal.getsignal(signal.SIGUSR1)
    with preemption.PreemptionHandler() as handler:
        cb = preemption.PreemptionCallback(handler)
        state, control = TrainerState(global_step=7), TrainerControl()
        cb.on_step_end(None, state, control)
        assert not control.should_save and not control.should_training_stop and not handler.preempted
        os.kill(os.getpid(), signal.SIGUSR1)
        assert wait_for(lambda: handler.requested)
        assert handler.signum == signal.SIGUSR1 and not handler.preempted  # nothing happens before step end
        cb.on_step_end(None, state, control)
        assert control.should_save and control.should_training_stop
        assert handler.preempted and handler.preempted_step == 7
    assert signal.getsignal(signal.SIGUSR1) is before  # uninstalled


def test_sigterm_handled_too_and_check_every():
    with preemption.PreemptionHandler() as handler:
        os.kill(os.getpid(), signal.SIGTERM)  # would kill pytest if the handler were not installed
        assert wait_for(lambda: handler.requested)
        cb = preemption.PreemptionCallback(handler, check_every=4)
        control = TrainerControl()
        cb.on_step_end(None, TrainerState(global_step=6), control)
        assert not control.should_training_stop  # waits for the generation boundary
        cb.on_step_end(None, TrainerState(global_step=8), control)
        assert control.should_training_stop and handler.preempted_step == 8


def test_last_step_is_not_a_preemption():
    handler = preemption.PreemptionHandler(signals=())
    handler.request()
    control = TrainerControl(should_training_stop=True)  # DefaultFlowCallback: max_steps reached
    preemption.PreemptionCallback(handler).on_step_end(None, TrainerState(global_step=10, max_steps=10), control)
    assert not handler.preempted  # training is over anyway: no requeue


def test_resumed_run_is_not_stopped_by_saved_control_state():
    handler = preemption.PreemptionHandler(signals=())
    control = TrainerControl(should_training_stop=True)  # as restored from a preemption checkpoint
    preemption.PreemptionCallback(handler).on_train_begin(None, TrainerState(), control)
    assert not control.should_training_stop


def test_requeue_if_needed(tmp_path, monkeypatch):
    monkeypatch.delenv(preemption.PREEMPT_MARKER_ENV, raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    log = tmp_path / "argv.json"
    fake = (sys.executable, "-c", f"import json,sys; json.dump(sys.argv[1:], open({str(log)!r}, 'w'))")
    h = preemption.PreemptionHandler(signals=(), requeue_command=fake)
    assert h.requeue_if_needed() == "none"  # not preempted
    h.preempted, h.preempted_step = True, 3
    assert h.requeue_if_needed() == "stopped"  # not under Slurm
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    assert h.requeue_if_needed() == "requeued"
    assert json.loads(log.read_text()) == ["1234"]
    h.is_main_process = False
    assert h.requeue_if_needed() == "none"
    marker = tmp_path / "slurm" / "preempted.1234"
    monkeypatch.setenv(preemption.PREEMPT_MARKER_ENV, str(marker))
    h2 = preemption.PreemptionHandler(signals=(), requeue_command=("false",))
    h2.preempted, h2.preempted_step = True, 3
    assert h2.requeue_if_needed() == "marker"
    assert json.loads(marker.read_text())["step"] == 3 and json.loads(marker.read_text())["job_id"] == "1234"
    h3 = preemption.PreemptionHandler(signals=(), requeue_command=("false",), marker_path="")
    h3.preempted = True
    assert h3.requeue_if_needed() == "requeue-failed"


@pytest.mark.parametrize("spg, iters, ga, expected", [(None, 1, 4, 1), (2, 1, 2, 1), (4, 1, 2, 2),
                                                      (3, 2, 4, 3), (4, 1, 8, 1)])
def test_generation_cycle_steps(spg, iters, ga, expected):
    args = SimpleNamespace(steps_per_generation=spg, num_iterations=iters, gradient_accumulation_steps=ga)
    assert ck.generation_cycle_steps(args) == expected


def _two_rank_worker(rank, init_file, result_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    got = {"sync": [ranks.sync_flag(rank == 1), ranks.sync_flag(False)]}

    # Only rank 1 receives the signal; both must stop at the same step.
    handler = preemption.PreemptionHandler(signals=())
    if rank == 1:
        handler.request()
    control = TrainerControl()
    preemption.PreemptionCallback(handler).on_step_end(None, TrainerState(global_step=5), control)
    got["stop"] = [control.should_save, control.should_training_stop, handler.preempted]

    # Rank 1 is slow to write its RNG state: rank 0 must wait for it before validating.
    out = Path(result_dir) / "out"
    if rank == 0:
        make_checkpoint(out, 5, world_size=2, marker=False)
        (out / "checkpoint-5" / "rng_state_1.pth").unlink()
    else:
        time.sleep(1.0)
        torch.save({}, out / "checkpoint-5" / "rng_state_1.pth")
    args = SimpleNamespace(output_dir=str(out), world_size=2, save_only_model=False)
    ck.CheckpointCallback().on_save(args, TrainerState(global_step=5, is_world_process_zero=rank == 0),
                                    TrainerControl())
    Path(result_dir, f"{rank}.json").write_text(json.dumps(got))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_ranks_agree_on_stop_and_marker_waits_for_all(tmp_path):
    assert ranks.sync_flag(True) is True and ranks.sync_flag(False) is False  # not distributed
    torch.multiprocessing.spawn(_two_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    for r in (0, 1):
        got = json.loads((tmp_path / f"{r}.json").read_text())
        assert got == {"sync": [True, False], "stop": [True, True, True]}, r
    assert ck.check_complete(tmp_path / "out" / "checkpoint-5") is None


# ---------------------------------------------------------------- a real HF Trainer


def _train(out: Path, max_steps: int, handler=None, resume=None, stop_at=None, steps_run=None):
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM, Trainer, TrainerCallback, TrainingArguments

    class StopAt(TrainerCallback):  # "a signal arrives during step `stop_at`"
        def on_step_begin(self, args, state, control, **kw):
            if handler is not None and state.global_step + 1 == stop_at:
                os.kill(os.getpid(), signal.SIGUSR1)

    class Count(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if steps_run is not None:
                steps_run.append(state.global_step)

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    model = Qwen2ForCausalLM(cfg)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (32, 8), generator=g)
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4,
                             learning_rate=1e-2, save_steps=2, save_total_limit=3, logging_steps=100,
                             report_to=[], use_cpu=True, seed=3, disable_tqdm=True)
    callbacks = [ck.CheckpointCallback(), Count()]
    if handler is not None:
        callbacks += [preemption.PreemptionCallback(handler), StopAt()]
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_real_trainer_preempt_then_resume_matches_uninterrupted(tmp_path):
    reference = _train(tmp_path / "ref", max_steps=6)
    assert all(ck.check_complete(p) is None for p in ck.list_checkpoints(tmp_path / "ref"))

    out = tmp_path / "run"
    with preemption.PreemptionHandler() as handler:
        _train(out, max_steps=6, handler=handler, stop_at=3)
    assert handler.preempted and handler.preempted_step == 3
    assert [p.name for p in ck.list_checkpoints(out)] == ["checkpoint-2", "checkpoint-3"]
    resume = ck.resolve_resume("auto", out)
    assert resume == str(out / "checkpoint-3")

    steps_run = []
    resumed = _train(out, max_steps=6, resume=resume, steps_run=steps_run)
    assert steps_run == [4, 5, 6]  # really resumed (a fresh run would also match the reference)
    assert reference.keys() == resumed.keys()
    for k in reference:
        torch.testing.assert_close(resumed[k], reference[k], rtol=0, atol=0, msg=k)
