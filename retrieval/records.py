"""The knowledge base's records: what ingestion produces and what search returns."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


class IngestError(ValueError):
    """A file refused whole; the message is one line naming the file and the row or line."""


@dataclass
class Passage:
    """A piece of an answer or document small enough for the embedder and for an LM prompt."""

    title: str
    text: str


@dataclass
class Entry:
    """One knowledge-base entry: an FAQ item (with question variants) or a whole document."""

    id: str
    title: str
    answer: str
    questions: list[str] = field(default_factory=list)
    category: str = ""
    url: str = ""
    source: str = ""
    kind: str = "faq"  # "faq" or "document"
    passages: list[Passage] = field(default_factory=list)

    def content_hash(self) -> str:
        """Digest of everything that is indexed, so an unchanged entry is skipped on re-ingest."""
        payload = asdict(self)
        payload.pop("source")
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class SearchHit:
    """An entry found for a query, with the evidence that ranked it."""

    entry_id: str
    title: str
    score: float  # fused ranking score (comparable within one query only)
    confidence: float  # calibrated probability that this entry answers the query
    dense: float  # best cosine similarity of the entry's variants/passages (0 when not retrieved)
    margin: float  # dense minus the best dense of any other entry: how clearly this one stands out
    lexical_rank: int | None  # rank in the BM25 list, 1-based, None when not retrieved
    matched: str  # the variant or passage that matched best
    category: str = ""
    url: str = ""

    def to_dict(self) -> dict:
        return asdict(self)
