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
class Source:
    """Where entries came from (a site, a file, a folder), remembered so that a sync can read it again."""

    name: str  # what `kb sync NAME` takes; entries.source holds it
    kind: str  # "web", "file", "folder" or "upload" (an uploaded copy: updated by uploading again)
    location: str  # the start URL, or the absolute path
    max_pages: int = 0  # a site's crawl limit (0 = the configured one)
    pages: int = 0  # entries read at the last sync
    added_at: str = ""
    synced_at: str = ""
    error: str = ""  # why the last sync failed ("" after a good one)

    def to_dict(self) -> dict:
        return asdict(self)


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
