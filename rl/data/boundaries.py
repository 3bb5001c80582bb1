"""Cut a tokenized document into RPT context / continuation, with token byte boundaries.

Pure text logic (no torch, no tokenizer calls): it works from the document text and the
character offsets a Hugging Face fast tokenizer returns with
`tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)`.

Terms. `offsets[j] = (start_j, end_j)` is the character span of token j. The *cut* before token
j is where the text is split between token j-1 and token j:

    cut(0) = 0,   cut(j) = end_{j-1}   (j >= 1)

so any characters between two tokens' spans (a leading space that a tokenizer trimmed out of a
token's offsets, whitespace a WordPiece tokenizer drops) belong to the *following* token. With
byte-level BPE (GPT-2, Qwen, Llama 3) and Metaspace/SentencePiece tokenizers (`▁word`) the spans
already include the leading space, and `cut(j) == start_j`. Either way a context never ends in
the space that starts the next word: the space is part of the token to predict, as in RPT.

Split characters. Byte-level BPE and SentencePiece byte fallback can split one multi-byte
character over several tokens ("ü" → `Ã` + `¼` in GPT-2). HF then gives every piece the span of
the whole character, so the pieces overlap: `start_{j+1} < end_j`. We use exactly that test:

    token j ends on a whole character  <=>  j is the last token, or start_{j+1} >= end_j

A token that ends inside a character yields no boundary (no whole-character text ends there),
and a target token that starts inside a character (`start_j < end_{j-1}`) makes the position
unusable. (The only false alarm seen: a Metaspace tokenizer's prepended `▁` at the very start of
a document overlaps the first word; it just costs position 1 of each document.)

Byte runs over several characters. A Unigram tokenizer with byte fallback gives every byte token
of an unknown stretch the span of the whole stretch ("14" → `<0x31>` `<0x34>`, both (4, 6);
"東京" → six tokens, all the span of both characters), so the overlap test alone would find no
token end inside it. A run of k tokens sharing one span (s, e), with no neighbour overlapping it,
whose text has exactly k UTF-8 bytes is one byte per token: its i-th token ends at byte i + 1 of
the span, on a whole character when those bytes are whole characters (`token_char_end`).

Invariants of `split_at_token` (tested with GPT-2 and SentencePiece-style tokenizers):
- `context + continuation == text[context_start:continuation_end]`;
- `boundaries` are strictly increasing positive UTF-8 byte offsets into `continuation`, the last
  one equal to its byte length (the continuation ends on the last boundary, a whole character);
- for every boundary k there is a j such that `continuation.encode()[:k]` is the text of the
  first j target tokens (for a lossless tokenizer: exactly the concatenated bytes of their ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CutResult", "ends_on_whole_char", "split_at_token", "token_byte_boundaries", "token_char_end"]

Offsets = Sequence[Sequence[int]]


def _utf8_len(text: str) -> int:
    """Byte length of `text` in UTF-8 (lone surrogates counted as 3 bytes, never an error)."""
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class CutResult:
    """One RPT sample cut from a document.

    `context`: document text the policy reads (ends exactly where the target token begins).
    `continuation`: ground-truth text that follows, ending on a whole character.
    `boundaries`: cumulative UTF-8 byte offsets into `continuation` where target tokens end.
    `context_start`, `continuation_start`, `continuation_end`: character indices into the text.
    """

    context: str
    continuation: str
    boundaries: list[int]
    context_start: int
    continuation_start: int
    continuation_end: int


def ends_on_whole_char(offsets: Offsets, j: int) -> bool:
    """True when token j's text ends on a whole character: it is the last token, or the next
    token starts at or after its end (split-character pieces overlap; see the module docstring)."""
    return j + 1 >= len(offsets) or offsets[j + 1][0] >= offsets[j][1]


def _byte_run_end(text: str, offsets: Offsets, j: int) -> int | None | bool:
    """For token j inside a run of one-byte tokens sharing one span (module doc): the character
    index where it ends, or None when it ends inside a character. False when j is in no such run."""
    n = len(offsets)
    span = (int(offsets[j][0]), int(offsets[j][1]))
    first = last = j
    while first > 0 and (int(offsets[first - 1][0]), int(offsets[first - 1][1])) == span:
        first -= 1
    while last + 1 < n and (int(offsets[last + 1][0]), int(offsets[last + 1][1])) == span:
        last += 1
    start, end = span
    if last == first or (first > 0 and int(offsets[first - 1][1]) > start) or (
            last + 1 < n and int(offsets[last + 1][0]) < end):
        return False
    data = text[start:end].encode("utf-8", "surrogatepass")
    if len(data) != last - first + 1:
        return False
    try:
        return start + len(data[: j - first + 1].decode("utf-8", "surrogatepass"))
    except UnicodeDecodeError:
        return None


def token_char_end(text: str, offsets: Offsets, j: int) -> int | None:
    """Character index where token j's text ends when that is on a whole character, else None
    (`ends_on_whole_char`, refined inside runs of one-byte tokens sharing a span: module doc)."""
    in_run = _byte_run_end(text, offsets, j)
    if in_run is not False:
        return in_run
    return int(offsets[j][1]) if ends_on_whole_char(offsets, j) else None


def _cut_before(text: str, offsets: Offsets, j: int) -> int:
    """Character index where the text splits before token j (gaps go to token j)."""
    if j == 0:
        return 0
    end = token_char_end(text, offsets, j - 1)
    return int(offsets[j - 1][1]) if end is None else end


def _token_ends(text: str, offsets: Offsets, first: int, count: int, start_char: int) -> list[tuple[int, int]]:
    """(char_end, byte_offset) for each of tokens first..first+count-1 that ends on a whole
    character strictly after the previous kept end; byte offsets are relative to `start_char`."""
    ends: list[tuple[int, int]] = []
    char_pos, byte_pos = start_char, 0
    for j in range(first, min(first + count, len(offsets))):
        end = token_char_end(text, offsets, j)
        if end is None or end <= char_pos or end > len(text):
            continue  # ends inside a character, empty/backwards span, or past the text
        byte_pos += _utf8_len(text[char_pos:end])
        char_pos = end
        ends.append((end, byte_pos))
    return ends


def token_byte_boundaries(text: str, offsets: Offsets, first: int, count: int) -> list[int]:
    """Cumulative UTF-8 byte offsets, measured from the cut before token `first`, at which tokens
    `first .. first+count-1` end on whole characters (strictly increasing, positive, deduplicated).

    Tokens that end inside a character, or add no characters, contribute no boundary.
    """
    if not 0 <= first <= len(offsets):
        raise ValueError(f"first={first} is outside 0..{len(offsets)}")
    return [b for _, b in _token_ends(text, offsets, first, count, _cut_before(text, offsets, first))]


def split_at_token(
    text: str,
    offsets: Offsets,
    position: int,
    num_continuation_tokens: int,
    max_context_tokens: int,
) -> CutResult | None:
    """Cut `text` before token `position` (the context has `position` tokens; the target starts there).

    - context: from the start of token `max(0, position - max_context_tokens)` (from the start of
      the text when that is token 0) to the cut before token `position`;
    - continuation: the next `num_continuation_tokens` tokens' text, cut back to the end of the
      last of them that ends on a whole character;
    - boundaries: byte offsets into the continuation where those tokens end (whole characters only).

    Returns None when the position is unusable: the target token starts inside a character (its
    bytes continue a character begun in the context), or no target token ends on a whole
    character. Raises ValueError for arguments that can't come from a tokenizer (a bug upstream).
    """
    n = len(offsets)
    if not 0 <= position < n:
        raise ValueError(f"position={position} is outside the {n} tokens of the document")
    if num_continuation_tokens < 1 or max_context_tokens < 0:
        raise ValueError(
            f"need num_continuation_tokens >= 1 and max_context_tokens >= 0, "
            f"got {num_continuation_tokens} and {max_context_tokens}"
        )
    if position > 0 and token_char_end(text, offsets, position - 1) is None:
        return None  # the target token starts inside a character
    continuation_start = _cut_before(text, offsets, position)
    if continuation_start > len(text):
        raise ValueError(f"offsets point past the end of the text ({continuation_start} > {len(text)})")
    ends = _token_ends(text, offsets, position, num_continuation_tokens, continuation_start)
    if not ends:
        return None
    first_context = max(0, position - max_context_tokens)
    context_start = 0 if first_context == 0 else min(int(offsets[first_context][0]), continuation_start)
    continuation_end = ends[-1][0]
    return CutResult(
        context=text[context_start:continuation_start],
        continuation=text[continuation_start:continuation_end],
        boundaries=[b for _, b in ends],
        context_start=context_start,
        continuation_start=continuation_start,
        continuation_end=continuation_end,
    )
