"""Split answers and documents into passages: on headings first, then paragraphs, within a token budget.

Passages are what the embedder reads (it truncates past its window) and what the LM prompt quotes, so
each must fit the budget while keeping whole paragraphs and sentences where it can.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .records import Passage

TokenCounter = Callable[[str], int]

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def word_count(text: str) -> int:
    """A tokenizer-free estimate used when no embedder tokenizer is at hand."""
    return len(text.split())


def split_text(text: str, title: str, budget: int, count: TokenCounter = word_count) -> list[Passage]:
    """Split plain text (no headings) into passages titled `title`."""
    pieces = _pack(_paragraphs(text), budget, count)
    return [Passage(title=title, text=p) for p in pieces]


def split_markdown(text: str, title: str, budget: int, count: TokenCounter = word_count) -> list[Passage]:
    """Split Markdown on its headings; each passage's title is the heading path ("Doc > Section")."""
    passages: list[Passage] = []
    for path, body in _sections(text):
        names = path if path and path[0] == title else [title, *path]
        passages.extend(split_text(body, " > ".join(names), budget, count))
    return passages


def markdown_title(text: str) -> str | None:
    """The first level-one heading, which names a Markdown document."""
    for line in text.splitlines():
        m = _HEADING.match(line)
        if m and len(m.group(1)) == 1:
            return m.group(2)
    return None


def _sections(text: str) -> list[tuple[list[str], str]]:
    """(heading path, body) for each run of text between headings; fenced code is left whole."""
    sections: list[tuple[list[str], str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        joined = "\n".join(body).strip()
        if joined:
            sections.append(([h for _, h in path], joined))
        body.clear()

    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            flush()
            level = len(m.group(1))
            path = [(lvl, h) for lvl, h in path if lvl < level] + [(level, m.group(2))]
        else:
            body.append(line)
    flush()
    return sections


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _pack(paragraphs: list[str], budget: int, count: TokenCounter) -> list[str]:
    """Greedily join paragraphs up to the budget; split any paragraph that alone exceeds it."""
    units: list[tuple[str, int]] = []  # (text, tokens): each paragraph is counted once
    for para in paragraphs:
        n = count(para)
        units.extend([(para, n)] if n <= budget else [(u, count(u)) for u in _split_long(para, budget, count)])
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for unit, n in units:
        if current and used + n > budget:
            pieces.append("\n\n".join(current))
            current, used = [], 0
        current.append(unit)
        used += n
    if current:
        pieces.append("\n\n".join(current))
    return pieces


def _split_long(para: str, budget: int, count: TokenCounter) -> list[str]:
    """Split by sentences, and a sentence that is still too long by words."""
    out: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(para):
        for piece in [sentence] if count(sentence) <= budget else _split_words(sentence, budget, count):
            candidate = f"{current} {piece}".strip()
            if current and count(candidate) > budget:
                out.append(current)
                current = piece
            else:
                current = candidate
    if current:
        out.append(current)
    return out


def _split_words(sentence: str, budget: int, count: TokenCounter) -> list[str]:
    words = sentence.split()
    # Words can be several tokens each: shrink the step until a chunk fits.
    step = max(1, budget)
    while step > 1 and count(" ".join(words[:step])) > budget:
        step = max(1, step * 3 // 4)
    return [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
