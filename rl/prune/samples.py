"""Chains from the policy's own correct samples, for `rl prune --sample N --reward R`.

The paper prunes chains a model wrote; a user's own policy is the natural source. For each question
the policy draws N completions in the frame the pruner scores (`PROMPT_TEMPLATE`: "Question: Q\\n
Reasoning:\\n"), after optional worked examples in the same frame (`few_shot_prefix`), each stopped
once it has written the line `Answer: ...` (`SEP`). A completion splits into the chain (text before
`SEP`) and the policy's answer (the rest of that line); one without it has no chain. Each completion
is scored by a reward with TRL's signature (a registered name or a dotted path,
`rewards.get_reward_func`), called as TRL calls it: prompts, completions, completion ids, and every
other field of the row as a column. The row's gold answer is also passed as `solution` (the math
reward's column) unless the row has its own. A completion is correct when its reward is at least
`min_reward`; the first `per_question` distinct correct chains of each question are pruned, with the
policy's own answer as the answer whose likelihood pruning preserves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rl.errors import UserError
from rl.prune.chains import Chain
from rl.prune.pruner import PROMPT_TEMPLATE, SEP
from rl.signal.sampling import SamplingSettings, prompt_ids, sample, seeded

_ANSWER_LINE_DONE = re.compile(re.escape(SEP) + r"[^\n]*\S[^\n]*\n")


@dataclass
class SampleSettings:
    """How the policy samples (see the module doc)."""

    samples: int  # completions drawn per question
    max_new_tokens: int = 256
    temperature: float = 1.0
    min_reward: float = 1.0  # a completion whose reward is >= this is correct
    per_question: int = 1  # distinct correct chains kept per question
    batch_size: int = 16  # completions per generate call
    seed: int = 0
    prefix: str = ""  # shown to the policy before each question (few-shot examples; `few_shot_prefix`)

    def __post_init__(self):
        if self.samples < 1 or self.max_new_tokens < 1 or self.per_question < 1 or self.batch_size < 1:
            raise ValueError("samples, max_new_tokens, per_question and batch_size must be >= 1")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (sampling), got {self.temperature}")

    def sampling(self) -> SamplingSettings:
        """The sampler's settings: plain temperature sampling, one question per call, at most
        `batch_size` completions per call, from the caller's RNG (`sample_chains` seeds it once)."""
        return SamplingSettings(samples=self.samples, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                top_p=1.0, top_k=0, batch_size=1, max_rows=self.batch_size, seed=None)


def few_shot_prefix(examples: list[Chain]) -> str:
    """Worked examples in the pruner's frame, shown to the policy before each question so that a
    small model writes the `Answer:` line; the pruner scores the chains without them."""
    return "".join(f"{PROMPT_TEMPLATE.format(question=ex.question.strip())}{ex.reasoning.strip()}{SEP} "
                   f"{ex.answer.strip()}\n\n" for ex in examples)


def policy_prompt(question: str, settings: SampleSettings) -> str:
    """What the policy reads for one question: the few-shot prefix, then the pruner's frame."""
    return settings.prefix + PROMPT_TEMPLATE.format(question=question.strip())


def split_sample(text: str) -> tuple[str, str, str] | None:
    """(chain, answer, completion up to the end of the answer line) of one completion, or None
    when it has no `SEP` line with a non-empty answer or nothing before it."""
    at = text.find(SEP)
    if at < 0:
        return None
    line = text[at + len(SEP):].split("\n", 1)[0]
    chain, answer = text[:at].strip(), line.strip()
    if not chain or not answer:
        return None
    return chain, answer, text[:at + len(SEP) + len(line)]


def reward_columns(chain: Chain) -> dict:
    """The columns a reward sees for a row: its extra fields, plus the gold answer as `solution`."""
    return {"solution": chain.answer, **chain.columns}


def check_reward_columns(reward_func, chains: list[Chain], where: str) -> None:
    """Refuse, before any weights load, a reward that needs a column some row lacks, or that
    scores with a training policy (it has none here)."""
    from rewards.registry import required_columns, reward_name, spec_of

    spec = spec_of(reward_func)
    if spec is not None and spec.needs_policy:
        raise UserError(f"--reward {spec.name}: it scores with the trainer's policy during training; rl prune "
                        "needs a reward that checks a completion on its own (for example math)")
    needed = required_columns([reward_func]).get(reward_name(reward_func), [])
    for chain in chains:
        missing = [c for c in needed if c not in reward_columns(chain)]
        if missing:
            raise UserError(f"{where} row {chain.id}: --reward {reward_name(reward_func)} needs column(s) "
                            f"{', '.join(missing)}; add them to the row")


def answer_line_done(text: str) -> bool:
    """Whether a completion so far holds a finished `Answer:` line (sampling stops there)."""
    return bool(_ANSWER_LINE_DONE.search(text))


def draw(policy, tokenizer, question: str, settings: SampleSettings) -> list[tuple[str, list[int]]]:
    """`settings.samples` completions of one question from the one sampler (rl/signal/sampling.py):
    (text, token ids), in draw order, from the caller's RNG. The prompt is read as the model read text
    in training (BOS first where the tokenizer adds one, never an appended EOS); each completion stops
    at EOS or once its `Answer:` line is finished. The text is what the completion adds after the
    prompt (rl/signal/decoding.py), as the trainer gives rewards: a completion decoded alone loses its
    leading space with SentencePiece-style tokenizers, and " ." its space with clean-up."""
    prompt = prompt_ids(tokenizer, policy_prompt(question, settings))
    return [(s.text, s.ids) for s in sample(policy, tokenizer, [prompt], settings.sampling(),
                                            stop_after=answer_line_done)]


def sample_chains(policy, tokenizer, questions: list[Chain], reward_func, settings: SampleSettings,
                  log=None) -> tuple[list[Chain], list[dict]]:
    """The correct chains to prune, and one record per drawn completion (for samples.jsonl). The
    draws of all questions are one stream seeded with `settings.seed` (the caller's RNG untouched)."""
    chains, records = [], []
    with seeded(settings.seed, next(policy.parameters()).device):
        for i, row in enumerate(questions, 1):
            drawn = draw(policy, tokenizer, row.question, settings)
            chains_i, records_i = _judge(row, drawn, reward_func, settings)
            chains += chains_i
            records += records_i
            if log:
                log(f"[rl prune] sampled {i}/{len(questions)} {row.id}: "
                    f"{sum(r['correct'] for r in records_i)}/{len(drawn)} correct")
    return chains, records


def _judge(row: Chain, drawn: list[tuple[str, list[int]]], reward_func,
           settings: SampleSettings) -> tuple[list[Chain], list[dict]]:
    """One question's completions scored by the reward (called as TRL calls it): its kept chains and records."""
    prompt = policy_prompt(row.question, settings)
    parts = [split_sample(text) for text, _ in drawn]
    columns = reward_columns(row)
    rewards = reward_func(prompts=[prompt] * len(drawn), completions=[p[2] if p else t for p, (t, _) in
                                                                      zip(parts, drawn)],
                          completion_ids=[ids for _, ids in drawn],
                          **{k: [v] * len(drawn) for k, v in columns.items()})
    if len(rewards) != len(drawn):
        raise UserError(f"--reward: returned {len(rewards)} values for {len(drawn)} completions; a TRL reward "
                        "returns one per completion")
    chains, records, seen = [], [], set()
    for k, ((text, _), part, reward) in enumerate(zip(drawn, parts, rewards)):
        correct = part is not None and reward is not None and reward >= settings.min_reward
        kept = correct and part[:2] not in seen and len(seen) < settings.per_question
        if kept:
            seen.add(part[:2])
            chains.append(Chain(f"{row.id}#s{k}", row.question, part[0], part[1], dict(row.columns)))
        records.append({"id": row.id, "sample": k, "completion": text, "has_answer_line": part is not None,
                        "reward": None if reward is None else float(reward), "correct": correct, "pruned": kept})
    return chains, records


def source_summary(records: list[dict], chains: list[Chain], questions: int, settings: SampleSettings,
                   policy: str, reward: str) -> dict:
    """What the sampling stage did, for summary.json and the printout."""
    drawn = len(records)
    correct = sum(r["correct"] for r in records)
    return {"kind": "policy samples", "policy": policy, "reward": reward, "questions": questions,
            "samples_per_question": settings.samples, "drawn": drawn,
            "with_answer_line": sum(r["has_answer_line"] for r in records), "correct": correct,
            "pass_rate": correct / drawn if drawn else 0.0, "chains": len(chains),
            "temperature": settings.temperature, "max_new_tokens": settings.max_new_tokens,
            "min_reward": settings.min_reward, "per_question": settings.per_question, "seed": settings.seed}
