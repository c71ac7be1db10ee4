"""Grounding: how much of a reply the passages support, without a judge model.

A reply word counts as supported when it appears in the passages; numbers and names must match exactly,
which is where a small model drifts. Conversational filler ("happy to help") is not evidence either way."""

from __future__ import annotations

from retrieval.text import content_words

FILLER = frozenset(
    "hi hello thanks thank welcome happy glad help sorry assist assistance question questions let know anything "
    "else sure course great certainly yes no also just like need want feel free reach out contact us".split()
)


def grounding(reply: str, passages: list[str]) -> float:
    """Share of the reply's content words found in the passages (1.0 for a reply with none)."""
    claimed = [w for w in content_words(reply) if w not in FILLER]
    if not claimed:
        return 1.0
    support = {_stem(w) for w in content_words(" ".join(passages))}
    return sum(_stem(w) in support for w in claimed) / len(claimed)


def _stem(word: str) -> str:
    """Plural, -ed and -ing forms count as the same word (a crude stemmer is enough here)."""
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word
