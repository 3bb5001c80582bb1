"""The offline token-function categoriser on hand-labelled examples."""

from __future__ import annotations

from rl.prune.categories import CATEGORIES, categorise_tokens, categorise_words

LABELLED = [
    ("So we have x_1 = 3.5, and 2x+1 = 8.", [
        ("So", "meta_discourse"), ("we", "meta_discourse"), ("have", "function_grammar"), ("x", "symbolic_math"),
        ("_", "symbolic_math"), ("1", "symbolic_math"), ("=", "symbolic_math"), ("3", "symbolic_math"),
        (".", "symbolic_math"), ("5", "symbolic_math"), (",", "function_grammar"), ("and", "function_grammar"),
        ("2", "symbolic_math"), ("x", "symbolic_math"), ("+", "symbolic_math"), ("1", "symbolic_math"),
        ("=", "symbolic_math"), ("8", "symbolic_math"), (".", "function_grammar")]),
    ("Therefore it is the sum of two primes, as Euler noted.", [
        ("Therefore", "meta_discourse"), ("it", "coreference"), ("is", "function_grammar"),
        ("the", "function_grammar"), ("sum", "verbal_math"), ("of", "function_grammar"), ("two", "verbal_math"),
        ("primes", "verbal_math"), (",", "function_grammar"), ("as", "function_grammar"),
        ("Euler", "entity_names"), ("noted", "other"), (".", "function_grammar")]),
    ("Alice paints a step-by-step \\frac{1}{2} of them; a = 4!", [
        ("Alice", "other"), ("paints", "other"), ("a", "function_grammar"), ("step", "meta_discourse"),
        ("-", "function_grammar"), ("by", "function_grammar"), ("-", "function_grammar"), ("step", "meta_discourse"),
        ("\\frac", "symbolic_math"), ("{", "symbolic_math"), ("1", "symbolic_math"), ("}", "symbolic_math"),
        ("{", "symbolic_math"), ("2", "symbolic_math"), ("}", "symbolic_math"), ("of", "function_grammar"),
        ("them", "coreference"), (";", "function_grammar"), ("a", "symbolic_math"), ("=", "symbolic_math"),
        ("4", "symbolic_math"), ("!", "symbolic_math")]),
]


def test_labelled_examples():
    for text, expected in LABELLED:
        assert categorise_words(text) == expected, text


def test_sentence_initial_capital_is_not_an_entity_but_undecided():
    # "Alice" opens the sentence: the rules can't tell a name from a capitalised word, so "other".
    assert categorise_words("Alice met Bob.")[0] == ("Alice", "other")
    assert categorise_words("Alice met Bob.")[2] == ("Bob", "entity_names")


def test_tokens_take_their_word_category_and_counts_sum_to_length(tokenizer):
    text = "Thus, we have x_1=y_1=z_1=1.\nFor a string ending with 1, we can append 1 and 2."
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    cats = categorise_tokens(text, enc["offset_mapping"])
    assert len(cats) == len(enc["input_ids"])
    assert set(cats) <= set(CATEGORIES)
    by_token = dict(zip([tokenizer.decode([t]) for t in enc["input_ids"]], cats))
    assert by_token["Thus"] == "meta_discourse" and by_token[" string"] == "other"
    assert by_token["\n"] == "other" and by_token[" append"] == "other" and by_token[" with"] == "function_grammar"
    counts = {c: cats.count(c) for c in CATEGORIES}
    assert sum(counts.values()) == len(enc["input_ids"])
