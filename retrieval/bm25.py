"""BM25 over FTS5's own index, scored in numpy: the scores of FTS5's bm25() (its IDF, k1 = 1.2, b = 0.75 and
column weights, as in SQLite's fts5_aux.c), without its cost per matching row.

FTS5 finds the rows a query's terms match quickly but calls bm25() once per row: on a large knowledge base
a common term matches thousands of units (8.4 ms for about 19,000 rows at 100,000 units, against 0.5 ms to
find them). Here each row's length is read once per index version (FTS5's docsize table), a term's postings
(rows and weighted counts, from FTS5's instance vocabulary) when a query first needs it, and a query adds
up a few cached arrays.

Query words are turned into FTS5 terms by FTS5 itself (an in-memory table with the same tokenizer), so a
word matches exactly the rows it matches in FTS5. A word that FTS5 splits into several tokens ("wi_fi") is a
phrase there; `QueryTerms.terms` returns None for such a query and the caller asks FTS5.

On PostgreSQL the store keeps the same postings in tables of its own, made by the same tokenizer
(`Tokenizer.postings`), so that both engines score alike; there a phrase's words are searched as separate
terms (no positions are kept).
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable

import numpy as np

K1, B = 1.2, 0.75

Fetch = Callable[[str], tuple[np.ndarray, np.ndarray]]  # term -> (rowids ascending, weighted counts)


class Bm25Index:
    """One index version: row lengths, and postings cached term by term."""

    def __init__(self, rowids: np.ndarray, lengths: np.ndarray, fetch: Fetch):
        self.rows = len(rowids)
        self.average_length = float(lengths.sum()) / self.rows if self.rows else 1.0
        self.length = np.zeros(int(rowids.max(initial=0)) + 1, dtype=np.float64)
        self.length[rowids] = lengths
        self._fetch = fetch
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if term not in self._postings:
                docs, freq = self._fetch(term)
                known = docs < len(self.length)  # rows written after this version's lengths were read
                self._postings[term] = (docs[known], freq[known])
            return self._postings[term]

    def search(self, terms: list[str], limit: int) -> list[tuple[int, float]]:
        """(rowid, score) best first, for rows matching any of `terms` (an OR query; a repeated term
        counts twice, as in FTS5)."""
        parts = [p for p in map(self.postings, terms) if len(p[0])]
        if not parts:
            return []
        scores = []
        for docs, freq in parts:
            idf = math.log((self.rows - len(docs) + 0.5) / (len(docs) + 0.5))
            idf = idf if idf > 0 else 1e-6
            norm = K1 * (1 - B + B * self.length[docs] / self.average_length)
            scores.append(idf * freq * (K1 + 1) / (freq + norm))
        unique, inverse = np.unique(np.concatenate([docs for docs, _ in parts]), return_inverse=True)
        total = np.bincount(inverse, weights=np.concatenate(scores))
        top = np.argpartition(-total, limit)[:limit] if len(total) > limit else np.arange(len(total))
        top = top[np.lexsort((unique[top], -total[top]))]  # best first, ties by rowid
        return [(int(unique[i]), float(total[i])) for i in top]


def docsize_lengths(rows: list[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    """(rowids, tokens per row over all columns) from the rows of an FTS5 docsize table (one varint per column)."""
    return (np.fromiter((rowid for rowid, _ in rows), dtype=np.int64, count=len(rows)),
            np.fromiter((sum(_varints(blob)) for _, blob in rows), dtype=np.float64, count=len(rows)))


def _varints(blob: bytes) -> list[int]:
    """SQLite's varints (7 bits a byte, high bit set on all but the last byte; FTS5 sizes never need the
    9-byte form)."""
    out, value = [], 0
    for byte in blob:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            out.append(value)
            value = 0
    return out


def summed(rows: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(rowids ascending, weight summed per rowid) from (rowid, weight) rows, one per occurrence or per row."""
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    docs = np.fromiter((d for d, _ in rows), dtype=np.int64, count=len(rows))
    weight = np.fromiter((w for _, w in rows), dtype=np.float64, count=len(rows))
    unique, inverse = np.unique(docs, return_inverse=True)
    return unique, np.bincount(inverse, weights=weight)


def rarest(items: list[str], unit_count: Callable[[str], int], budget: int) -> list[str]:
    """The rarest items whose unit counts add up to at most `budget` (and at least the two rarest)."""
    kept, total = [], 0
    for item in sorted(items, key=unit_count):
        if len(kept) >= 2 and total + unit_count(item) > budget:
            break
        kept.append(item)
        total += unit_count(item)
    return kept


class QueryTerms:
    """Words -> FTS5 terms, by FTS5's own tokenizer in a private in-memory table."""

    def __init__(self, tokenize: str):
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(f"CREATE VIRTUAL TABLE q USING fts5(w, tokenize={tokenize!r})")
        self._db.execute("CREATE VIRTUAL TABLE q_vocab USING fts5vocab(q, 'instance')")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def tokens(self, words: list[str]) -> list[str]:
        """Every term of the words in order, a phrase's words each on its own."""
        with self._lock:
            self._db.execute("DELETE FROM q")
            self._db.executemany("INSERT INTO q(rowid, w) VALUES (?, ?)", list(enumerate(words, 1)))
            return [term for (term,) in self._db.execute("SELECT term FROM q_vocab ORDER BY doc, offset")]

    def terms(self, words: list[str]) -> list[str] | None:
        """One term per word (words with no token dropped), or None when a word is several tokens to FTS5
        (a phrase)."""
        with self._lock:
            self._db.execute("DELETE FROM q")
            self._db.executemany("INSERT INTO q(rowid, w) VALUES (?, ?)", list(enumerate(words, 1)))
            found = self._db.execute("SELECT doc, term FROM q_vocab").fetchall()
        by_word: dict[int, list[str]] = {}
        for doc, term in found:
            by_word.setdefault(doc, []).append(term)
        if any(len(v) > 1 for v in by_word.values()):
            return None
        return [by_word[i][0] for i in sorted(by_word)]


class Tokenizer:
    """Units -> the postings FTS5 would hold for them, by FTS5's own tokenizer in a private in-memory table: for a
    store that keeps its postings itself (PostgreSQL)."""

    def __init__(self, tokenize: str, weights: dict[str, float]):
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(f"CREATE VIRTUAL TABLE d USING fts5(title, text, tokenize={tokenize!r})")
        self._db.execute("CREATE VIRTUAL TABLE d_vocab USING fts5vocab(d, 'instance')")
        self._weights = weights
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def postings(self, units: list[tuple[int, str, str]]) -> tuple[list[tuple[int, int]], list[tuple[str, int, float]]]:
        """(uid, tokens) for each unit and (term, uid, weighted count) for each term of each, from (uid, title, text)."""
        with self._lock:
            self._db.execute("DELETE FROM d")
            self._db.executemany("INSERT INTO d(rowid, title, text) VALUES (?, ?, ?)", units)
            rows = self._db.execute("SELECT doc, term, col FROM d_vocab").fetchall()
        sizes: dict[int, int] = {uid: 0 for uid, _, _ in units}
        weight: dict[tuple[str, int], float] = {}
        for doc, term, col in rows:
            sizes[doc] += 1
            weight[term, doc] = weight.get((term, doc), 0.0) + self._weights.get(col, 1.0)
        return list(sizes.items()), [(term, doc, w) for (term, doc), w in weight.items()]
