"""RLP scoring and teachers on a tiny model: the chunked, left-padded, K+1-position scoring equals a
plain full-logits computation; the scorer builds the paper's sequence (delimiter appended to a
truncated thought, a closed thought cut at its delimiter); the EMA teacher follows the formula
(whole model, and LoRA adapter only); 2 ranks make the same number of forward calls."""

from __future__ import annotations

import os
import random

import pytest
import torch

from rewards.rlp import THINK_CLOSE, THINK_OPEN, bind_scorer, rlp_reward, split_thought
from rl.errors import UserError
from rl.train.rlp_scoring import agreed_chunks, score_targets, scored_sequence
from rl.train.rlp_teacher import (
    EmaTeacher,
    FrozenTeacher,
    NoTeacher,
    check_teacher,
    make_teacher,
)
from rl.train.rlp_trainer import RLPScorer, target_text
from tests.ranks import init_gloo, spawn_ranks


def tiny_lm(seed=0, vocab=97, dtype=torch.float32):
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False)
    return AutoModelForCausalLM.from_config(config).to(dtype).eval()


def reference(model, seq, k) -> float:
    """log p of the last k tokens from one unpadded full-logits forward."""
    ids = torch.tensor([seq])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logps = torch.log_softmax(logits, -1)
    return float(sum(logps[t - 1, seq[t]] for t in range(len(seq) - k, len(seq))))


def test_score_targets_equals_full_logits_reference():
    model = tiny_lm()
    rng = random.Random(0)
    seqs = [[rng.randrange(1, 97) for _ in range(rng.randrange(3, 30))] for _ in range(7)]
    ks = [rng.choice([1, 1, 2, 3]) for _ in seqs]
    got = score_targets(model, seqs, ks, pad_id=0, chunk_rows=3, num_chunks=5)  # 3 real chunks + 2 dummies
    want = [reference(model, s, k) for s, k in zip(seqs, ks)]
    assert got == pytest.approx(want, abs=1e-5)
    # chunking and padding change nothing
    assert score_targets(model, seqs, ks, pad_id=0, chunk_rows=1) == pytest.approx(got, abs=1e-5)


def test_score_targets_counts_forward_calls_and_refuses_too_few():
    model = tiny_lm()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    score_targets(model, [[1, 2, 3]] * 5, [1] * 5, pad_id=0, chunk_rows=2, num_chunks=4)
    assert len(calls) == 4
    score_targets(model, [], [], pad_id=0, chunk_rows=2, num_chunks=2)  # a rank with no rows still calls
    assert len(calls) == 6
    with pytest.raises(ValueError, match="fewer"):
        score_targets(model, [[1, 2, 3]] * 5, [1] * 5, pad_id=0, chunk_rows=2, num_chunks=2)


def test_split_thought_and_target_text():
    assert split_thought("a plan" + THINK_CLOSE + " junk") == ("a plan", True)
    assert split_thought("runs out") == ("runs out", False)
    assert split_thought("<think> x" + THINK_CLOSE) == (" x", True)
    assert target_text(" on the mat", [3, 7, 11], 1) == " on"
    assert target_text(" on the mat", [3, 7, 11], 2) == " on the"
    assert target_text(" on", [], 1) is None and target_text(None, [3], 1) is None


@pytest.fixture(scope="module")
def tok():
    from tests.tiny_models import gpt2_tokenizer

    return gpt2_tokenizer()


def _plain_gain(tok, policy, teacher, context, thought, target):
    """The formula by hand: full-logits log-probs of the true token after the sequences, from text."""
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]
    ctx, tgt = enc(context), enc(context + target)[len(enc(context)):][:1]
    with_thought = ctx + enc(THINK_OPEN) + enc(thought) + enc(THINK_CLOSE) + tgt
    return reference(policy, with_thought, 1) - reference(teacher, ctx + tgt, 1)


def test_information_gain_equals_independent_formula(tok):
    policy, teacher_model = tiny_lm(0, vocab=len(tok)), tiny_lm(1, vocab=len(tok))
    teacher = NoTeacher()
    teacher.scoring = lambda: __import__("contextlib").nullcontext(teacher_model)
    scorer = RLPScorer(policy, teacher, tok, chunk_rows=2)
    context, cont, bnd = "The cat sat", " on the mat", [3, 7, 11]
    closed = "it sits somewhere" + THINK_CLOSE + " ignored tail"
    truncated = "it sits"
    trunc_ids = tok(truncated, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # EOS stripped
    with bind_scorer(scorer):
        out = rlp_reward(prompts=["p"] * 3, completions=[closed, truncated, [{"role": "assistant", "content": ""}]],
                         completion_ids=[[1], trunc_ids, []], context=[context] * 3, continuation=[cont] * 3,
                         boundaries=[bnd] * 3)
    want = [_plain_gain(tok, policy, teacher_model, context, t, " on") for t in ("it sits somewhere", truncated, "")]
    assert out == pytest.approx(want, abs=1e-5)
    assert len({round(v, 6) for v in out}) == 3  # the thought matters


def test_reward_without_scorer_scores_none_and_bad_rows_none(tok):
    assert rlp_reward(prompts=["p"], completions=["x"], completion_ids=[[1]], context=["c"],
                      continuation=[" a"], boundaries=[[2]]) == [None]
    scorer = RLPScorer(tiny_lm(vocab=len(tok)), NoTeacher(), tok)
    with bind_scorer(scorer):
        out = rlp_reward(prompts=["p"] * 3, completions=["x", None, "y"], completion_ids=[[1]] * 3,
                         context=["ctx", "ctx", None], continuation=[" a"] * 3, boundaries=[[2]] * 3)
    assert out[0] is not None and out[1:] == [None, None]


def test_ema_teacher_follows_the_formula():
    policy = tiny_lm(0)
    teacher = EmaTeacher(policy, decay=0.9)
    start = {n: p.detach().clone() for n, p in policy.named_parameters()}
    for step in range(2):
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(torch.randn_like(p))
        live = {n: p.detach().clone() for n, p in policy.named_parameters()}
        teacher.update()
        for n, e in teacher.copy.named_parameters():
            start[n] = 0.9 * start[n] + 0.1 * live[n]
            torch.testing.assert_close(e, start[n], rtol=1e-6, atol=1e-6)
    assert not any(p.requires_grad for p in teacher.copy.parameters())
    with teacher.scoring() as m:
        assert m is teacher.copy


def test_ema_teacher_lora_adapter_only():
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(tiny_lm(0), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                   lora_dropout=0.0, init_lora_weights=False))
    teacher = EmaTeacher(policy, decay=0.5)
    assert teacher.adapter_only and teacher.copy is None
    assert teacher.shadow and all("lora_" in n for n in teacher.shadow)
    old = {n: t.clone() for n, t in teacher.shadow.items()}
    base_before = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if p.requires_grad:
                p.add_(1.0)
    live = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    teacher.update()
    for n, t in teacher.shadow.items():
        torch.testing.assert_close(t, 0.5 * old[n] + 0.5 * live[n])
    seq = [[5, 6, 7, 8]]
    with teacher.scoring() as m:  # the averaged adapter is live inside, the trained one after
        inside = score_targets(m, seq, [1], pad_id=0)
        assert all(torch.equal(p, teacher.shadow[n]) for n, p in policy.named_parameters() if n in teacher.shadow)
    assert all(torch.equal(p, live[n]) for n, p in policy.named_parameters() if p.requires_grad)
    assert all(torch.equal(p, base_before[n]) for n, p in policy.named_parameters() if not p.requires_grad)
    assert inside != pytest.approx(score_targets(policy, seq, [1], pad_id=0), abs=1e-7)


def test_ema_teacher_zero3_path_scores_like_the_swap(monkeypatch):
    """The ZeRO-3 path (LoRA linears compute with the averaged weights; partitions never written) gives
    the same teacher scores as swapping the averaged adapter in. Without DeepSpeed partitions the
    gathers are no-ops, so this runs in one process; tests/rl/train/test_rlp_distributed.py runs it
    on 2 ZeRO-3 ranks."""
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(tiny_lm(0), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                   lora_dropout=0.0, init_lora_weights=False))
    swap, patched = EmaTeacher(policy, decay=0.5), EmaTeacher(policy, decay=0.5, zero3=True)
    assert len(patched._linears) == 4 * policy.config.num_hidden_layers  # A and B of q and v per layer
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(0.5)
    swap.update()
    patched.update()
    live = {n: p.detach().clone() for n, p in policy.named_parameters()}
    seq = [[5, 6, 7, 8], [9, 3, 2, 11]]
    with swap.scoring() as m:
        want = score_targets(m, seq, [1, 2], pad_id=0)
    with patched.scoring() as m:
        got = score_targets(m, seq, [1, 2], pad_id=0)
        assert all(torch.equal(p, live[n]) for n, p in m.named_parameters())  # nothing written
    assert got == pytest.approx(want, abs=1e-5)
    assert got != pytest.approx(score_targets(policy, seq, [1, 2], pad_id=0), abs=1e-4)
    assert "forward" not in vars(patched._linears[0][0])  # the patch is gone after the block


def test_base_teacher_and_checks():
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(tiny_lm(0), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"],
                                                   init_lora_weights=False))
    base = FrozenTeacher(policy)
    assert base.copy is None
    with base.scoring() as m:
        off = score_targets(m, [[3, 4, 5]], [1], pad_id=0)
    assert off != pytest.approx(score_targets(policy, [[3, 4, 5]], [1], pad_id=0), abs=1e-7)
    assert isinstance(make_teacher("none", policy), NoTeacher)
    check_teacher("ema", policy, zero3=True)  # LoRA: the averaged adapter is kept whole on every rank
    check_teacher("base", policy, zero3=True)  # LoRA: the adapter is disabled, nothing copied
    with pytest.raises(UserError, match="ZeRO-3"):
        check_teacher("ema", tiny_lm(), zero3=True)
    with pytest.raises(UserError, match="ZeRO-3"):
        check_teacher("base", tiny_lm(), zero3=True)
    with pytest.raises(UserError, match="rlp_teacher"):
        check_teacher("mean", policy, zero3=False)
    with pytest.raises(UserError, match="rlp_ema_decay"):
        EmaTeacher(tiny_lm(), decay=1.0)


def test_scored_sequence_layout():
    assert scored_sequence([1, 2], [5], [8], [9], [3]) == [1, 2, 8, 5, 9, 3]
    assert scored_sequence([1, 2], None, [8], [9], [3]) == [1, 2, 3]
    assert agreed_chunks(5, 2) == 3 and agreed_chunks(0, 2) == 0


# ---------------------------------------------------------------------------- two ranks (gloo)

def _rank(rank: int, world: int, init_method: str, out_dir: str) -> None:
    import torch.distributed as dist

    init_gloo(rank, world, init_method)
    model = tiny_lm(0)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    rng = random.Random(rank)
    n = 3 if rank == 0 else 8  # unequal rows: rank 0 needs 2 chunks of 2, rank 1 needs 4
    seqs = [[rng.randrange(1, 97) for _ in range(rng.randrange(3, 12))] for _ in range(n)]
    chunks = agreed_chunks(len(seqs), 2)
    values = score_targets(model, seqs, [1] * n, pad_id=0, chunk_rows=2, num_chunks=chunks)
    torch.save({"calls": len(calls), "values": values, "seqs": seqs}, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_ranks_make_the_same_number_of_forward_calls(tmp_path):
    spawn_ranks(_rank, 2, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert r0["calls"] == r1["calls"] == 4
    model = tiny_lm(0)
    for r in (r0, r1):  # and each rank's values are the single-process ones
        assert r["values"] == pytest.approx([reference(model, s, 1) for s in r["seqs"]], abs=1e-5)
