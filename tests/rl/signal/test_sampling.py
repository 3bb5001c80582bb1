"""The one sampler (rl/signal/sampling.py): prompts as the model reads them, shared prefill, the RNG
left alone, TRL's stop rule, the text each completion adds after its prompt, per tokenizer family."""

from __future__ import annotations

import pytest
import torch

from rl.signal.padding import left_pad
from rl.signal.sampling import (
    SamplingSettings,
    _calls,
    generate_shared_prefill,
    prompt_ids,
    sample,
    stop_ids,
)
from tests.chain_model import build_chain_model
from tests.tokenizer_matrix import ADDS_BOS, kind_of

PROMPT = "The quick brown"
WRITTEN = " fox jumps"  # starts with a space: a SentencePiece `▁fox` decoded alone loses it


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def writer(matrix_model_dir, tmp_path):
    """(kind, model, tokenizer, chain): a matrix model made to write WRITTEN (as the tokens it is in
    context after PROMPT) and then EOS, at any temperature (tests/chain_model.py)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(matrix_model_dir)
    head = tok(PROMPT, add_special_tokens=False)["input_ids"]
    full = tok(PROMPT + WRITTEN, add_special_tokens=False)["input_ids"]
    assert full[:len(head)] == head
    chain = full[len(head):]
    path = build_chain_model(matrix_model_dir, tmp_path / "chain", chain)
    return kind_of(matrix_model_dir), AutoModelForCausalLM.from_pretrained(path).eval(), tok, chain


def test_settings_refuse_what_cannot_be_sampled():
    with pytest.raises(ValueError, match="temperature 0 is greedy"):
        SamplingSettings(samples=2, temperature=0)
    for bad in ({"samples": 0}, {"max_new_tokens": 0}, {"batch_size": 0}, {"max_rows": 0}, {"temperature": -1}):
        with pytest.raises(ValueError):
            SamplingSettings(**bad)
    assert SamplingSettings(temperature=0).generate_kwargs() == {"do_sample": False}
    assert SamplingSettings(top_k=None, min_p=0.1).generate_kwargs()["top_k"] == 0


def test_calls_batch_prompts_and_split_samples_over_max_rows():
    def calls(n, **kw):
        return list(_calls(n, SamplingSettings(**kw)))

    assert calls(5, samples=3, batch_size=2) == [([0, 1], 3, True), ([2, 3], 3, True), ([4], 3, True)]
    assert calls(3, samples=4, batch_size=4, max_rows=8) == [([0, 1], 4, True), ([2], 4, True)]
    assert calls(2, samples=5, batch_size=1, max_rows=2) == [([0], 2, False), ([0], 2, False), ([0], 1, True),
                                                          ([1], 2, False), ([1], 2, False), ([1], 1, True)]


def test_prompt_ids_read_text_after_bos_and_messages_through_the_template(matrix_model_dir, tiny_model_dir,
                                                                          tiny_model_dir_plain):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(matrix_model_dir)
    text = tok(PROMPT, add_special_tokens=False)["input_ids"]
    bos = [tok.bos_token_id] if ADDS_BOS[kind_of(matrix_model_dir)] else []
    assert prompt_ids(tok, PROMPT) == bos + text  # never an EOS the tokenizer may append
    chat, plain = AutoTokenizer.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir_plain)
    msgs = [{"role": "user", "content": "Predict: The cat"}]
    templated = chat.decode(prompt_ids(chat, msgs))
    assert templated.endswith("<|im_start|>assistant\n") and "Predict: The cat" in templated
    assert prompt_ids(plain, msgs) == prompt_ids(plain, "Predict: The cat")  # no template: the contents as text
    assert chat.decode(prompt_ids(chat, "raw prompt")) == "raw prompt"  # a string is never templated
    # ... unless asked to be one user turn (rl profile --generate), which a tokenizer without a template ignores
    assert prompt_ids(chat, "Predict: The cat", user_turn=True) == prompt_ids(chat, msgs)
    assert prompt_ids(plain, "Predict: The cat", user_turn=True) == prompt_ids(plain, "Predict: The cat")


def test_shared_prefill_sampling_equals_plain_generate(tiny):
    from rl.train.signal_check import render_prompt_ids

    model, tok = tiny
    prompts = ["a b c d e", "x", [{"role": "user", "content": "hello there"}]]
    ids, mask, pos = left_pad([render_prompt_ids(tok, p) for p in prompts], tok.pad_token_id, "cpu")
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.inference_mode():
        plain = model.generate(input_ids=ids.repeat_interleave(3, 0), attention_mask=mask.repeat_interleave(3, 0),
                               **kwargs)
        shared = generate_shared_prefill(model, ids, mask, pos, 3, **kwargs)
    assert torch.equal(plain, shared)


def test_seed_forks_the_rng_and_none_uses_the_callers(tiny):
    model, tok = tiny
    prompts = [prompt_ids(tok, "a b c"), prompt_ids(tok, "x y")]
    settings = SamplingSettings(samples=3, max_new_tokens=6, temperature=1.0, batch_size=1, seed=7)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = sample(model, tok, prompts, settings)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert [s.prompt for s in first] == [0, 0, 0, 1, 1, 1]
    assert sample(model, tok, prompts, settings) == first  # seeded: the same samples
    assert len({tuple(s.ids) for s in first}) > 1  # and they are samples, not copies
    torch.manual_seed(7)
    stream = sample(model, tok, prompts[:1], SamplingSettings(samples=3, max_new_tokens=6, seed=None))
    stream += sample(model, tok, prompts[1:], SamplingSettings(samples=3, max_new_tokens=6, seed=None))
    assert [s.ids for s in stream] == [s.ids for s in first]  # None: two calls continue the caller's stream
    assert not torch.equal(torch.get_rng_state(), state)
    assert model.training is False


def test_completions_end_at_the_stop_token_and_read_as_written(writer):
    kind, model, tok, chain = writer
    model.train()  # the sampler reads in eval mode and puts the flag back
    progress = []
    drawn = sample(model, tok, [prompt_ids(tok, PROMPT)] * 2,
                   SamplingSettings(samples=2, max_new_tokens=len(chain) + 4, batch_size=1), progress=progress.append)
    assert model.training and progress == [1, 1]
    assert [(s.prompt, s.ids, s.stop) for s in drawn] == [(p, chain, tok.eos_token_id) for p in (0, 0, 1, 1)], kind
    assert [s.text for s in drawn] == [WRITTEN] * 4, kind  # decoded alone a SentencePiece `▁fox` loses its space
    assert tok.eos_token_id in stop_ids(model, tok)
    short = sample(model, tok, [prompt_ids(tok, PROMPT)], SamplingSettings(max_new_tokens=2))
    assert [(s.ids, s.stop) for s in short] == [(chain[:2], None)]  # ran out of tokens: no stop token


def test_stop_after_ends_a_completion_at_the_token_that_completes_the_text(writer):
    kind, model, tok, chain = writer
    drawn = sample(model, tok, [prompt_ids(tok, PROMPT)], SamplingSettings(samples=2, max_new_tokens=len(chain) + 4),
                   stop_after=lambda text: "fox" in text)
    want = next(k for k in range(1, len(chain) + 1) if "fox" in tok.decode(chain[:k], skip_special_tokens=True))
    assert [(s.ids, s.stop) for s in drawn] == [(chain[:want], None)] * 2, kind
    assert all("fox" in s.text and "jumps" not in s.text for s in drawn)
