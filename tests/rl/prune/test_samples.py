"""`rl prune --sample N --reward R`: the policy's own correct chains, end to end with a real reward."""

from __future__ import annotations

import json

import pytest

from rl.cli import main
from rl.errors import UserError
from rl.prune.chains import Chain
from rl.prune.samples import SampleSettings, check_reward_columns, few_shot_prefix, policy_prompt, split_sample
from tests.kit import cli_error, write_jsonl

CONTINUATION = " Two plus three makes five.\nAnswer: 5\n"


def test_split_sample():
    assert split_sample("We add.\nAnswer: 5\nQuestion: next") == ("We add.", "5", "We add.\nAnswer: 5")
    assert split_sample("  We add.  \nAnswer:  5 ") == ("We add.", "5", "  We add.  \nAnswer:  5 ")
    assert split_sample("We add, the answer is 5.") is None  # no Answer: line
    assert split_sample("\nAnswer: 5") is None  # no chain before it
    assert split_sample("We add.\nAnswer:  \n") is None  # empty answer


def test_few_shot_prefix_comes_before_the_pruners_frame():
    settings = SampleSettings(samples=1, prefix=few_shot_prefix([Chain("e", " What is 1+1? ", "1 + 1 = 2.", "2")]))
    assert policy_prompt("What is 2+3?", settings) == (
        "Question: What is 1+1?\nReasoning:\n1 + 1 = 2.\nAnswer: 2\n\nQuestion: What is 2+3?\nReasoning:\n")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SampleSettings(samples=1, temperature=0)


def test_check_reward_columns():
    from rewards import get_reward_func

    rows = [Chain("r1", "q", "", "5"), Chain("r2", "q", "", "8", {"solution": "8"})]
    check_reward_columns(get_reward_func("math"), rows, "--data d.jsonl")  # the answer serves as `solution`
    with pytest.raises(UserError, match="--reward rlp: it scores with the trainer's policy"):
        check_reward_columns(get_reward_func("rlp"), rows, "--data d.jsonl")

    def needs_hint(completions, hint, **kwargs):
        return [1.0] * len(completions)

    with pytest.raises(UserError, match=r"--data d.jsonl row r1: --reward needs_hint needs column\(s\) hint"):
        check_reward_columns(needs_hint, rows, "--data d.jsonl")


@pytest.fixture(scope="module")
def parrot_dir(tmp_path_factory):
    """A tiny model trained to answer every "Question: ... Reasoning:" prompt with CONTINUATION, so
    that its samples are real generations with a known chain and answer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.prune.pruner import PROMPT_TEMPLATE
    from tests.tiny_models import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("parrot"), chat_template=False)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = []
    for q in ("What is 2+3?", "What is 4*2?", "What is 7-1?"):
        prompt = tok(PROMPT_TEMPLATE.format(question=q))["input_ids"]
        target = tok(CONTINUATION)["input_ids"] + [tok.eos_token_id]
        batch.append((torch.tensor([prompt + target]), len(prompt)))
    for _ in range(150):
        opt.zero_grad()
        for ids, plen in batch:
            labels = ids.clone()
            labels[:, :plen] = -100
            model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
    model.save_pretrained(path)
    return path



def test_prunes_only_the_policys_correct_chains(tmp_path, parrot_dir, capsys):
    # The parrot answers 5 to everything: right for the first question, wrong for the second.
    data = write_jsonl(tmp_path / "q.jsonl", [{"id": "add", "question": "What is 2+3?", "answer": "5"},
                                         {"id": "mul", "question": "What is 4*2?", "answer": "8"}])
    out = tmp_path / "out"
    argv = ["prune", "--data", str(data), "--model", str(parrot_dir), "--sample", "3", "--reward", "math",
            "--temperature", "0.05", "--max-new-tokens", "24", "--per-question", "2", "--keep", "0.5", "-o", str(out)]
    assert main(argv) == 0
    assert "policy samples: 3/6 correct (50.0%) over 2 questions; 1 chains pruned" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reward"], r["pruned"]) for r in records] == [
        ("add", 1.0, True), ("add", 1.0, False), ("add", 1.0, False),  # identical chains are kept once
        ("mul", 0.0, False), ("mul", 0.0, False), ("mul", 0.0, False)]
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["id"] for s in steps] == ["add#s0"]
    assert "".join(steps[0]["tokens"]) == CONTINUATION.split("\nAnswer:")[0].strip()
    sft = [json.loads(line) for line in (out / "sft" / "keep-0.50.jsonl").read_text().splitlines()]
    assert len(sft) == 1 and sft[0]["completion"].endswith("\nAnswer: 5")
    source = json.loads((out / "summary.json").read_text())["source"]
    assert source["kind"] == "policy samples" and source["reward"] == "math_reward"
    assert (source["drawn"], source["correct"], source["chains"]) == (6, 3, 1)


def test_sampling_refusals(tmp_path, parrot_dir, capsys):
    wrong = write_jsonl(tmp_path / "q.jsonl", [{"question": "What is 4*2?", "answer": "8"}])
    base = ["prune", "--data", str(wrong), "--model", str(parrot_dir), "-o", str(tmp_path / "out")]
    assert "--sample: needs --reward" in cli_error(capsys, base + ["--sample", "2"])
    assert "--reward: only used with --sample" in cli_error(capsys, base + ["--reward", "math"])
    assert "unknown reward 'maths'" in cli_error(capsys, base + ["--sample", "2", "--reward", "maths"])
    assert "--few-shot: only used with --sample" in cli_error(capsys, base + ["--few-shot", str(wrong)])
    sampling = base + ["--sample", "2", "--reward", "math"]
    assert "give a JSONL file of worked examples" in cli_error(capsys, sampling + ["--few-shot", "builtin:champ"])
    shots = write_jsonl(tmp_path / "shots.jsonl", [{"question": "What is 1+1?", "answer": "2"}])  # no worked chain
    assert "shots.jsonl:1: no 'reasoning' field" in cli_error(capsys, sampling + ["--few-shot", str(shots)])
    assert "lower --max-new-tokens" in cli_error(capsys, base + ["--sample", "2", "--reward", "math",
                                                             "--max-new-tokens", "4000"])
    err = cli_error(capsys, base + ["--sample", "2", "--reward", "math", "--temperature", "0.05",
                                 "--max-new-tokens", "24"], after_work=True)
    assert "none of 2 completions over 1 questions was correct (2 wrote an 'Answer:' line)" in err
    assert not (tmp_path / "out").exists()


def test_policy_other_than_the_pruner(tmp_path, parrot_dir, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "q.jsonl", [{"id": "add", "question": "What is 2+3?", "answer": "5"}])
    out = tmp_path / "out"
    assert main(["prune", "--data", str(data), "--model", str(tiny_model_dir), "--policy", str(parrot_dir),
                 "--sample", "2", "--reward", "math", "--temperature", "0.05", "--max-new-tokens", "24",
                 "--keep", "0.5", "-o", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"]["policy"] == str(parrot_dir) and summary["model"] == str(tiny_model_dir)
    assert summary["source"]["chains"] == 1 and summary["chains"] == 1


def test_reward_returning_the_wrong_count_is_refused(parrot_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.prune.samples import sample_chains

    policy = AutoModelForCausalLM.from_pretrained(parrot_dir).eval()
    tok = AutoTokenizer.from_pretrained(parrot_dir)

    def one_value(completions, **kwargs):
        return [1.0]

    with pytest.raises(UserError, match="returned 1 values for 2 completions"):
        sample_chains(policy, tok, [Chain("q", "What is 2+3?", "", "5")], one_value,
                      SampleSettings(samples=2, max_new_tokens=8))
