"""`rl eval math` (rl/eval/math_eval.py): avg@k and unbiased pass@k over problems, CIs, --compare, bad input."""

from __future__ import annotations

import itertools
import json
import math
from types import SimpleNamespace

import pytest

from rl.errors import UserError
from rl.eval import math_eval
from rl.eval.math_eval import MathEvalSettings, Problem, compare_math, evaluate_math, load_problems
from rl.eval.next_token import pass_at_k

pytest.importorskip("math_verify")

ROWS = [{"problem": "What is 2 + 2?", "solution": "4"}, {"problem": "Half of one?", "solution": "\\frac{1}{2}"},
        {"problem": "Three times three?", "solution": "9"}]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _cli(argv, monkeypatch):
    from rl.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return main(argv)


def _one_error(capsys) -> str:
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln.lower()]  # not progress bars
    assert len(errors) == 1 and errors[0].startswith("error: "), errors
    return errors[0]


@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_pass_at_k_equals_the_brute_force_count_over_subsets(k):
    for c in range(k + 1):
        outcomes = [1] * c + [0] * (k - c)
        for j in range(1, k + 1):
            subsets = list(itertools.combinations(range(k), j))
            hit = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
            assert math.isclose(pass_at_k(k, c, j), hit, rel_tol=0, abs_tol=1e-12), (k, c, j)


def _fake_generate(texts_per_problem, max_new_tokens=8):
    def generate(model, tokenizer, problems, settings, progress):
        out = []
        for texts in texts_per_problem[: len(problems)]:
            out.append([SimpleNamespace(text=t, ids=[1] * (max_new_tokens if t == "cut" else 3),
                                        stop=None if t == "cut" else 0) for t in texts])
        progress(len(problems))
        return out
    return generate


def test_scores_come_from_the_math_reward_and_average_over_problems(monkeypatch):
    texts = [["\\boxed{4}", "Answer: 4", "\\boxed{5}", "cut"],  # 2 of 4
             ["\\boxed{0.5}", "no answer", "nothing", "cut"],    # 1 of 4: 0.5 == 1/2 for math-verify
             ["\\boxed{10}", "\\boxed{8}", "Answer: 1", "x"]]    # 0 of 4
    monkeypatch.setattr(math_eval, "_generate", _fake_generate(texts))
    settings = MathEvalSettings(samples=4, pass_k=(1, 2, 4), max_new_tokens=8)
    problems = [Problem(str(i), r["problem"], r["solution"]) for i, r in enumerate(ROWS)]
    result = evaluate_math("m", "d", settings, problems=problems, model=object(), tokenizer=object(), progress=False)
    rows = result["per_problem"]
    assert [r["correct"] for r in rows] == [2, 1, 0]
    assert rows[0]["pass@2"] == pytest.approx(1 - 1 / 6) and rows[1]["pass@4"] == 1.0 and rows[2]["pass@4"] == 0.0
    assert rows[0]["pass@1"] == rows[0]["avg"] == 0.5
    metrics = result["metrics"]
    assert metrics["avg"]["mean"] == pytest.approx((0.5 + 0.25 + 0.0) / 3)
    assert metrics["truncated"]["mean"] == pytest.approx(2 / 12)
    low, high = metrics["avg"]["ci95"]
    assert 0.0 <= low <= metrics["avg"]["mean"] <= high <= 0.5
    # --compare: the paired difference over the same problems
    monkeypatch.setattr(math_eval, "_generate", _fake_generate([["\\boxed{4}"] * 4, ["x"] * 4, ["x"] * 4]))
    other = evaluate_math("o", "d", settings, problems=problems, model=object(), tokenizer=object(), progress=False)
    diff = compare_math(result, other, settings)
    assert diff["avg"]["diff"] == pytest.approx(((0.5 - 1) + 0.25 + 0) / 3) and diff["avg"]["problems"] == 3
    text = math_eval.format_math(result, other, diff)
    assert "avg@4 %" in text and "model - compare" in text


def test_problem_column_gets_the_dapo_instruction_and_bad_gold_is_skipped(tmp_path):
    from rewards.math import DAPO_MATH_PROMPT

    data = _jsonl(tmp_path / "p.jsonl", ROWS + [{"problem": "Unparseable?", "solution": "\\boxed{"}])
    problems, _ = load_problems(str(data), MathEvalSettings(samples=2))
    assert problems[0].prompt[0]["content"].startswith(DAPO_MATH_PROMPT.split("{problem}")[0])
    kept, skipped = math_eval.gradable(problems)
    assert len(kept) == 3 and skipped == ["3"]
    prompts = _jsonl(tmp_path / "q.jsonl", [{"prompt": "Say 4.", "solution": "4", "id": "a"}])
    (only,), _ = load_problems(str(prompts), MathEvalSettings(samples=2, limit=1))
    assert only.prompt == "Say 4." and only.id == "a"


def test_builtin_champ_is_a_held_out_set_offline():
    pytest.importorskip("champ_dataset")
    problems, _ = load_problems("builtin:champ", MathEvalSettings(samples=1, temperature=0))
    assert len(problems) == 270 and problems[0].id == "champ/P_Combinatorics_1" and problems[0].solution == "239"
    kept, skipped = math_eval.gradable(problems[:20])
    assert kept and len(kept) + len(skipped) == 20


def test_cli_on_a_tiny_model_writes_json_and_compares(tiny_model_dir, tiny_model_dir_plain, tmp_path, monkeypatch,
                                                      capsys):
    data = _jsonl(tmp_path / "p.jsonl", ROWS)
    out = tmp_path / "res" / "math.json"
    argv = ["eval", "math", "--model", str(tiny_model_dir), "--data", str(data), "--samples", "3",
            "--max-new-tokens", "6", "--batch-size", "2", "--pass-k", "1,3", "--device", "cpu", "--output", str(out)]
    assert _cli(argv + ["--compare", str(tiny_model_dir_plain)], monkeypatch) == 0
    payload = json.loads(out.read_text())
    assert payload["written_by"] == "rl eval math" and payload["model"]["problems"] == 3
    assert set(payload["model"]["metrics"]) == {"avg", "pass@1", "pass@3", "mean_length", "truncated"}
    assert all(len(r["answers"]) == 3 for r in payload["model"]["per_problem"])
    # same random weights behind both fixtures and the same seed: the paired difference is exactly 0
    assert payload["difference"]["avg"]["diff"] == 0.0 and payload["difference"]["mean_length"]["diff"] == 0.0
    assert "avg@3 %" in capsys.readouterr().out
    # its own previous output is replaced; a file it did not write is not, without --overwrite
    assert _cli(argv, monkeypatch) == 0
    capsys.readouterr()
    foreign = tmp_path / "notes.json"
    foreign.write_text("{}")
    assert _cli(argv[:-1] + [str(foreign)], monkeypatch) == 2
    assert "--output" in _one_error(capsys) and foreign.read_text() == "{}"


@pytest.mark.parametrize("extra, rows, expect", [
    ([], [{"problem": "p", "answer": "1"}], "no `solution` column"),
    (["--samples", "0"], ROWS, "--samples"),
    (["--samples", "2", "--pass-k", "3"], ROWS, "--pass-k"),
    (["--samples", "2", "--temperature", "0"], ROWS, "--temperature"),
    ([], [{"text": "p", "solution": "1"}], "no `prompt` column or `problem` column"),
    ([], [{"problem": "p", "solution": ""}], "row 0: `solution` is empty"),
])
def test_bad_input_is_one_line_before_the_model_loads(extra, rows, expect, tiny_model_dir, tmp_path, monkeypatch,
                                                      capsys):
    data = _jsonl(tmp_path / "p.jsonl", rows)
    monkeypatch.setattr(math_eval, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert _cli(["eval", "math", "--model", str(tiny_model_dir), "--data", str(data), *extra], monkeypatch) == 2
    assert expect in _one_error(capsys)


def test_unknown_file_and_builtin_are_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    for data, expect in ((tmp_path / "nope.jsonl", "no such file"), ("builtin:aime", "unknown builtin")):
        with pytest.raises(UserError, match=expect):
            load_problems(str(data), MathEvalSettings())
    assert _cli(["eval", "math", "--model", str(tiny_model_dir), "--data", str(tmp_path / "nope.jsonl")],
                monkeypatch) == 2
    assert "--data" in _one_error(capsys)
