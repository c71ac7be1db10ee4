"""Citations: `[1]`, `[2]` in a reply map to the numbered passages; numbers with no passage are removed."""

from __future__ import annotations

import re

from .prompt import Source

_CITATION = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")


def resolve_citations(text: str, sources: list[Source]) -> tuple[str, list[Source]]:
    """(text with only real citations, the cited sources in order of first citation)."""
    by_number = {s.number: s for s in sources}
    cited: dict[int, Source] = {}

    def keep(match: re.Match) -> str:
        numbers = [int(n) for n in re.findall(r"\d+", match.group(1)) if int(n) in by_number]
        for n in numbers:
            cited.setdefault(n, by_number[n])
        return "".join(f" [{n}]" for n in dict.fromkeys(numbers))

    cleaned = _CITATION.sub(keep, text)
    cleaned = re.sub(r" +([.,;:!?])", r"\1", cleaned).strip()
    return cleaned, list(cited.values())


def renumber_citations(text: str, numbers: dict[int, int]) -> str:
    """Rewrite [old] as [new] (a reply moved onto a re-numbered passage list); unknown numbers are dropped."""

    def swap(match: re.Match) -> str:
        kept = [numbers[int(n)] for n in re.findall(r"\d+", match.group(1)) if int(n) in numbers]
        return "".join(f" [{n}]" for n in dict.fromkeys(kept))

    return re.sub(r" +([.,;:!?])", r"\1", _CITATION.sub(swap, text)).strip()
