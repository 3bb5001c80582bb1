"""Step-scope entropies recorded while sampling (no pre-pass), and the bottom-side ablation.

Real transformers `generate` on a tiny model (with top-k, a repetition penalty and many EOS ids,
so the processors change the sampling distribution and completions end at different lengths):
the recorded entropies must be those of softmax(raw logits / T) at each completion token, i.e.
what a full-logits forward of the finished batch gives, and no extra forward may run.
"""

from __future__ import annotations

import math

import pytest
import torch

from rl.errors import UserError
from rl.signal.entropy import select_forking_tokens
from rl.train.sampling_entropy import GenerationEntropy, entropy_table
from tests.kit import build_sharp_model
from tests.rl.train.forking_worker import make_trainer
from tests.rl.train.test_trainer_forking import full_entropies, generation_batch

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory, tiny_model_dir_plain):
    return build_sharp_model(tiny_model_dir_plain, tmp_path_factory.mktemp("sharp-model"))


def real_generation_trainer(model_dir, tmp_path, **extra):
    """make_trainer's trainer, but sampling through TRL's real `generate` path."""
    trainer = make_trainer(model_dir, tmp_path, top_k=5, repetition_penalty=1.3, **extra)
    real = type(trainer).__mro__[1]._generate_single_turn  # EntropyGRPOTrainer's (the fake one is mro[0])
    trainer._generate_single_turn = real.__get__(trainer)
    stops = list(range(3, trainer.model.config.vocab_size, 9))  # ~11% of ids end a completion
    trainer.eos_token_ids = stops
    trainer.generation_config.eos_token_id = stops
    trainer.generation_kwargs["eos_token_id"] = stops
    return trainer


def test_recorder_rows_and_table():
    rec = GenerationEntropy(temperature=2.0)
    logits = [torch.randn(3, 11, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    for z in logits:
        assert rec(None, z) is z  # scores pass through unchanged
    rows = rec.per_row([4, 1, 0])
    expect = torch.stack([torch.distributions.Categorical(logits=z / 2.0).entropy() for z in logits], 1)
    assert torch.allclose(rows[0], expect[0], atol=1e-6) and torch.allclose(rows[1], expect[1, :1], atol=1e-6)
    assert rows[2].numel() == 0
    table = entropy_table(rows, 5)
    assert table.shape == (3, 5) and torch.equal(table[0, 4:], torch.zeros(1)) and table[2].abs().sum() == 0
    with pytest.raises(ValueError):
        rec.per_row([5, 1, 1])


def test_generation_entropies_match_a_full_forward_and_replace_the_scan(sharp_model_dir, tmp_path, monkeypatch):
    trainer = real_generation_trainer(sharp_model_dir, tmp_path)

    def no_scan(*a, **k):
        raise AssertionError("the entropy pre-pass ran although sampling recorded the entropies")

    monkeypatch.setattr(trainer, "_forking_scan", no_scan)
    out = generation_batch(trainer)
    valid = out["completion_mask"].bool()
    lengths = valid.sum(1)
    assert lengths.min() < lengths.max() and (lengths < 16).any()  # EOS at different places: the mapping matters
    ref = full_entropies(trainer, out)
    got = out["forking_entropy"]
    assert torch.allclose(got[valid], ref[valid].float(), atol=1e-4), (got[valid] - ref[valid]).abs().max()
    assert (got[~valid] == 0).all()
    n = int(valid.sum())
    assert int(out["forking_mask"].sum()) == math.ceil(0.2 * n)
    assert float(got[out["forking_mask"]].min()) >= float(got[valid & ~out["forking_mask"]].max())


def test_completions_edited_after_sampling_get_their_own_entropies(sharp_model_dir, tmp_path):
    """A wrapper that rewrites the sampled tokens (as tests/rl/train/distributed_worker.py does) must not
    leave the recorded entropies of the discarded tokens in charge of the kept set."""
    trainer = real_generation_trainer(sharp_model_dir, tmp_path)
    sample = trainer._generate_single_turn

    def edited(*args, **kwargs):
        ids, logprobs = sample(*args, **kwargs)
        return [[(t + 1) % trainer.model.config.vocab_size for t in c] for c in ids], logprobs

    trainer._generate_single_turn = edited
    out = generation_batch(trainer)
    valid = out["completion_mask"].bool()
    ref = full_entropies(trainer, out)
    assert torch.allclose(out["forking_entropy"][valid], ref[valid].float(), atol=1e-5)


def test_generation_entropies_are_raw_distribution_not_processed(sharp_model_dir, tmp_path):
    """top_k=5 would cap the processed entropy at log 5; the recorded ones exceed it."""
    trainer = real_generation_trainer(sharp_model_dir, tmp_path)
    out = generation_batch(trainer)
    assert float(out["forking_entropy"].max()) > math.log(5) + 0.5


@pytest.mark.parametrize("scope", ["step", "micro_batch"])
def test_bottom_side_trains_on_the_complement(sharp_model_dir, tmp_path, scope):
    top = make_trainer(sharp_model_dir, tmp_path / "top", scope=scope)
    bottom = make_trainer(sharp_model_dir, tmp_path / "bottom", scope=scope, entropy_mask_side="bottom")
    assert bottom.args.entropy_mask_side == "bottom"
    out = generation_batch(bottom)
    valid = out["completion_mask"].bool()
    ent = full_entropies(bottom, out).float()
    weights_b = bottom.get_high_entropy_mask(ent, valid.int(), 0.8)
    weights_t = top.get_high_entropy_mask(ent, valid.int(), 0.8)
    if scope == "step":  # the step's own selection travels with the batch
        kept = out["forking_mask"]
        top_kept, _ = select_forking_tokens(out["forking_entropy"], valid, 0.2)
        assert torch.equal(kept, valid & ~top_kept)
    kept_b, kept_t = weights_b > 0, weights_t > 0
    assert not (kept_b & kept_t).any() and torch.equal(kept_b | kept_t, valid)
    assert int(kept_b.sum()) == int(valid.sum()) - math.ceil(0.2 * int(valid.sum()))


def test_bad_side_is_a_user_error(tmp_path):
    from rl.train.config import EntropyGRPOConfig

    with pytest.raises(UserError, match="entropy_mask_side"):
        EntropyGRPOConfig(output_dir=str(tmp_path), entropy_mask_side="middle", use_cpu=True, bf16=False)


def test_sampling_time_entropies_give_the_same_kept_set_in_every_accumulation_layout(sharp_model_dir, tmp_path):
    """One process, real generation: 4 micro-batches of 4 and 1 of 16 sample the same 16 completions
    (same seed, one generate call per generation batch), so the entropies and the kept set agree exactly."""
    kept, weights = [], []
    for bs, ga in ((4, 4), (16, 1)):
        trainer = real_generation_trainer(sharp_model_dir, tmp_path / f"{bs}x{ga}", bs=bs, ga=ga)
        scans = []
        real_scan = trainer._forking_scan
        trainer._forking_scan = lambda *a, **k: scans.append(1) or real_scan(*a, **k)
        trainer.train()
        assert not scans  # every step took the entropies its batch brought from sampling
        kept.append(sorted(trainer.kept_records))
        weights.append(sorted(trainer.weight_records))
    assert kept[0] == kept[1] and len(kept[0]) > 5
    assert all(math.isclose(a[2], b[2], rel_tol=1e-12) for a, b in zip(*weights))


def test_recorder_handles_masked_vocabulary():
    z = torch.randn(2, 7, generator=torch.Generator().manual_seed(3))
    z[0, :3] = -float("inf")
    rec = GenerationEntropy(temperature=0.5)
    rec(None, z)
    want = torch.distributions.Categorical(logits=z / 0.5).entropy()
    assert torch.allclose(rec.per_row([1, 1])[0], want[:1], atol=1e-6)
    assert torch.allclose(rec.steps[0], want, atol=1e-6)
