"""Every door that samples and scores completion-format RPT scores the text a completion adds after
its prompt (issue 22 finding 2): the signal check, and a real `rl train` run, with a SentencePiece-style
tiny model (tests/tokenizer_matrix.py) that always writes the row's true continuation
(tests/chain_model.py). Decoded alone (TRL's way) its completion lost its leading space and paid 0."""

from __future__ import annotations

import json

import pytest

from rl.data.boundaries import split_at_token
from tests.chain_model import build_chain_model
from tests.kit import tiny_recipe, write_jsonl, write_yaml
from tests.tokenizer_matrix import build_matrix_model, matrix_tokenizer

# (document, where the row is cut, the continuation the chain model writes)
ROWS = {
    "sentencepiece": ("Über café naïve: 東京 is big 😀 and ü.", " 東京 is"),  # byte-fallback 東京, Strip decoder
    "cleanup": ("It's a test , with spaces before punctuation .", " ."),  # clean-up turns " ." into "."
}


def rpt_row(tok, doc: str, target: str) -> tuple[dict, list[int]]:
    """The completion-format RPT row for `target` in `doc` (as `rl data rpt` cuts it) and its true tokens."""
    enc = tok(doc, return_offsets_mapping=True, add_special_tokens=False)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    start, end = doc.index(target), doc.index(target) + len(target)
    position = max(j for j in range(1, len(ids)) if offsets[j - 1][1] == start)
    count = max(j for j in range(len(ids)) if offsets[j][1] <= end) - position + 1
    cut = split_at_token(doc, offsets, position, count, 64)
    assert cut.continuation == target
    return ({"prompt": cut.context, "continuation": cut.continuation, "boundaries": cut.boundaries,
             "rpt_format": "completion", "doc_id": "d0"}, ids[position:position + count])


@pytest.fixture(scope="module", params=sorted(ROWS))
def chain_model(request, tmp_path_factory, matrix_root):
    """(kind, model dir, row): a tiny model of the kind that writes the row's continuation, then EOS
    (the prompt's last token is not one of the continuation's)."""
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"chain-{kind}")
    tok = matrix_tokenizer(kind, matrix_root)
    row, true_ids = rpt_row(tok, *ROWS[kind])
    src = build_matrix_model(tmp / "src", kind, matrix_root)
    return kind, build_chain_model(src, tmp / "chain", true_ids), row


def test_signal_check_scores_the_text_the_completion_adds(chain_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewards.rpt import rpt_completion_exact_reward, rpt_completion_reward
    from rl.train.signal_check import run_signal_check, sample_completions

    kind, path, row = chain_model
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    completions, ids = sample_completions(model, tok, [row["prompt"]], 2, max_new_tokens=12, temperature=1.0)
    assert completions == [row["continuation"]] * 2, kind  # decoded alone: "東京 is" / "."
    assert all(r[-1] == tok.eos_token_id for r in ids)
    report = run_signal_check(model, tok, [row, row], [rpt_completion_reward, rpt_completion_exact_reward], None,
                              generations=2, max_new_tokens=12, prompts=2)
    assert report.reward_means == {"rpt_completion_reward": 1.0, "rpt_completion_exact_reward": 1.0}, kind
    assert report.mean_reward == 2.0 and report.example == row["continuation"]


@pytest.mark.slow
@pytest.mark.parametrize("chain_model", ["sentencepiece"], indirect=True)
def test_rl_train_logs_reward_1_when_every_sample_is_right(chain_model, tmp_path):
    """The issue's "done when": a real `rl train` run on a SentencePiece-style model whose every sample
    is the true continuation logs TRL's `reward` metric 1.0 at every step (it logged 0.0 before)."""
    from rl.cli import main as rl_main

    _, path, row = chain_model
    data = write_jsonl(tmp_path / "rows.jsonl", [{**row, "doc_id": f"d{i}"} for i in range(4)])
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(
        path, tmp_path / "run", dataset_path=str(data), reward_funcs=["rpt_completion", "rpt_completion_exact"],
        reward_weights=[0.5, 0.5], max_completion_length=12, save_steps=2, env={"WANDB_MODE": "disabled"}))
    assert rl_main(["train", "--config", str(recipe)]) == 0
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    logs = [e for e in state["log_history"] if "reward" in e]
    assert [e["step"] for e in logs] == [1, 2]
    for e in logs:
        assert e["reward"] == 1.0, e
        assert e["rewards/rpt_completion_reward/mean"] == 1.0 and e["rewards/rpt_completion_exact_reward/mean"] == 1.0
