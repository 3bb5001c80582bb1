"""Completion-format RPT through TRL's real decode path, over the tokenizer matrix (issue 22, finding 2).

TRL 1.16 decodes a completion alone; with a SentencePiece-style decoder (`Strip(' ', 1, 0)`) that drops
the first token's leading space, and with `clean_up_tokenization_spaces` the space in " ," / " 's", so
a right guess paid 0. Here the completions come out of `EntropyGRPOTrainer._generate` (TRL's prompt
tokenization and decoding, our in-context text) for chosen token ids, and both completion rewards
score them: the true tokens earn 1, a wrong guess 0, a guess that stops inside a token 0 under Eq. 3.
"""

from __future__ import annotations

import pytest

from rewards.rpt import rpt_completion_exact_reward, rpt_completion_reward
from rl.data.boundaries import split_at_token

# (document, the continuation's text: a row is cut where it starts, with as many tokens as it has)
CASES = [
    ("Über café naïve: 東京 is big 😀 and ü.", " 東京 is"),  # byte-fallback tokens, one word split in a char
    ("It's a test , with spaces before punctuation . And the dog 's bone.", " , with"),  # clean-up eats " ,"
    ("It's a test , with spaces before punctuation . And the dog 's bone.", " 's bone"),
    ("The quick brown fox jumps over the lazy dog on the hill.", " over the lazy"),
]


def rpt_row(tok, doc: str, target: str) -> tuple[dict, list[int]]:
    """The RPT row `rl data rpt` makes for `target` in `doc`, and the true tokens of its continuation."""
    enc = tok(doc, return_offsets_mapping=True, add_special_tokens=False)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    start = doc.index(target)
    end = start + len(target)
    position = max(j for j in range(1, len(ids)) if offsets[j - 1][1] == start)
    count = max(j for j in range(len(ids)) if offsets[j][1] <= end) - position + 1
    cut = split_at_token(doc, offsets, position, count, 64)
    assert cut.continuation == target, (cut, tok.convert_ids_to_tokens(ids[position:position + count]))
    row = {"prompt": cut.context, "continuation": cut.continuation, "boundaries": cut.boundaries,
           "rpt_format": "completion"}
    return row, ids[position:position + count]


def suffix_ids(tok, prompt: str, text: str) -> list[int]:
    """Token ids `text` gets after `prompt` (tokenized together, as a model writing it would)."""
    head, full = tok(text=prompt)["input_ids"], tok(text=prompt + text)["input_ids"]
    assert full[:len(head)] == head
    return full[len(head):]


@pytest.fixture(scope="module")
def decode_trainer(matrix_model_dir, tmp_path_factory):
    """An EntropyGRPOTrainer on the kind's tiny model; `decode(prompts, completion_ids)` runs its real
    `_generate` (TRL's tokenization and decoding) with sampling replaced by the given token ids."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from rewards.rpt import rpt_completion_reward as reward
    from rl.train.config import EntropyGRPOConfig
    from rl.train.trainer import EntropyGRPOTrainer

    from tests.tiny_models import CHATML_TEMPLATE

    tok = AutoTokenizer.from_pretrained(matrix_model_dir)
    tok.chat_template = CHATML_TEMPLATE  # for chat prompts; plain-text prompts are tokenized as they are
    config = EntropyGRPOConfig(output_dir=str(tmp_path_factory.mktemp("decode")), per_device_train_batch_size=2,
                               num_generations=2, max_completion_length=16, bf16=False, use_cpu=True,
                               report_to=["none"], gradient_checkpointing=False, beta=0.0)
    data = Dataset.from_list([{"prompt": "a b", "continuation": " c", "boundaries": [2]}] * 2)
    trainer = EntropyGRPOTrainer(model=str(matrix_model_dir), reward_funcs=[reward], args=config,
                                 train_dataset=data, processing_class=tok)

    def decode(prompts: list, completion_ids: list[list[int]]) -> list:
        trainer._generate_single_turn = lambda *args, **kwargs: ([list(c) for c in completion_ids], None)
        out = trainer._generate(prompts)
        assert out[1] == completion_ids
        return out[3]

    kind = matrix_model_dir.name.split("-")[0]
    return kind, tok, decode


def scores(row: dict, completions: list[str]) -> tuple[list, list]:
    cols = {k: [row[k]] * len(completions) for k in ("continuation", "boundaries", "rpt_format")}
    return (rpt_completion_reward(prompts=[row["prompt"]] * len(completions), completions=completions, **cols),
            rpt_completion_exact_reward(prompts=[row["prompt"]] * len(completions), completions=completions, **cols))


@pytest.mark.parametrize("doc, target", CASES, ids=["tokyo", "space-comma", "space-apostrophe", "ascii"])
def test_true_tokens_earn_1_and_wrong_guesses_0_through_trls_decode(decode_trainer, doc, target):
    kind, tok, decode = decode_trainer
    row, true_ids = rpt_row(tok, doc, target)
    eos = tok.eos_token_id
    wrong = suffix_ids(tok, row["prompt"], "! is")  # first byte already wrong
    completions = decode([row["prompt"]] * 3, [true_ids, true_ids + [eos], wrong])
    assert completions[:2] == [target, target], (kind, completions)  # what the model wrote after the prompt
    lenient, exact = scores(row, completions)
    assert lenient == [1.0, 1.0, 0.0], (kind, completions)
    assert exact == [1.0, 1.0, 0.0], (kind, completions)


def test_a_guess_stopping_inside_a_character_or_token_earns_0_under_eq3(decode_trainer):
    kind, tok, decode = decode_trainer
    row, true_ids = rpt_row(tok, *CASES[0])  # " 東京 is"
    bounds = row["boundaries"]
    # every prefix of the true tokens: Eq. 3 pays exactly those whose bytes end on a true boundary
    prefixes = [true_ids[:k] for k in range(1, len(true_ids) + 1)]
    completions = decode([row["prompt"]] * len(prefixes), prefixes)
    lenient, exact = scores(row, completions)
    for k, (text, got_lenient, got_exact) in enumerate(zip(completions, lenient, exact), 1):
        whole = row["continuation"].startswith(text)
        size = len(text.encode("utf-8"))
        assert got_exact == (1.0 if whole and size in bounds else 0.0), (kind, k, text)
        assert got_lenient == (1.0 if size >= bounds[0] and row["continuation"].encode()[:bounds[0]]
                               == text.encode()[:bounds[0]] else 0.0), (kind, k, text)
    assert 0.0 in exact  # the byte-level and byte-fallback kinds split 東 over tokens: some prefix ends inside it
    # a guess that stops inside the first token of an ASCII word (its text less the last letter): 0 under both
    row, true_ids = rpt_row(tok, CASES[3][0], " the lazy")
    first = decode([row["prompt"]], [true_ids[:1]])[0]
    assert len(first) > 2 and len(first.encode()) == row["boundaries"][0]
    partial = decode([row["prompt"]], [suffix_ids(tok, row["prompt"], first[:-1])])
    assert partial == [first[:-1]] and scores(row, partial) == ([0.0], [0.0]), (kind, first)


def test_a_chat_completion_keeps_the_space_in_its_boxed_answer(decode_trainer):
    """Chat completions stay TRL's message content (decoded alone), without the clean-up that turned
    the boxed guess " ." into "." (reasoning-format `rpt` paid 0 for it with the cleanup kind)."""
    from rewards.rpt import rpt_reward

    kind, tok, decode = decode_trainer
    answer = "I think \\boxed{ .}"
    ids = tok(answer, add_special_tokens=False)["input_ids"]
    completions = decode([[{"role": "user", "content": "What comes after 'It is done'?"}]], [ids])
    assert completions == [[{"role": "assistant", "content": answer}]], kind
    assert rpt_reward(completions=completions, continuation=[" ."], boundaries=[[2]]) == [1.0]
