"""One rank of tests/faults/test_policy_reward_ranks.py (started by torchrun, gloo on CPU).

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m tests.faults.policy_reward_worker OUT

Runs the `rlp` reward the way the trainer does (wrapped by rl/runtime/faults.py, the policy scorer bound,
the trainer's per-call `gather_object` as its record) through a fixed list of scenarios, in one process
group. Each failing scenario breaks rank 1 only, at a different point of the reward: preparing its rows,
the policy's forward, the teacher's forward; `none-length`: one score short under `none` (still a stop);
`plain`: a reward without collectives failing on one sample
of rank 1. The ranks hold different numbers of rows. Every rank writes
what each scenario gave it (scores, or the error's text) to OUT/rank<R>.json; a scenario that let the
ranks fall out of step shows as a hang (the test's timeout) or as a later scenario failing.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

SCENARIOS = ("ok", "prep", "policy", "teacher", "none-policy", "none-length", "plain", "none-plain", "ok-again")


class Injected(RuntimeError):
    pass


def main(out_dir: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    import torch.distributed as dist
    from accelerate.utils import gather_object
    from transformers import AutoModelForCausalLM, Qwen2Config

    from rewards.rlp import THINK_OPEN, bind_scorer, rlp_reward
    from rl.runtime.faults import wrap_reward
    from rl.train.rlp_teacher import make_teacher
    from rl.train.rlp_trainer import RLPScorer
    from tests.tiny_models import gpt2_tokenizer

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    policy = AutoModelForCausalLM.from_config(config)
    teacher = make_teacher("ema", policy, decay=0.5)

    def record(rows, tok):  # what the trainer's record does on every call: one gather over the ranks
        gather_object([[r[0] for r in rows]])

    scorer = RLPScorer(policy, teacher, tok, chunk_rows=2, record=record)
    def plain_reward(prompts, completions, **kwargs):
        if rank == 1 and any(c.endswith(" 2") for c in completions):
            raise Injected(f"injected failure on rank {rank}")
        return [float(len(c)) for c in completions]

    rewards = {"raise": wrap_reward(rlp_reward, "raise"), "none": wrap_reward(rlp_reward, "none"),
               "plain": wrap_reward(plain_reward, "raise"), "none-plain": wrap_reward(plain_reward, "none")}
    n = 3 if rank == 0 else 5
    contexts = [f"Row {i} of rank {rank}: the cat sat" for i in range(n)]
    batch = dict(prompts=[c + THINK_OPEN for c in contexts], completions=[f" it sits {i}" for i in range(n)],
                 completion_ids=[None] * n, context=contexts, continuation=[" on the mat"] * n,
                 boundaries=[[3, 7, 11]] * n)

    def fail(*args, **kwargs):
        raise Injected(f"injected failure on rank {rank}")

    results = []
    for scenario in SCENARIOS:
        undo = []
        if rank == 1 and scenario in ("prep", "none-policy"):
            scorer.thought_ids = fail
            undo.append(lambda: vars(scorer).pop("thought_ids"))
        elif rank == 1 and scenario == "policy":
            handle = policy.register_forward_pre_hook(fail)
            undo.append(handle.remove)
        elif rank == 1 and scenario == "none-length":  # one score short, after the reward's collectives
            real = scorer.information_gain
            scorer.information_gain = lambda *a, real=real: real(*a)[:-1]
            undo.append(lambda: vars(scorer).pop("information_gain"))
        elif rank == 1 and scenario == "teacher":
            handle = teacher.copy.register_forward_pre_hook(fail)
            undo.append(handle.remove)
        reward = rewards.get(scenario, rewards["none" if scenario.startswith("none") else "raise"])
        try:
            with bind_scorer(scorer):
                got = {"scores": reward(**batch)}
        except Exception as exc:  # noqa: BLE001 - the test reads what each rank got
            got = {"error": str(exc), "type": type(exc).__name__}
        for step in undo:
            step()
        results.append({"scenario": scenario, **got})
        print(f"rank {rank} {scenario}: {got}", flush=True)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
