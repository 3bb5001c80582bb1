"""RLP in the trainer: the policy scorer the `rlp` reward uses, the EMA teacher's updates and RLP's
logs (the paper's G/(G-1) advantage scaling applies to any reward: rl/train/advantages.py). Mixed
into EntropyGRPOTrainer (`RLPTrainerMixin`), so rl/train/trainer.py only names the mixin.

* `_calculate_rewards` (TRL's reward call) runs inside `bind_scorer(self._rlp)` when a recipe uses
  the `rlp` reward: the reward (rewards/rlp.py) hands its rows to `RLPScorer.information_gain`,
  which scores them with the policy (no gradient, gradient checkpointing off, eval mode: no
  dropout) and the teacher. Every rank makes the same number of forward calls (rl/train/rlp_scoring.py
  `agreed_chunks`).
* The scored sequence is the one the sampler saw: the prompt `context + THINK_OPEN` tokenized the way
  TRL's GRPOTrainer tokenizes a plain-string prompt (special tokens added, so BOS for Llama/Mistral/
  Gemma-style tokenizers), then the thought, the close delimiter and the true next token(s); the
  teacher's no-think sequence is the context tokenized the same way, then the same token(s).
* A failure on one rank is agreed on by all (rl/runtime/faults.py `agree_on_failure`, after each
  local phase: preparing the rows, policy scoring, teacher scoring): every rank then raises at the
  same point (the failing rank its own error, the others `PeerRankFailed`) and none is left waiting
  in a collective; the reward's fault wrapper turns that into the same one-line error on every rank.
* The teacher's `update()` runs after each optimizer step (a TrainerCallback's `on_step_end`); the
  EMA teacher's state is saved in every checkpoint (`rlp_teacher.pt`) and restored on resume.
* Logs per step: rlp/info_gain (mean nats over all ranks), rlp/positive_share, rlp/thought_tokens,
  rlp/closed_share, rlp/policy_logp, rlp/teacher_logp; with wandb in report_to, every
  `rlp_table_steps` steps a W&B table of the best and worst thoughts since the previous table.
"""

from __future__ import annotations

import contextlib
import copy
import heapq
import logging
import math
from pathlib import Path

import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from trl.models.utils import disable_gradient_checkpointing

from rewards.registry import spec_of
from rewards.rlp import THINK_CLOSE, THINK_OPEN, bind_scorer
from rl.runtime.faults import agree_on_failure
from rl.signal.decoding import in_context_texts
from rl.train.rlp_scoring import agreed_chunks, score_targets, scored_sequence
from rl.train.rlp_teacher import make_teacher

__all__ = ["TABLE_COLUMNS", "RLPScorer", "RLPTrainerMixin", "target_text"]

TABLE_COLUMNS = ["step", "info_gain", "context_tail", "thought", "next_tokens"]
TEACHER_STATE = "rlp_teacher.pt"  # the EMA teacher's state inside each checkpoint directory

logger = logging.getLogger(__name__)


def _clean(text: str) -> str:
    """Text the tokenizer can take (model output may hold lone surrogates)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def target_text(continuation, boundaries, k: int) -> str | None:
    """The first `k` ground-truth tokens of a row as text (bytes up to boundaries[k-1]); None when the
    row has no usable token."""
    if not isinstance(continuation, str) or not isinstance(boundaries, (list, tuple)) or not boundaries:
        return None
    data = continuation.encode("utf-8", "replace")
    end = boundaries[min(k, len(boundaries)) - 1]
    if not isinstance(end, int) or not 0 < end <= len(data):
        return None
    return data[:end].decode("utf-8", "replace")


class RLPScorer:
    """Scores thoughts for the `rlp` reward: policy and teacher log-probs of the true next tokens."""

    def __init__(self, policy, teacher, tokenizer, *, next_tokens: int = 1, chunk_rows: int = 8, device=None,
                 autocast=contextlib.nullcontext, no_checkpointing=contextlib.nullcontext, record=None):
        self.policy, self.teacher, self.tok = policy, teacher, tokenizer
        self.next_tokens, self.chunk_rows, self.device = next_tokens, chunk_rows, device
        self.autocast, self.no_checkpointing, self.record = autocast, no_checkpointing, record
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.strip_ids = {i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}
        self.close_ids = self._encode_after("x", THINK_CLOSE)
        self._pair_cache: dict[tuple[str, str], tuple[list[int], list[int], list[int]]] = {}
        self.forward_calls = 0  # policy + teacher forward calls (tests check the ranks agree)

    def quiet(self) -> RLPScorer:
        """The same scorer without logging (the signal check before step 1)."""
        twin = copy.copy(self)
        twin.record = None
        return twin

    def _encode(self, text: str) -> list[int]:
        """Ids of text inside a sequence (no special tokens)."""
        return list(self.tok(_clean(text), add_special_tokens=False)["input_ids"])

    def _prompt(self, text: str) -> list[int]:
        """Ids of a plain-string prompt exactly as TRL 1.16's GRPOTrainer makes them for the sampler
        (`processing_class(text=prompts)`: special tokens added, e.g. BOS)."""
        return list(self.tok(text=[_clean(text)])["input_ids"][0])

    def _encode_after(self, before: str, text: str) -> list[int]:
        """Ids of `text` as it is tokenized after other text (no word-start marker of its own, as
        SentencePiece-style tokenizers add to text that starts a sequence), else alone."""
        lead, full = self._encode(before), self._encode(before + text)
        return full[len(lead):] if full[:len(lead)] == lead and len(full) > len(lead) else self._encode(text)

    def context_and_target(self, context: str, target: str) -> tuple[list[int], list[int], list[int]]:
        """(context ids, prompt ids, target ids): the context and the thought prompt `context +
        THINK_OPEN` as TRL tokenizes a prompt (`_prompt`: BOS where the tokenizer adds one), and the
        target tokens as the document's own tokenization splits them (context + target tokenized
        together when the context's tokens are a prefix)."""
        key = (context, target)
        if key not in self._pair_cache:
            plain = self._encode(context)
            full = self._encode(context + target)
            tgt = full[len(plain):] if full[:len(plain)] == plain else self._encode(target)
            ctx = self._prompt(context) if plain else []
            self._pair_cache[key] = (ctx, self._prompt(context + THINK_OPEN) if plain else [],
                                     tgt[:max(self.next_tokens, 1)] if tgt else [])
            if len(self._pair_cache) > 4096:  # rows repeat G times per step; keep memory flat
                self._pair_cache.pop(next(iter(self._pair_cache)))
        return self._pair_cache[key]

    def thought_ids(self, thought: str, closed: bool, ids, prompt_ids=()) -> list[int]:
        """The sampler's own token ids of the thought: all generated ids when they decode to exactly
        the thought (no delimiter written), the generated ids before the delimiter when a prefix of
        them decodes to exactly the thought (closed); else the thought text re-tokenized (a token
        that straddles THINK_CLOSE, or a dropped leading THINK_OPEN). "Decode" is the text the ids add
        after the prompt (what the trainer gives rewards, rl/signal/decoding.py), else TRL's decode of
        the ids alone."""
        if ids is not None:
            ids = list(ids)
            while ids and ids[-1] in self.strip_ids:
                ids.pop()
            head = list(prompt_ids)[-8:]  # enough of the prompt for the join (leading space, clean-up)
            for decode in (lambda x: in_context_texts(self.tok, [head], [x])[0], self.tok.decode):
                if not closed:
                    if decode(ids) == thought:
                        return ids
                    continue
                j = _prefix_decoding_to(thought, ids, decode)
                if j is not None:
                    return ids[:j]
        return self._encode(thought)

    def _score(self, model, seqs, ks) -> list[float]:
        calls = agreed_chunks(len(seqs), self.chunk_rows)
        self.forward_calls += calls
        with self.autocast():  # score_targets runs the model in eval mode (no dropout)
            return score_targets(model, seqs, ks, pad_id=self.pad_id, chunk_rows=self.chunk_rows,
                                 num_chunks=calls, device=self.device)

    def _rows(self, thoughts, completion_ids, contexts, continuations, boundaries):
        """(row, ctx ids, thought ids, target ids, closed) of every scorable row, and its policy sequence."""
        items, seqs = [], []
        for i, (th, ids, ctx, cont, bnd) in enumerate(zip(thoughts, completion_ids, contexts, continuations,
                                                             boundaries)):
            target = target_text(cont, bnd, self.next_tokens)
            if th is None or not isinstance(ctx, str) or target is None:
                continue
            ctx_ids, prompt_ids, tgt_ids = self.context_and_target(ctx, target)
            if not ctx_ids or not tgt_ids:
                continue
            th_ids = self.thought_ids(th[0], th[1], ids, prompt_ids)
            items.append((i, ctx_ids, th_ids, tgt_ids, th[1]))
            seqs.append(scored_sequence(prompt_ids, th_ids, (), self.close_ids, tgt_ids))
        return items, seqs

    def information_gain(self, thoughts, completion_ids, contexts, continuations, boundaries) -> list[float | None]:
        """Per completion: log p_policy(x | ctx, thought) - log p_teacher(x | ctx), None for bad rows.

        Collective when distributed: every rank calls it once per reward call (see the module docstring)."""
        try:
            items, seqs = self._rows(thoughts, completion_ids, contexts, continuations, boundaries)
            error = None
        except Exception as exc:  # noqa: BLE001 - agreed on below, then raised on every rank
            items, seqs, error = [], [], exc
        agree_on_failure(error)
        with torch.no_grad(), self.no_checkpointing():
            try:
                policy = self._score(self.policy, seqs, [len(g) for *_, g, _ in items])
            except Exception as exc:  # noqa: BLE001
                error = exc
            agree_on_failure(error)
            try:
                with self.teacher.scoring() as teacher_model:
                    baseline = self._baseline(teacher_model, items)
            except Exception as exc:  # noqa: BLE001
                error = exc
            agree_on_failure(error)
        out: list[float | None] = [None] * len(thoughts)
        rows = []
        for (i, ctx_ids, th_ids, tgt_ids, closed), lp in zip(items, policy):
            base = baseline[(tuple(ctx_ids), tuple(tgt_ids))]
            out[i] = lp - base
            rows.append((lp - base, lp, base, len(th_ids), closed, ctx_ids, th_ids, tgt_ids))
        if self.record is not None:
            self.record(rows, self.tok)
        return out

    def _baseline(self, model, items) -> dict:
        pairs = list(dict.fromkeys((tuple(c), tuple(g)) for _, c, _, g, _ in items))
        if model is None:  # teacher `none`: baseline 0, no forward calls on any rank
            return {p: 0.0 for p in pairs}
        values = self._score(model, [scored_sequence(c, None, (), (), g) for c, g in pairs], [len(g) for _, g in pairs])
        return dict(zip(pairs, values))


def _prefix_decoding_to(text: str, ids: list[int], decode, window: int = 8) -> int | None:
    """The shortest j with decode(ids[:j]) == text, or None. The decoded length grows with j (up to
    partial characters), so a bisection on it finds the place and a small window around it is
    checked exactly: O(log n + window) decodes instead of n."""
    lo, hi = 0, len(ids)
    while lo < hi:  # smallest j whose text is at least as long as `text`
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) < len(text):
            lo = mid + 1
        else:
            hi = mid
    for j in range(max(lo - window, 0), min(lo + window, len(ids)) + 1):
        if decode(ids[:j]) == text:
            return j
    return None


def _gain(row) -> float:
    return row[0]


class _TeacherUpdate(TrainerCallback):
    """EMA teacher update after each optimizer step."""

    def __init__(self, teacher):
        self.teacher = teacher

    def on_step_end(self, args, state, control, **kwargs):
        self.teacher.update()


class RLPTrainerMixin:
    """RLP wiring for a GRPOTrainer subclass (put before GRPOTrainer in the bases)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rlp = None
        self._rlp_table: list = []  # (gain, row) candidates since the last table
        self._rlp_table_step = 0
        if not any(getattr(spec_of(f), "teacher", False) for f in self.reward_funcs):  # registry: scored vs a teacher
            return
        args = self.args
        policy = self.model  # the unwrapped model (PEFT or not); DDP/ZeRO hooks run through its forward
        teacher = make_teacher(getattr(args, "rlp_teacher", "ema"), policy, getattr(args, "rlp_ema_decay", 0.999),
                               zero3=is_deepspeed_zero3_enabled())
        if teacher.kind != "none" and getattr(teacher, "copy", None) is not None:
            teacher.copy.to(self.accelerator.device)
        self.add_callback(_TeacherUpdate(teacher))
        self._rlp = RLPScorer(
            policy, teacher, self.processing_class if not hasattr(self.processing_class, "tokenizer")
            else self.processing_class.tokenizer,
            next_tokens=getattr(args, "rlp_next_tokens", 1), chunk_rows=getattr(args, "rlp_score_batch_size", 8),
            device=self.accelerator.device, autocast=self.accelerator.autocast,
            no_checkpointing=lambda: disable_gradient_checkpointing(self.model, args.gradient_checkpointing_kwargs),
            record=self._rlp_record)

    @property
    def rlp_teacher(self):
        return self._rlp.teacher if self._rlp is not None else None

    def _save_checkpoint(self, model, trial):
        """HF's checkpoint, then the EMA teacher's state beside it (before `on_save` marks it COMPLETE,
        so the manifest lists it). Every rank holds the same average; the main process writes it."""
        super()._save_checkpoint(model, trial)
        teacher = self.rlp_teacher
        if teacher is None or not hasattr(teacher, "state_dict") or not self.args.should_save:
            return
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        torch.save(teacher.state_dict(), folder / TEACHER_STATE)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """HF's train, with the EMA teacher restored first when resuming."""
        teacher = self.rlp_teacher
        if resume_from_checkpoint and teacher is not None and hasattr(teacher, "load_state_dict"):
            folder = resume_from_checkpoint
            if folder is True:
                folder = get_last_checkpoint(self.args.output_dir)
            path = Path(folder) / TEACHER_STATE if folder else None
            if path is not None and path.is_file():
                teacher.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), where=str(path))
            else:
                logger.warning("%s has no %s (written before the EMA teacher was checkpointed): the EMA teacher "
                               "restarts from the initial model", folder, TEACHER_STATE)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        scope = bind_scorer(self._rlp) if self._rlp is not None else contextlib.nullcontext()
        with scope:
            return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    # ------------------------------------------------------------------ logging

    def _rlp_record(self, rows, tok) -> None:
        """Step metrics over all ranks (one gather per reward call on every rank) and table candidates."""
        local = [(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        everything = [x for part in gather_object([local]) for x in part]
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        if everything:
            n = len(everything)
            metrics["rlp/info_gain"].append(sum(x[0] for x in everything) / n)
            metrics["rlp/positive_share"].append(sum(x[0] > 0 for x in everything) / n)
            metrics["rlp/policy_logp"].append(sum(x[1] for x in everything) / n)
            metrics["rlp/teacher_logp"].append(sum(x[2] for x in everything) / n)
            metrics["rlp/thought_tokens"].append(sum(x[3] for x in everything) / n)
            metrics["rlp/closed_share"].append(sum(bool(x[4]) for x in everything) / n)
        if not (self._rlp_table_on() and self.accelerator.is_main_process and rows):
            return
        step = self.state.global_step
        for gain, _lp, _b, _n, _c, ctx, th, tgt in (min(rows, key=_gain), max(rows, key=_gain)):  # this rank's extremes
            if math.isfinite(gain):
                self._rlp_table.append((gain, [step, round(gain, 4), tok.decode(ctx[-48:], skip_special_tokens=True),
                                               tok.decode(th), tok.decode(tgt)]))

    def _rlp_table_on(self) -> bool:
        steps = getattr(self.args, "rlp_table_steps", 0)
        return bool(steps and steps > 0 and "wandb" in (self.args.report_to or []))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        super().log(logs, start_time)
        step = self.state.global_step
        if not (self._rlp_table and self._rlp_table_on()
                and step - self._rlp_table_step >= getattr(self.args, "rlp_table_steps", 0)):
            return
        rows, self._rlp_table, self._rlp_table_step = self._rlp_table, [], step
        if not self.accelerator.is_main_process:
            return
        import wandb

        if wandb.run is None:
            return
        k = 5
        best = heapq.nlargest(k, rows, key=lambda r: r[0])
        worst = heapq.nsmallest(k, rows, key=lambda r: r[0])
        data = [["best"] + r for _, r in best] + [["worst"] + r for _, r in worst]
        wandb.log({"rlp_thoughts": wandb.Table(columns=["kind"] + TABLE_COLUMNS, data=data)})

