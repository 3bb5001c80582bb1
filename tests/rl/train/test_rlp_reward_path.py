"""The RLP reward path scores what it should (issue 22):

* the teacher scores with its own weights, not the live policy's, after TRL's GRPOTrainer patched the
  policy's forward with its fused LM head (a deep copy keeps that closure over the policy's forward);
* the scored sequence begins exactly as TRL tokenized the prompt the sampler saw (BOS included for
  tokenizers that add one), over the tokenizer matrix;
* scoring runs in eval mode (no dropout), policy and teacher, and gives the training flags back.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

from rewards.rlp import THINK_CLOSE, bind_scorer, rlp_prompt, rlp_reward
from rl.train.rlp_scoring import score_targets
from rl.train.rlp_teacher import NoTeacher, make_teacher
from rl.train.rlp_trainer import RLPScorer

SEQ = [[5, 9, 14, 3, 22, 7, 31]]


def tiny_lm(seed=0, vocab=97, dropout=0.0):
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, attention_dropout=dropout)
    config._attn_implementation = "eager"
    return AutoModelForCausalLM.from_config(config)


def trl_patched_policy(use_peft: bool, lora_dropout: float = 0.0):
    """A policy as GRPOTrainer leaves it: PEFT-wrapped (optionally), then `add_fused_lm_head` on the base model."""
    from trl.trainer.utils import add_fused_lm_head

    model = tiny_lm(0)
    if use_peft:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                 lora_dropout=lora_dropout, init_lora_weights=False))
    add_fused_lm_head(model.get_base_model() if use_peft else model, outputs=("log_probs", "entropy"))
    return model


def teacher_score(teacher) -> float:
    with teacher.scoring() as model:
        return score_targets(model, SEQ, [2], pad_id=0)[0]


@torch.no_grad()
def _shift(params) -> None:
    for p in params:
        p.add_(0.05 * torch.randn_like(p))


# ------------------------------------------------------------------------------- finding 1: teacher weights


@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("kind", ["ema", "base"])
def test_teacher_scores_with_its_own_weights_after_trl_patches_the_policy(use_peft, kind):
    policy = trl_patched_policy(use_peft)
    teacher = make_teacher(kind, policy, decay=0.5)
    if not use_peft:  # the frozen copy must not call back into the policy through an instance forward
        leftovers = [name for name, m in teacher.copy.named_modules() if "forward" in vars(m)]
        assert not leftovers, f"instance-level forwards survive in the teacher copy: {leftovers}"
    before = teacher_score(teacher)

    # only the policy changes (LoRA: its live adapter; full model: every weight): the teacher stays put
    _shift(p for p in policy.parameters() if p.requires_grad)
    assert teacher_score(teacher) == pytest.approx(before, abs=1e-7)
    policy_now = score_targets(policy, SEQ, [2], pad_id=0)[0]
    assert policy_now != pytest.approx(before, abs=1e-4)  # the change was real

    # only the teacher changes: its score moves (LoRA base: the teacher is the frozen base, shared with the policy)
    if use_peft and kind == "base":
        return
    own = list(teacher.copy.parameters()) if not use_peft else list(teacher.shadow.values())
    _shift(own)
    assert teacher_score(teacher) != pytest.approx(before, abs=1e-4)
    assert score_targets(policy, SEQ, [2], pad_id=0)[0] == pytest.approx(policy_now, abs=1e-7)


def test_teacher_of_the_real_trainer_is_not_the_policy(tiny_model_dir_plain, tmp_path):
    """The same through EntropyGRPOTrainer's own construction (TRL patches the policy in its __init__)."""
    from tests.rl.train.test_rlp_trainer import make_rlp_trainer

    trainer = make_rlp_trainer(tiny_model_dir_plain, tmp_path, teacher="base")
    teacher = trainer.rlp_teacher
    assert "forward" in vars(trainer.model), "TRL no longer patches the policy's forward (update this test)"
    assert not any("forward" in vars(m) for m in teacher.copy.modules())
    before = teacher_score(teacher)
    _shift(trainer.model.parameters())
    assert teacher_score(teacher) == pytest.approx(before, abs=1e-7)
    _shift(teacher.copy.parameters())
    assert teacher_score(teacher) != pytest.approx(before, abs=1e-4)


# ------------------------------------------------------------------------------- finding 2: the sampler's ids


def trl_prompt_ids(tok, prompt) -> list[int]:
    """The prompt ids TRL 1.16's GRPOTrainer generates from (its own `_tokenize_prompts`)."""
    from trl import GRPOTrainer

    fake = SimpleNamespace(processing_class=tok, _is_vlm=False, environment_factories=None, tools=None,
                           chat_template=None, chat_template_kwargs={})
    ids, _, _ = GRPOTrainer._tokenize_prompts(fake, [prompt])
    return list(ids[0])


class _Recorder:
    """A teacher and a `score_targets` stand-in that record the sequences they were given."""

    def __init__(self):
        self.seqs = []

    def __call__(self, model, seqs, ks, **kwargs):
        self.seqs.append([list(s) for s in seqs])
        return [0.0] * len(seqs)


def test_scored_sequence_begins_with_trl_prompt_ids(matrix_model_dir, monkeypatch):
    """Completions arrive as the trainer gives them to rewards (the text they add after the prompt,
    rl/signal/decoding.py); the sampler's thought ids follow the prompt ids unchanged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import rl.train.rlp_trainer as rlp_trainer
    from rl.signal.decoding import in_context_texts

    tok = AutoTokenizer.from_pretrained(matrix_model_dir)
    model = AutoModelForCausalLM.from_pretrained(matrix_model_dir)
    recorder = _Recorder()
    monkeypatch.setattr(rlp_trainer, "score_targets", recorder)
    teacher = NoTeacher()
    teacher.scoring = lambda: contextlib.nullcontext(model)
    scorer = RLPScorer(model, teacher, tok)
    context, cont = "The quick brown fox jumps over", " the lazy dog"
    prompt = rlp_prompt(context, use_chat=False)
    prompt_ids = trl_prompt_ids(tok, prompt)
    if tok.bos_token_id is not None and tok("x")["input_ids"][0] == tok.bos_token_id:
        assert prompt_ids[0] == tok.bos_token_id  # the test means something for BOS-adding tokenizers

    def sampled(text):  # ids a sampler writing `text` after the prompt could have made
        full = trl_prompt_ids(tok, prompt + text)
        assert full[:len(prompt_ids)] == prompt_ids
        return full[len(prompt_ids):]

    ids = [sampled(" it will be a word"), sampled(" the next word" + THINK_CLOSE + " tail")]
    thought_ids = sampled(" the next word")
    assert ids[1][:len(thought_ids)] == thought_ids
    texts = in_context_texts(tok, [prompt_ids] * 2, ids)
    scorer.context_and_target(context, " the")  # cached: from here on nothing may be re-tokenized

    def no_retokenizing(text):
        raise AssertionError(f"the thought was re-tokenized ({text!r}) instead of kept as the sampler's ids")

    monkeypatch.setattr(scorer, "_encode", no_retokenizing)
    with bind_scorer(scorer):
        out = rlp_reward(prompts=[prompt] * 2, completions=texts, completion_ids=ids, context=[context] * 2,
                         continuation=[cont] * 2, boundaries=[[4, 9, 13]] * 2)
    assert all(v is not None for v in out)
    (open_seq, closed_seq), teacher_seqs = recorder.seqs
    for seq in (open_seq, closed_seq):
        assert seq[:len(prompt_ids)] == prompt_ids
    # the sampler's own ids follow the prompt: all of them (no delimiter written), or those before it
    assert open_seq[len(prompt_ids):len(prompt_ids) + len(ids[0])] == ids[0]
    assert closed_seq[len(prompt_ids):len(prompt_ids) + len(thought_ids)] == thought_ids
    context_ids = trl_prompt_ids(tok, context)  # the no-think baseline: the context as TRL tokenizes a prompt
    for seq in teacher_seqs:
        assert seq[:len(context_ids)] == context_ids


# ------------------------------------------------------------------------------- finding 4: no dropout


def _flags(model) -> list[bool]:
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("setup", ["full-dropout", "lora-dropout-ema", "lora-dropout-base"])
def test_scoring_runs_without_dropout_and_restores_training_flags(setup):
    from tests.tiny_models import gpt2_tokenizer

    tok = gpt2_tokenizer()
    if setup == "full-dropout":
        policy, kind = tiny_lm(0, vocab=len(tok), dropout=0.5), "ema"
    else:
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(tiny_lm(0, vocab=len(tok)), LoraConfig(
            r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.5, init_lora_weights=False))
        kind = setup.rsplit("-", 1)[1]
    teacher = make_teacher(kind, policy, decay=0.5)
    policy.train()
    if getattr(teacher, "copy", None) is not None:
        teacher.copy.train()  # a teacher put back in train mode by anyone still scores without dropout
    policy.lm_head.eval() if hasattr(policy, "lm_head") else None  # mixed flags are restored exactly
    flags = _flags(policy)
    scorer = RLPScorer(policy, teacher, tok)
    args = dict(thoughts=[("it sits", False)] * 3, completion_ids=[None] * 3, contexts=["The cat sat"] * 3,
                continuations=[" on the mat"] * 3, boundaries=[[3, 7, 11]] * 3)
    first = scorer.information_gain(**args)
    second = scorer.information_gain(**args)
    assert first == second and first[0] == first[1] == first[2]
    assert _flags(policy) == flags
    # and on an exception inside scoring too
    def boom(*a, **k):
        raise RuntimeError("forward failed")

    handle = policy.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="forward failed"):
        scorer.information_gain(**args)
    handle.remove()
    assert _flags(policy) == flags


def test_closed_thought_is_scored_with_the_sampler_ids(monkeypatch):
    """A closed thought keeps the ids the sampler generated before the delimiter, also when they are not
    the tokenizer's own split of the text (re-tokenizing would score a sequence the sampler never made)."""
    import rl.train.rlp_trainer as rlp_trainer
    from tests.tiny_models import gpt2_tokenizer

    tok = gpt2_tokenizer()
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    sampled = enc(" i") + enc("t") + enc(" sits")  # " it sits", split as no tokenizer would
    assert sampled != enc(" it sits") and tok.decode(sampled) == " it sits"
    recorder = _Recorder()
    monkeypatch.setattr(rlp_trainer, "score_targets", recorder)
    scorer = RLPScorer(None, NoTeacher(), tok)
    ids = sampled + enc(THINK_CLOSE + " tail") + [tok.eos_token_id]
    with bind_scorer(scorer):
        rlp_reward(prompts=["p"], completions=[" it sits" + THINK_CLOSE + " tail"], completion_ids=[ids],
                   context=["The cat sat"], continuation=[" on the mat"], boundaries=[[3, 7, 11]])
    (seq,), = recorder.seqs
    prompt_ids = trl_prompt_ids(tok, rlp_prompt("The cat sat", use_chat=False))
    assert seq == prompt_ids + sampled + enc(THINK_CLOSE) + enc(" on")
