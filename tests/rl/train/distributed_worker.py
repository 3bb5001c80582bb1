"""One `rl train` run for tests/rl/train/test_distributed.py, plainly or as one rank of `accelerate launch`.

    python tests/rl/train/distributed_worker.py --info-dir DIR [--no-cpu-workarounds] -- train --config R.yaml ...
    accelerate launch --config_file recipes/accelerate/zero2.yaml --num_processes 2 --num_machines 1 \
        tests/rl/train/distributed_worker.py --info-dir DIR -- train --config R.yaml ...

What it adds to a plain `rl train` (everything else is the real CLI, recipe parser, trainer,
accelerate/DeepSpeed set-up and model saving):

* `rl.runtime.cpu_distributed.apply_cpu_workarounds()` first, standing in for the call at the top of
  `rl.train.command.train()` (idempotent, so both may run). `--no-cpu-workarounds` sets
  ENTROPY_RL_NO_CPU_WORKAROUNDS=1, which turns that call off wherever it is made.
* Layout-independent completions. The trainer still samples from the model (so ZeRO-3's
  parameter gathering for generation runs), then the sampled ids are replaced by a deterministic
  function of (prompt token ids, index of the sample within its prompt's group). In every
  correct layout the global generation batch holds the same (prompt, group index) pairs, so it
  holds the same completions: what differs between layouts is only how the batch is split into
  ranks and micro-batches, which must not change the update. Some completions box the right
  next token (RPT reward 1), some a wrong one, some are cut at max_completion_length; their
  lengths differ, and `length_reward` scores that, so advantages are non-zero and varied.
* `--per-process-output DIR` trains into DIR/pid<PID> (for the test of ranks that run alone).
* Ranks leave through `exit_now` (atexit handlers, then no interpreter finalization).
* After training, each rank writes `rank<process_index>-<pid>.json` into --info-dir: world
  size, distributed type, ZeRO stage, log history, the workarounds applied, generation counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

FILLER = [" so", " the", " next", " token", " is", " likely", " here", " then"]
WRONG = " zq"


def length_reward(completion_ids, **kwargs) -> list[float]:
    """Test reward: completion length in tokens / 16 (differs between a prompt's samples)."""
    return [len(ids) / 16 for ids in completion_ids]


def _seed(prompt_ids, group_index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{list(prompt_ids)}|{group_index}".encode()).digest()[:8], "little")


def first_token(continuation: str, boundaries) -> str | None:
    """The ground-truth next token's text (the RPT answer), when it ends on a whole character."""
    data = continuation.encode("utf-8")
    for end in boundaries:
        try:
            return data[:end].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def fake_completion_text(prompt_ids, group_index: int, answer: str | None) -> str:
    """0-6 filler words, then a box holding the right next token (if known and chosen) or a wrong one."""
    seed = _seed(prompt_ids, group_index)
    words = [FILLER[(seed >> (3 + 3 * i)) % len(FILLER)] for i in range(seed % 7)]
    boxed = answer if (answer is not None and (seed >> 40) & 1) else WRONG
    return "".join(words) + " \\boxed{" + boxed + "}"


class _Answers:
    """Prompt text -> RPT answer, from the trainer's own train dataset (longest matching context)."""

    def __init__(self, dataset):
        self.rows = []
        if dataset is not None and {"context", "continuation", "boundaries"} <= set(dataset.column_names):
            for row in dataset:
                self.rows.append((row["context"], first_token(row["continuation"], row["boundaries"])))
        self.rows.sort(key=lambda r: -len(r[0]))

    def __call__(self, prompt_text: str) -> str | None:
        return next((answer for context, answer in self.rows if context and context in prompt_text), None)


STATS = {"generate_calls": 0, "sampled": 0, "replaced": 0, "rpt_answers": 0}
TRAINERS = []


def install_deterministic_generation() -> None:
    from rl.train.trainer import EntropyGRPOTrainer

    original = EntropyGRPOTrainer._generate_single_turn
    if getattr(original, "_deterministic", False):
        return

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        sampled, _ = original(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        if len(sampled) != len(prompt_ids):
            raise AssertionError(f"sampling returned {len(sampled)} completions for {len(prompt_ids)} prompts")
        if not hasattr(self, "_test_answers"):
            self._test_answers = _Answers(self.train_dataset)
        tok = self._tokenizer
        offset = self.accelerator.process_index * len(prompt_ids)  # global index of this rank's first sample
        out = []
        for i, ids in enumerate(prompt_ids):
            answer = self._test_answers(tok.decode(ids))
            STATS["rpt_answers"] += answer is not None
            text = fake_completion_text(ids, (offset + i) % num_generations, answer)
            completion = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            out.append(completion[: self.max_completion_length])
        STATS["generate_calls"] += 1
        STATS["sampled"] += len(sampled)
        STATS["replaced"] += len(out)
        return out, None

    _generate_single_turn._deterministic = True
    EntropyGRPOTrainer._generate_single_turn = _generate_single_turn


def capture_trainer() -> None:
    import rl.train.command

    build = rl.train.command.build_trainer
    if getattr(build, "_captured", False):
        return

    def build_trainer(*args, **kwargs):
        trainer = build(*args, **kwargs)
        TRAINERS.append(trainer)
        return trainer

    build_trainer._captured = True
    rl.train.command.build_trainer = build_trainer


def run_info(applied: list[str]) -> dict:
    trainer = TRAINERS[-1]
    acc = trainer.accelerator
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    return {
        "process_index": acc.process_index,
        "num_processes": acc.num_processes,
        "distributed_type": str(acc.distributed_type),
        "zero_stage": None if plugin is None else plugin.zero_stage,
        "world_size_env": os.environ.get("WORLD_SIZE"),
        "output_dir": trainer.args.output_dir,
        "optimizer": type(trainer.optimizer).__name__,
        "basic_optimizer": type(getattr(getattr(trainer, "deepspeed", None), "basic_optimizer", None)).__name__,
        "applied_workarounds": applied,
        "log_history": trainer.state.log_history,
        "stats": dict(STATS),
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser()
    p.add_argument("--info-dir", required=True)
    p.add_argument("--no-cpu-workarounds", action="store_true")
    p.add_argument("--per-process-output", metavar="DIR",
                   help="train into DIR/pid<PID> (ranks that wrongly run alone must not share a dir)")
    args = p.parse_args(argv[:split])
    rl_argv = argv[split + 1:]
    if args.per_process_output:
        rl_argv += ["--output_dir", str(Path(args.per_process_output) / f"pid{os.getpid()}")]
    if args.no_cpu_workarounds:
        os.environ["ENTROPY_RL_NO_CPU_WORKAROUNDS"] = "1"

    from rl.runtime.cpu_distributed import apply_cpu_workarounds

    applied = apply_cpu_workarounds()  # what rl.train.command.train() will do first once it is hooked in
    install_deterministic_generation()
    capture_trainer()

    from rl.cli import main as rl_main

    rc = rl_main(rl_argv)
    if rc == 0 and TRAINERS:
        info = run_info(applied)
        out = Path(args.info_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{info['process_index']}-{os.getpid()}.json").write_text(json.dumps(info, default=str))
    TRAINERS.clear()
    return rc


def exit_now(rc: int) -> None:
    """Run the atexit handlers (rl.runtime.cpu_distributed's gloo teardown among them), then leave without
    interpreter finalization, where torch can abort a finished CPU rank (see rl/runtime/cpu_distributed.py,
    item 3). This test checks training and saved models; that exit race is torch's, not the layout's."""
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        exit_now(code)
    sys.exit(code)
