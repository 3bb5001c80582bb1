"""`rl prune` end to end on a tiny model, and its one-line refusals of bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from rl.cli import main
from tests.kit import cli_error, write_jsonl

ROWS = [
    {"question": "What is 2+3?", "reasoning": "We add 2 and 3, so 2 + 3 = 5.", "answer": "5"},
    {"id": "r2", "question": "What is 4*2?", "reasoning": "Four times two is 4 * 2 = 8.", "answer": "8"},
]



def test_end_to_end(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "chains.jsonl", ROWS)
    out = tmp_path / "out"
    argv = ["prune", "--data", str(data), "--model", str(tiny_model_dir), "--keep", "0.5,1.0,0.3", "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "paper: symbolic_math survives longest" in printed and "none: exact greedy deletion" in printed
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["id"] for s in steps] == [f"{data}:1", "r2"]
    for s in steps:
        assert sorted(s["order"]) == list(range(s["n"])) and len(s["categories"]) == s["n"] == len(s["tokens"])
    summary = json.loads((out / "summary.json").read_text())
    assert sum(c["tokens"] for c in summary["categories"].values()) == sum(s["n"] for s in steps)
    assert set(summary["answer_loglik"]) == {"1.0", "0.3", "0.5"}
    full = [json.loads(line) for line in (out / "sft" / "keep-1.00.jsonl").read_text().splitlines()]
    assert full[1] == {"prompt": "Question: What is 4*2?\nReasoning:\n",
                       "completion": "Four times two is 4 * 2 = 8.\nAnswer: 8"}
    half = [json.loads(line) for line in (out / "sft" / "keep-0.50.jsonl").read_text().splitlines()]
    assert len(half) == 2 and all(r["completion"].endswith(f"\nAnswer: {row['answer']}") for r, row in zip(half, ROWS))
    assert (out / "survival.png").stat().st_size > 0 and (out / "likelihood_curve.png").stat().st_size > 0
    # Rerunning into our own output replaces it; approx mode labels its approximations.
    assert main(argv + ["--mode", "approx", "--candidates", "4"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["mode"] == "approx" and all("approximation" in a for a in summary["approximations"])


def test_bad_input_gets_one_line(tmp_path, tiny_model_dir, capsys):
    base = ["--model", str(tiny_model_dir), "-o", str(tmp_path / "out")]
    no_answer = write_jsonl(tmp_path / "a.jsonl", [{"question": "q", "reasoning": "r"}])
    assert "a.jsonl:1: no 'answer' field" in cli_error(capsys, ["prune", "--data", str(no_answer)] + base)
    empty = write_jsonl(tmp_path / "b.jsonl", [ROWS[0], {"question": "q", "reasoning": "  ", "answer": "1"}])
    assert "b.jsonl:2: field 'reasoning' is empty" in cli_error(capsys, ["prune", "--data", str(empty)] + base)
    renamed = write_jsonl(tmp_path / "c.jsonl", [{"question": "q", "cot": "r s", "final": "1"}])
    err = cli_error(capsys, ["prune", "--data", str(renamed), "--reasoning-field", "cot"] + base)
    assert "no 'answer' field" in err and "--answer-field" in err
    assert not (tmp_path / "out").exists()


def test_chain_longer_than_context(tmp_path, tiny_model_dir, capsys):
    short = tmp_path / "short-model"
    shutil.copytree(tiny_model_dir, short)
    config = json.loads((short / "config.json").read_text())
    config["max_position_embeddings"] = 24
    (short / "config.json").write_text(json.dumps(config))
    data = write_jsonl(tmp_path / "chains.jsonl", ROWS)
    err = cli_error(capsys, ["prune", "--data", str(data), "--model", str(short), "-o", str(tmp_path / "out")])
    assert f"row {data}:1:" in err and "longer than the model's context of 24" in err


def test_foreign_output_dir_refused(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "chains.jsonl", ROWS)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    err = cli_error(capsys, ["prune", "--data", str(data), "--model", str(tiny_model_dir), "-o", str(out)])
    assert "--overwrite" in err and (out / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("keep", ["1.5", "x"])
def test_bad_keep(keep, capsys):
    err = cli_error(capsys, ["prune", "--data", "d.jsonl", "--model", "m", "-o", "o", "--keep", keep])
    assert "rl prune: argument --keep" in err


def test_max_chain_tokens_skips_long_rows(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "chains.jsonl", ROWS)
    err = cli_error(capsys, ["prune", "--data", str(data), "--model", str(tiny_model_dir), "-o", str(tmp_path / "o"),
                          "--max-chain-tokens", "3"])
    assert "every row's chain is longer" in err
