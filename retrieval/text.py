"""Word-level helpers shared by lexical search and by answer grounding."""

from __future__ import annotations

import re

STOPWORDS = frozenset(
    "a an and are as at be but by can could did do does for from had has have how i if in is it its me my "
    "of on or our please so than that the their them then there these they this to was we were what when "
    "where which who why will with would you your".split()
)

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    """Lower-cased words that carry meaning: no stopwords, no single letters."""
    return [w for w in words(text) if w not in STOPWORDS and len(w) > 1]
