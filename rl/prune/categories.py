"""Offline rule-based categoriser of reasoning tokens into the paper's six functional categories.

arXiv 2601.03066 groups chain tokens into symbolic math, function words/grammar, entity names,
meta-discourse, verbal math and coreference. Their labels come from an LLM; ours come from rules over
the words of the chain and their context, so they run offline and are reproducible. A token takes the
category of the word its first non-space character belongs to. Rules, first match wins:

1. symbolic_math: digits (and the `.`/`,` inside a number), operators and brackets, LaTeX commands,
   `$`, `_`, `^`, and single-letter variables (any letter but `a`/`A`/`I`, which are words unless an
   operator or `=` follows);
2. verbal_math: number words (one, twenty, hundred, half, twice, ...);
3. coreference: pronouns and demonstratives that refer back (it, they, them, this, these, ...);
4. meta_discourse: discourse markers and the reasoner talking about its own steps (so, thus, first,
   let, we, note, check, ...);
5. function_grammar: stop words (articles, prepositions, auxiliaries, conjunctions) and prose
   punctuation;
6. verbal_math: mathematical vocabulary (sum, prime, divisible, equation, ...);
7. entity_names: a capitalised word that is not at the start of a sentence;
8. other: anything else (content words, whitespace-only tokens): no guess.
"""

from __future__ import annotations

import re


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


CATEGORIES = ("symbolic_math", "verbal_math", "coreference", "meta_discourse", "function_grammar",
              "entity_names", "other")

NUMBER_WORDS = _words("""zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million
billion half halves twice thrice third thirds quarter quarters dozen double triple""")
PRONOUNS = _words("""it its itself they them their theirs themselves this these those he him his himself she her hers
herself former latter which whose whom who each other""") - {"each", "other"}
DISCOURSE = _words("""so thus therefore hence first firstly second secondly next then now finally lastly note notice
let lets we us our ours i me my consider recall since because wait however similarly clearly obviously hmm okay ok
alternatively also indeed actually conclude conclusion check verify suppose assume want need know see get find try
step steps case cases answer result means thing things way hence altogether overall""")
STOP_WORDS = _words("""a an the of to in on at by for from with without into onto over under about between among
through during before after above below up down out off and or but nor if than as is are was were be been being
am do does did done has have had having will would shall should can could may might must not no yes that what
when where while whether also just only very too such some any all both either neither each every other another
same own more most less least much many few there here how why""")
MATH_WORDS = _words("""sum sums product products equal equals equality multiply multiplied multiplying times plus minus
divide divided dividing divisible divisor divisors quotient remainder remainders prime primes factor factors
factorial integer integers number numbers digit digits even odd square squares squared cube cubes cubed root roots
power powers exponent equation equations inequality function functions polynomial coefficient coefficients
variable variables solution solve solving value values total difference ratio fraction fractions mod modulo
count counting counts combinations permutations permutation sequence sequences term terms maximum minimum max min
greater smaller larger less least positive negative real rational irrational odd parity multiple multiples
congruent triangle circle area length angle sides side average mean probability set sets subset element
elements recurrence formula""")
SYMBOL_CHARS = set("+-*/=<>^_()[]{}|!%$\\~≤≥≠·×÷±∑∏∫√∞≡→⇒")
_WORD = re.compile(r"\\[A-Za-z]+|\d+|[A-Za-z]+(?:'[A-Za-z]+)?|\S")


def _word_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, category) for every word/symbol of `text` (rules in the module doc)."""
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]
    out = []
    for i, (start, end, word) in enumerate(words):
        prev = words[i - 1][2] if i else ""
        nxt = words[i + 1][2] if i + 1 < len(words) else ""
        out.append((start, end, _categorise_word(word, prev, nxt, text, start, end)))
    return out


def _sentence_start(text: str, start: int) -> bool:
    before = text[:start].rstrip()
    return not before or before[-1] in ".!?:\n" or text[:start].endswith("\n")


def _categorise_word(word: str, prev: str, nxt: str, text: str, start: int, end: int) -> str:
    low = word.lower()
    if word[0].isdigit() or word.startswith("\\") or word in SYMBOL_CHARS - {"-", "!"}:
        return "symbolic_math"
    if word in ".,":  # a decimal point or thousands separator sits between digits
        between = start > 0 and end < len(text) and text[start - 1].isdigit() and text[end].isdigit()
        return "symbolic_math" if between else "function_grammar"
    if word == "-":  # a hyphen inside a word ("step-by-step") is grammar, otherwise minus
        hyphen = start > 0 and end < len(text) and text[start - 1].isalpha() and text[end].isalpha() \
            and len(prev) > 1 and len(nxt) > 1
        return "function_grammar" if hyphen else "symbolic_math"
    if word == "!":
        return "symbolic_math" if start > 0 and (text[start - 1].isalnum() or text[start - 1] == ")") else \
            "function_grammar"
    if len(word) == 1 and word.isalpha():
        if word not in "aAI":
            return "symbolic_math"
        return "symbolic_math" if nxt in SYMBOL_CHARS else ("meta_discourse" if word == "I" else "function_grammar")
    if not word[0].isalpha():
        return "function_grammar" if word in ";:?\"'`" else "other"
    if low in NUMBER_WORDS:
        return "verbal_math"
    if low in PRONOUNS:
        return "coreference"
    if low in DISCOURSE:
        return "meta_discourse"
    if low in STOP_WORDS:
        return "function_grammar"
    if low in MATH_WORDS:
        return "verbal_math"
    if word[0].isupper() and not _sentence_start(text, start):
        return "entity_names"
    return "other"


def categorise_words(text: str) -> list[tuple[str, str]]:
    """(word, category) for each word of `text` (for inspection and tests)."""
    return [(text[s:e], c) for s, e, c in _word_spans(text)]


def categorise_tokens(text: str, offsets: list[tuple[int, int]]) -> list[str]:
    """One category per token, from the tokens' character `offsets` into `text`."""
    spans = _word_spans(text)
    out = []
    j = 0
    for start, end in offsets:
        first = start
        while first < end and text[first].isspace():
            first += 1
        if first >= end:  # whitespace-only token (newlines, indentation)
            out.append("other")
            continue
        while j < len(spans) and spans[j][1] <= first:
            j += 1
        if j < len(spans) and spans[j][0] <= first < spans[j][1]:
            out.append(spans[j][2])
        else:
            j = 0  # offsets out of order (should not happen): search again from the start
            match = [c for s, e, c in spans if s <= first < e]
            out.append(match[0] if match else "other")
    return out
