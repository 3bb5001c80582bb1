"""rl/sft/heads.py: heads read the trunk's real inputs (causal, padded and packed batches, eager and SDPA),
initialise as the last layer, and save/load apart from the policy, strictly."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from rl.errors import UserError
from rl.sft.heads import (
    LastLayerInputs,
    attach,
    build_heads,
    check_heads_match,
    find_trunk,
    head_logits,
    heads_state,
    load_heads_into,
    model_identity,
    read_heads_config,
    write_heads,
)


def _model(path, impl="eager"):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=impl).eval()
    heads = attach(model, build_heads(model, 2, "decoder_layer"), trainable=False)
    with torch.no_grad():  # heads that differ from the last layer, so a wrong input shows
        for p in heads.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, heads, LastLayerInputs(model)


def _head_logits(model, heads, capture, k, **inputs):
    with torch.no_grad(), capture.capturing():
        model(**inputs)
    hidden, kwargs = capture.take()
    with torch.no_grad():
        return head_logits(heads, model, k, hidden, kwargs)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_future_tokens_never_change_a_heads_logits(tiny_model_dir, impl):
    model, heads, capture = _model(tiny_model_dir, impl)
    torch.manual_seed(1)
    ids = torch.randint(0, 5000, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # a right-padded row, as TRL's SFT collator pads
    changed = ids.clone()
    changed[:, 6:] = torch.randint(0, 5000, (2, 6))
    for k in (1, 2):
        before = _head_logits(model, heads, capture, k, input_ids=ids, attention_mask=mask)
        after = _head_logits(model, heads, capture, k, input_ids=changed, attention_mask=mask)
        assert torch.equal(before[:, :6], after[:, :6]), f"head {k} at t < 6 saw tokens after t ({impl})"
        assert not torch.allclose(before[0, 6:], after[0, 6:]), "the changed tokens must matter where they are seen"


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_packed_sequences_do_not_see_each_other(tiny_model_dir, impl):
    """Padding-free packing: one row, position ids restarting per sequence, no attention mask and no cache
    (transformers builds the per-sequence mask only then, as in training: TRL passes use_cache=False)."""
    model, heads, capture = _model(tiny_model_dir, impl)
    torch.manual_seed(2)
    first, second = torch.randint(0, 5000, (1, 5)), torch.randint(0, 5000, (1, 7))
    positions = torch.tensor([list(range(5)) + list(range(7))])
    packed = torch.cat([first, second], 1)
    other_first = torch.cat([torch.randint(0, 5000, (1, 5)), second], 1)
    alone = _head_logits(model, heads, capture, 1, input_ids=second, use_cache=False)
    for ids in (packed, other_first):
        logits = _head_logits(model, heads, capture, 1, input_ids=ids, position_ids=positions, use_cache=False)
        torch.testing.assert_close(logits[:, 5:], alone, atol=1e-5, rtol=1e-5)


def test_a_new_decoder_head_starts_as_the_last_layer(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    heads = attach(model, build_heads(model, 1, "decoder_layer"), trainable=False)
    capture = LastLayerInputs(model)
    ids = torch.randint(0, 5000, (1, 9))
    logits = _head_logits(model, heads, capture, 1, input_ids=ids)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    residual = build_heads(model, 2, "residual")
    assert all(float(p.detach().abs().sum()) == 0 for p in residual.parameters())  # identity at the start


def test_no_decoder_layers_is_one_line():
    from transformers import BertConfig, BertLMHeadModel

    model = BertLMHeadModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, vocab_size=100, is_decoder=True))
    with pytest.raises(UserError, match=r"^aux_mtp: caft needs a decoder-only model .* BertLMHeadModel"):
        find_trunk(model)


def test_save_load_round_trip_and_strict_checks(tiny_model_dir, tmp_path):
    model, heads, capture = _model(tiny_model_dir)
    identity = model_identity(model.config, str(tiny_model_dir))
    write_heads(tmp_path / "heads", heads_state(heads), heads, identity, {"note": 1})
    config = read_heads_config(tmp_path / "heads")
    assert config["num_heads"] == 2 and config["hidden_size"] == 64 and config["note"] == 1
    check_heads_match(config, identity, 2, "decoder_layer")  # no error
    fresh = build_heads(model, 2, "decoder_layer", init_from_last=False)
    load_heads_into(fresh, tmp_path / "heads")
    for (name, a), b in zip(heads.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(UserError, match=r"^caft_heads_path: heads were saved with num_heads=2, this run has 3"):
        check_heads_match(config, identity, 3, "decoder_layer")
    with pytest.raises(UserError, match=r"^caft_heads_path: heads were saved with hidden_size=64"):
        check_heads_match(config, {**identity, "hidden_size": 128}, 2, "decoder_layer")
    with pytest.raises(UserError, match=r"^caft_heads_path: heads were trained on base model"):
        check_heads_match(config, {**identity, "base_model": "other-model"}, 2, "decoder_layer")
    with pytest.raises(UserError, match=r"^caft_heads_path: the saved heads do not fit this model \(missing"):
        load_heads_into(build_heads(model, 3, "decoder_layer"), tmp_path / "heads")
    with pytest.raises(UserError, match=r"^caft_heads_path: .* does not exist"):
        read_heads_config(tmp_path / "nope")
    (tmp_path / "heads" / "caft_heads.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(UserError, match=r"^caft_heads_path: .*not a version-1"):
        read_heads_config(tmp_path / "heads")


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma2"])
def test_heads_attach_causally_to_other_decoder_families(family):
    """SmolLM2 is a Llama; Qwen3 adds q/k norms; Gemma2 alternates sliding-window layers and soft-caps:
    each head is the last layer's own class with its own attention type, reading that layer's mask."""
    import transformers

    config_class = {"llama": transformers.LlamaConfig, "qwen3": transformers.Qwen3Config,
                    "gemma2": transformers.Gemma2Config}[family]
    kwargs = dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
    if family == "gemma2":  # the heads must see exactly the window the last layer sees, and share its soft-cap
        kwargs.update(sliding_window=4, final_logit_softcapping=0.05)  # a cap the tiny logits reach
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_class(**kwargs), attn_implementation="eager").eval()
    heads = attach(model, build_heads(model, 1, "decoder_layer"), trainable=False)
    capture = LastLayerInputs(model)
    ids = torch.randint(0, 512, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    changed = ids.clone()
    changed[:, 5:] = torch.randint(0, 512, (2, 5))
    before = _head_logits(model, heads, capture, 1, input_ids=ids, attention_mask=mask)
    after = _head_logits(model, heads, capture, 1, input_ids=changed, attention_mask=mask)
    assert torch.equal(before[:, :5], after[:, :5])
    with torch.no_grad():  # a fresh head is the last layer: its logits are the model's own
        own = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(before[0], own[0], atol=1e-4, rtol=1e-4)
