"""The knowledge base's SQLite store: entries, their searchable units, the BM25 index and cached vectors.

The store is the source of truth. The FAISS file beside it is named by the store's `index_token`, so a
reader can always tell whether a file matches the rows it sees, and rebuild from the cached vectors when
it does not (a crash between writing the two leaves nothing inconsistent).
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .bm25 import Bm25Index, QueryTerms, fetch_postings, rarest, read_lengths
from .records import Entry, Passage, Source
from .text import content_words

TOKENIZE = "porter unicode61 remove_diacritics 2"  # FTS5's tokenizer, also for query terms (retrieval.bm25)
BM25_WEIGHTS = {"title": 0.5, "text": 1.0}  # a word in a unit's title counts half one in its text

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries(
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    answer TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    content_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- What search matches: an entry's question variants and its passages. vector_key is NULL for units
-- that only the lexical index holds.
CREATE TABLE IF NOT EXISTS units(
    uid INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id TEXT NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('question', 'passage')),
    ordinal INTEGER NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    vector_key TEXT
);
CREATE INDEX IF NOT EXISTS units_entry ON units(entry_id);
CREATE VIRTUAL TABLE IF NOT EXISTS units_fts USING fts5(
    title, text, content='units', content_rowid='uid', tokenize='{TOKENIZE}'
);
CREATE VIRTUAL TABLE IF NOT EXISTS units_vocab USING fts5vocab(units_fts, 'row');
CREATE VIRTUAL TABLE IF NOT EXISTS units_instance USING fts5vocab(units_fts, 'instance');
CREATE TRIGGER IF NOT EXISTS units_ai AFTER INSERT ON units BEGIN
    INSERT INTO units_fts(rowid, title, text) VALUES (new.uid, new.title, new.text);
END;
CREATE TRIGGER IF NOT EXISTS units_ad AFTER DELETE ON units BEGIN
    INSERT INTO units_fts(units_fts, rowid, title, text) VALUES ('delete', old.uid, old.title, old.text);
END;
-- Embedding cache by content: key = hash(model id, text). Kept after an entry is removed so that
-- re-adding it embeds nothing.
CREATE TABLE IF NOT EXISTS vectors(key TEXT PRIMARY KEY, vector BLOB NOT NULL);
-- Where entries came from, so that `kb sync` can read it again: entries.source names the source.
CREATE TABLE IF NOT EXISTS sources(
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    location TEXT NOT NULL,
    max_pages INTEGER NOT NULL DEFAULT 0,
    pages INTEGER NOT NULL DEFAULT 0,
    added_at TEXT NOT NULL,
    synced_at TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT ''
);
"""



@dataclass
class Unit:
    """A searchable piece of an entry, as stored."""

    entry_id: str
    kind: str  # "question" or "passage"
    ordinal: int
    title: str
    text: str
    vector_key: str | None


@dataclass
class EntrySummary:
    id: str
    kind: str
    title: str
    category: str
    url: str
    source: str
    variants: int
    passages: int
    updated_at: str


class Store:
    """One knowledge base's SQLite file. Safe to share between threads; WAL lets readers run during writes."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._df: dict[str, int] = {}  # term -> unit count, for choosing the rarest query terms
        self._df_token: str | None = None  # the index version `_df` was read at
        self._bm25: Bm25Index | None = None  # for `lexical`
        self._bm25_token: str | None = None  # the index version `_bm25` was read at
        self._bm25_lock = threading.Lock()
        self._query_terms = QueryTerms(TOKENIZE)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA journal_size_limit=67108864")  # the WAL shrinks back after a large ingest
        token = uuid.uuid4().hex
        self._db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} INSERT OR IGNORE INTO meta VALUES ('index_token', '{token}'); COMMIT;")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the database lock at once (no upgrade deadlocks)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same state."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    # --- meta -------------------------------------------------------------------------------------

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0][0] if row else default

    def index_token(self) -> str:
        return self.meta("index_token")

    @staticmethod
    def meta_in(db: sqlite3.Connection, key: str) -> str | None:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @staticmethod
    def has_vectors(db: sqlite3.Connection) -> bool:
        return db.execute("SELECT 1 FROM units WHERE vector_key IS NOT NULL LIMIT 1").fetchone() is not None

    @staticmethod
    def set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @staticmethod
    def new_index_token(db: sqlite3.Connection) -> str:
        token = uuid.uuid4().hex
        Store.set_meta(db, "index_token", token)
        return token

    # --- writing (inside `write()`) ---------------------------------------------------------------

    @staticmethod
    def put_entry(db: sqlite3.Connection, entry: Entry, units: list[Unit]) -> tuple[list[int], list[tuple[int, str]]]:
        """Insert or replace an entry; returns (uids removed, (uid, vector key) added with vectors)."""
        removed = Store.delete_entry(db, entry.id, keep_row=True)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        db.execute(
            """INSERT INTO entries(id, kind, title, answer, category, url, source, content_hash, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET kind=excluded.kind, title=excluded.title, answer=excluded.answer,
                   category=excluded.category, url=excluded.url, source=excluded.source,
                   content_hash=excluded.content_hash, updated_at=excluded.updated_at""",
            (entry.id, entry.kind, entry.title, entry.answer, entry.category, entry.url, entry.source,
             entry.content_hash(), now, now),
        )
        added = []
        for unit in units:
            cur = db.execute(
                "INSERT INTO units(entry_id, kind, ordinal, title, text, vector_key) VALUES (?, ?, ?, ?, ?, ?)",
                (entry.id, unit.kind, unit.ordinal, unit.title, unit.text, unit.vector_key),
            )
            if unit.vector_key:
                added.append((cur.lastrowid, unit.vector_key))
        return removed, added

    @staticmethod
    def delete_entry(db: sqlite3.Connection, entry_id: str, keep_row: bool = False) -> list[int]:
        """Delete an entry's units (and the entry unless keep_row); returns the uids that had vectors."""
        uids = [r[0] for r in db.execute("SELECT uid FROM units WHERE entry_id = ? AND vector_key IS NOT NULL", (entry_id,))]
        db.execute("DELETE FROM units WHERE entry_id = ?", (entry_id,))
        if not keep_row:
            db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        return uids

    @staticmethod
    def put_source(db: sqlite3.Connection, source: Source) -> None:
        db.execute(
            """INSERT INTO sources(name, kind, location, max_pages, pages, added_at, synced_at, error)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(name) DO UPDATE SET kind=excluded.kind, location=excluded.location, max_pages=excluded.max_pages,
                   pages=excluded.pages, synced_at=excluded.synced_at, error=excluded.error""",
            (source.name, source.kind, source.location, source.max_pages, source.pages, source.added_at, source.synced_at, source.error),
        )

    @staticmethod
    def source_entry_ids(db: sqlite3.Connection, name: str) -> set[str]:
        return {r[0] for r in db.execute("SELECT id FROM entries WHERE source = ?", (name,))}

    @staticmethod
    def set_sources(db: sqlite3.Connection, sources: dict[str, str]) -> None:
        """Record which source each entry (id -> source name) came from: an unchanged entry read from another
        source is not rewritten, only re-labelled."""
        db.executemany("UPDATE entries SET source = ? WHERE id = ? AND source != ?", [(s, i, s) for i, s in sources.items()])

    def sources(self) -> list[Source]:
        rows = self._query("SELECT name, kind, location, max_pages, pages, added_at, synced_at, error FROM sources ORDER BY added_at, name")
        return [Source(*row) for row in rows]

    def record_source_error(self, name: str, error: str) -> None:
        """A sync that failed changes no entry; the source remembers why, for `kb sources` and the console."""
        with self.write() as db:
            db.execute("UPDATE sources SET error = ? WHERE name = ?", (error, name))

    @staticmethod
    def delete_variants(db: sqlite3.Connection, variants: list[tuple[str, str]]) -> list[int]:
        """Delete question variants given as (entry id, text); returns the uids that had vectors."""
        uids = []
        for entry_id, text in variants:
            rows = db.execute("SELECT uid, vector_key FROM units WHERE entry_id = ? AND kind = 'question' AND text = ?", (entry_id, text))
            found = rows.fetchall()
            db.executemany("DELETE FROM units WHERE uid = ?", [(uid,) for uid, _ in found])
            uids += [uid for uid, key in found if key]
        return uids

    def copy_to(self, path: Path) -> None:
        """A consistent copy of the whole database (SQLite's online backup), while others read and write."""
        target = sqlite3.connect(path)
        try:
            with self._lock:
                self._db.backup(target)
        finally:
            target.close()

    def import_vectors(self, other: Path) -> None:
        """Add the cached vectors of another store (a copy that embedded with a new model) to this one's."""
        with self._lock:
            self._db.execute("ATTACH DATABASE ? AS other", (str(other),))
            try:
                self._db.execute("INSERT OR IGNORE INTO vectors SELECT key, vector FROM other.vectors")
            finally:
                self._db.execute("DETACH DATABASE other")

    @staticmethod
    def put_vectors(db: sqlite3.Connection, vectors: dict[str, np.ndarray]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
            [(key, np.asarray(v, dtype=np.float32).tobytes()) for key, v in vectors.items()],
        )

    # --- reading ----------------------------------------------------------------------------------

    def content_hashes(self, ids: list[str]) -> dict[str, str]:
        return dict(self._query_in("SELECT id, content_hash FROM entries WHERE id IN ({})", ids))

    def entry_info(self, ids: list[str]) -> dict[str, tuple[str, str, str]]:
        """id -> (title, category, url)."""
        rows = self._query_in("SELECT id, title, category, url FROM entries WHERE id IN ({})", ids)
        return {r[0]: r[1:] for r in rows}

    def missing_vectors(self, keys: list[str]) -> set[str]:
        return set(keys) - {r[0] for r in self._query_in("SELECT key FROM vectors WHERE key IN ({})", keys)}

    @staticmethod
    def vectors_for(db: sqlite3.Connection, pairs: list[tuple[int, str]], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(uids, matrix) for (uid, vector key) pairs, read from the cache."""
        blobs = dict(_select_in(db, "SELECT key, vector FROM vectors WHERE key IN ({})", list({k for _, k in pairs})))
        matrix = np.zeros((len(pairs), dim), dtype=np.float32)
        for row, (_, key) in enumerate(pairs):
            matrix[row] = np.frombuffer(blobs[key], dtype=np.float32)
        return np.array([uid for uid, _ in pairs], dtype=np.int64), matrix

    @staticmethod
    def dense_unit_texts(db: sqlite3.Connection, text_of: Callable[[str, str, str], str]) -> list[tuple[int, str]]:
        """(uid, the text its vector encodes) of every embedded unit; text_of(kind, title, text) says which."""
        rows = db.execute("SELECT uid, kind, title, text FROM units WHERE vector_key IS NOT NULL ORDER BY uid")
        return [(uid, text_of(kind, title, text)) for uid, kind, title, text in rows]

    @staticmethod
    def set_vector_keys(db: sqlite3.Connection, keys: dict[int, str]) -> None:
        db.executemany("UPDATE units SET vector_key = ? WHERE uid = ?", [(key, uid) for uid, key in keys.items()])

    @staticmethod
    def all_dense_units(db: sqlite3.Connection) -> list[tuple[int, str]]:
        return db.execute("SELECT uid, vector_key FROM units WHERE vector_key IS NOT NULL ORDER BY uid").fetchall()

    @staticmethod
    def unit_texts(db: sqlite3.Connection) -> Iterator[str]:
        """The title and text of every unit (variants and passages): the knowledge base's vocabulary."""
        for title, text in db.execute("SELECT title, text FROM units"):
            yield f"{title} {text}"

    @staticmethod
    def question_entries(db: sqlite3.Connection) -> list[tuple[int, str, str]]:
        """(uid, vector key, entry id) of every embedded question variant."""
        return db.execute("SELECT uid, vector_key, entry_id FROM units WHERE kind = 'question' AND vector_key IS NOT NULL ORDER BY uid").fetchall()

    def unit_entries(self, uids: list[int]) -> dict[int, tuple[str, str]]:
        """uid -> (entry id, unit text) for the uids that still exist."""
        rows = self._query_in("SELECT uid, entry_id, text FROM units WHERE uid IN ({})", uids)
        return {uid: (entry_id, text) for uid, entry_id, text in rows}

    def lexical(self, query: str, limit: int, budget: int = 0) -> list[tuple[int, float]]:
        """BM25 over variants and passages: (uid, score) best first, score positive (higher is better).

        Scored in numpy over FTS5's postings (see retrieval.bm25: FTS5's own scores, faster on a large
        knowledge base); a query with a word FTS5 reads as a phrase goes to FTS5 itself. With a `budget`,
        only the query's rarest terms are scored, as many as match at most `budget` units in all (and at
        least the two rarest): a term found in thousands of units costs time while its IDF, and so its
        effect on the ranking, is small. A small knowledge base never reaches the budget."""
        words = list(dict.fromkeys(content_words(query)))
        if not words:
            return []
        terms = self._query_terms.terms(words)
        if terms is not None:
            index, frequency = self.bm25_index(), self._frequencies()
            return index.search(rarest(terms, lambda t: frequency.get(t, 0), budget) if budget else terms, limit)
        if budget:
            words = self._rarest(words, budget)
        match = " OR ".join(f'"{t}"' for t in words)
        rows = self._query(
            # Order by the weighted score itself: FTS5's `rank` is the unweighted bm25().
            f"SELECT rowid, -bm25(units_fts, {BM25_WEIGHTS['title']}, {BM25_WEIGHTS['text']}) AS score FROM units_fts"
            " WHERE units_fts MATCH ? ORDER BY score DESC LIMIT ?",
            (match, limit),
        )
        return [(uid, score) for uid, score in rows]

    def _rarest(self, words: list[str], budget: int) -> list[str]:
        """`rarest` for words FTS5 will stem: FTS5's vocabulary holds each (Porter-stemmed) term's unit
        count; a stem is almost always a prefix of its word (or ends in "i" for a "y"), so the longest such
        prefix found stands for the word. A word with no entry counts 0."""
        candidates = {w: [w[:-1] + "i"] * w.endswith("y") + [w[:n] for n in range(len(w), 2, -1)] for w in words}
        frequency = self._frequencies()
        df = {w: next((frequency[c] for c in cs if c in frequency), 0) for w, cs in candidates.items()}
        return rarest(words, df.get, budget)

    def bm25_index(self) -> Bm25Index:
        """BM25 for the index version now: row lengths read once per version (every write makes a new one;
        about 0.3 s at 200,000 units), postings as queries need them."""
        with self._bm25_lock:
            if self._bm25_token != self.index_token():
                with self.snapshot() as db:
                    self._bm25 = Bm25Index(*read_lengths(db, "units_fts_docsize"),
                                           fetch_postings(self._query, "units_instance", BM25_WEIGHTS))
                    self._bm25_token = Store.meta_in(db, "index_token")
            return self._bm25

    def _frequencies(self) -> dict[str, int]:
        """Every indexed term's unit count, read once per index version (every write makes a new one):
        FTS5's vocabulary table counts a term's postings on each look-up, milliseconds per query term on a
        large knowledge base, while reading it whole once costs about as much as a few queries."""
        token = self.index_token()
        if self._df_token != token:
            with self.snapshot() as db:
                self._df = dict(db.execute("SELECT term, doc FROM units_vocab"))
                self._df_token = Store.meta_in(db, "index_token")
        return self._df

    def entry(self, entry_id: str) -> Entry | None:
        rows = self._query("SELECT id, kind, title, answer, category, url, source FROM entries WHERE id = ?", (entry_id,))
        if not rows:
            return None
        eid, kind, title, answer, category, url, source = rows[0]
        units = self._query("SELECT kind, title, text FROM units WHERE entry_id = ? ORDER BY kind, ordinal", (eid,))
        return Entry(
            id=eid, kind=kind, title=title, answer=answer, category=category, url=url, source=source,
            questions=[text for k, _, text in units if k == "question"],
            passages=[Passage(title=t, text=text) for k, t, text in units if k == "passage"],
        )

    def entries(self, category: str | None = None, contains: str | None = None, limit: int | None = None) -> list[EntrySummary]:
        sql = """SELECT e.id, e.kind, e.title, e.category, e.url, e.source,
                        SUM(u.kind = 'question'), SUM(u.kind = 'passage'), e.updated_at
                 FROM entries e LEFT JOIN units u ON u.entry_id = e.id WHERE 1"""
        args: list = []
        if category:
            sql += " AND e.category = ?"
            args.append(category)
        if contains:
            sql += " AND (e.title LIKE ? OR e.id LIKE ?)"
            args += [f"%{contains}%"] * 2
        sql += " GROUP BY e.id ORDER BY e.category, e.id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [EntrySummary(*(r[:6]), int(r[6] or 0), int(r[7] or 0), r[8]) for r in self._query(sql, args)]

    def counts(self) -> dict[str, int]:
        (entries, documents), = self._query("SELECT COUNT(*), COALESCE(SUM(kind = 'document'), 0) FROM entries")
        (variants, passages, dense), = self._query(
            "SELECT COALESCE(SUM(kind = 'question'), 0), COALESCE(SUM(kind = 'passage'), 0),"
            " COALESCE(SUM(vector_key IS NOT NULL), 0) FROM units"
        )
        (cached,) = self._query("SELECT COUNT(*) FROM vectors")[0]
        categories = self._query("SELECT COUNT(DISTINCT category) FROM entries WHERE category != ''")[0][0]
        return {
            "entries": entries, "documents": documents, "categories": categories, "variants": variants,
            "passages": passages, "vectors": dense, "cached_vectors": cached,
        }

    def _query(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _query_in(self, sql: str, values: list) -> list[tuple]:
        with self._lock:
            return _select_in(self._db, sql, values)


def _select_in(db: sqlite3.Connection, sql: str, values: list) -> list[tuple]:
    """Run `sql` whose `{}` is an IN list, in chunks that stay under SQLite's variable limit."""
    rows: list[tuple] = []
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        rows += db.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall()
    return rows
