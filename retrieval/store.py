"""The knowledge base's store: entries, their searchable units, the lexical index and cached vectors, in a
SQLite file or in a schema of its own in a PostgreSQL database (retrieval.database).

The store is the source of truth. The FAISS file beside it (in the knowledge base's folder, one per process's
home) is named by the store's `index_token`, so a reader can always tell whether a file matches the rows it
sees, and rebuild from the cached vectors when it does not (a crash between writing the two, or another
replica's write, leaves nothing inconsistent).
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .bm25 import Bm25Index, QueryTerms, Tokenizer, docsize_lengths, rarest, summed
from .database import Database, DatabaseError, copy_tables, is_url, migrate
from .records import Entry, Passage, Source
from .text import content_words

TOKENIZE = "porter unicode61 remove_diacritics 2"  # FTS5's tokenizer, also for query terms (retrieval.bm25)
BM25_WEIGHTS = {"title": 0.5, "text": 1.0}  # a word in a unit's title counts half one in its text
MIGRATIONS = Path(__file__).parent / "migrations"
# The tables a copy moves, parents first (the lexical index is rebuilt from the units where it lands).
TABLES = ["sources", "entries", "units", "vectors"]
IN_CHUNK = 500  # values per IN (...) list: SQLite's variable limit, and statements of a sane size


def schema_name(name: str) -> str:
    """The PostgreSQL schema of the knowledge base `name` (a folder name: letters, digits, '-', '_', '.'): readable,
    and within PostgreSQL's 63 characters. Two names that read alike here ("FAQ", "faq") are told apart by the
    name each schema records (`Store` refuses the second)."""
    readable = re.sub(r"[^a-z0-9_]", "_", name.lower())
    if len(readable) > 50:
        readable = f"{readable[:40]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return "kb_" + readable


def stored_names(url: str) -> list[str]:
    """The names of the knowledge bases a PostgreSQL database holds (each in its schema)."""
    db = Database(url)
    try:
        schemas = [r[0] for r in db.tuples(
            "SELECT n.nspname FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid"
            " WHERE n.nspname LIKE 'kb\\_%' AND c.relname = 'meta' ORDER BY 1")]
        names = [db.tuples(f'SELECT value FROM "{schema}".meta WHERE key = \'name\'') for schema in schemas]
        return [rows[0][0] for rows in names if rows]  # a schema whose store was never opened has no name yet
    finally:
        db.close()


def copy_store(source: Path, target: str, name: str) -> dict[str, dict]:
    """`supportbot db copy`: the knowledge base `name` from its SQLite file into the database `target`, where it
    must not hold that knowledge base yet; {table: {rows, checksum}}, checked."""
    stores = [Store(source, name), Store(target, name)]
    try:
        return stores[0].copy_to(stores[1])
    finally:
        for store in stores:
            store.close()


def upgrade_store(target: Path | str, name: str) -> tuple[str | None, str]:
    """`supportbot db upgrade`: the knowledge base's schema to the newest; (revision before, after)."""
    db = Database(target, schema=schema_name(name) if is_url(target) else "")
    try:
        return migrate(db, MIGRATIONS)
    finally:
        db.close()


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
    """One knowledge base's tables. Safe to share between threads: each transaction has its own connection, a
    write takes the store's lock when it begins (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), and
    readers never wait for writers."""

    def __init__(self, target: Path | str, name: str = "default"):
        """`target`: a SQLite file, or a postgresql:// URL (the knowledge base `name` in its own schema)."""
        self.db = Database(target, schema=schema_name(name) if is_url(target) else "")
        self.name = name
        self.postgres = self.db.dialect == "postgresql"
        self._write_lock = f"supportbot {schema_name(name)}"
        try:
            migrate(self.db, MIGRATIONS)
            if self.meta("name") is None:  # a new store (or one from before names were kept): name it once
                with self.write():
                    self.db.execute("INSERT INTO meta VALUES ('index_token', :t) ON CONFLICT(key) DO NOTHING", t=uuid.uuid4().hex)
                    self.db.execute("INSERT INTO meta VALUES ('name', :n) ON CONFLICT(key) DO NOTHING", n=name)
            if self.postgres and self.meta("name") != name:
                raise DatabaseError(f"knowledge base {name!r}: its schema {schema_name(name)} already holds knowledge base "
                                    f"{self.meta('name')!r}; give one of them another name")
        except BaseException:
            self.db.close()
            raise
        self._df: dict[str, int] = {}  # term -> unit count, for choosing the rarest query terms
        self._df_token: str | None = None  # the index version `_df` was read at
        self._bm25: Bm25Index | None = None  # for `lexical`
        self._bm25_token: str | None = None  # the index version `_bm25` was read at
        self._bm25_lock = threading.Lock()
        self._query_terms = QueryTerms(TOKENIZE)
        self._tokenizer = Tokenizer(TOKENIZE, BM25_WEIGHTS) if self.postgres else None

    def close(self) -> None:
        self.db.close()
        self._query_terms.close()
        if self._tokenizer:
            self._tokenizer.close()

    @contextmanager
    def write(self) -> Iterator[Store]:
        """A write transaction that holds the store's write lock from its start (no upgrade deadlocks; writers
        in other processes and replicas wait their turn, and then see each other's commits)."""
        with self.db.transaction(self._write_lock):
            yield self

    @contextmanager
    def snapshot(self) -> Iterator[Store]:
        """A read transaction: every query inside sees the same state."""
        with self.db.snapshot():
            yield self

    # --- meta -------------------------------------------------------------------------------------

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self._all("SELECT value FROM meta WHERE key = :k", k=key)
        return row[0][0] if row else default

    def index_token(self) -> str:
        return self.meta("index_token")

    def has_vectors(self) -> bool:
        return bool(self._all("SELECT 1 FROM units WHERE vector_key IS NOT NULL LIMIT 1"))

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta VALUES (:k, :v) ON CONFLICT(key) DO UPDATE SET value = excluded.value", k=key, v=value)

    def new_index_token(self) -> str:
        token = uuid.uuid4().hex
        self.set_meta("index_token", token)
        return token

    # --- writing (inside `write()`) ---------------------------------------------------------------

    def put_entries(self, entries: list[Entry], units: dict[str, list[Unit]]) -> tuple[list[int], list[tuple[int, str]]]:
        """Insert or replace entries with their units (entry id -> units), a few statements per batch rather than
        per unit; returns (uids removed, (uid, vector key) added with vectors)."""
        ids = [e.id for e in entries]
        removed = [r[0] for r in self._all_in("SELECT uid FROM units WHERE vector_key IS NOT NULL AND entry_id IN :values", ids)]
        for start in range(0, len(ids), IN_CHUNK):
            self.db.execute("DELETE FROM units WHERE entry_id IN :values", values=ids[start : start + IN_CHUNK])
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.db.execute_many(
            """INSERT INTO entries(id, kind, title, answer, category, url, source, content_hash, created_at, updated_at)
               VALUES (:id, :kind, :title, :answer, :category, :url, :source, :hash, :now, :now)
               ON CONFLICT(id) DO UPDATE SET kind=excluded.kind, title=excluded.title, answer=excluded.answer,
                   category=excluded.category, url=excluded.url, source=excluded.source,
                   content_hash=excluded.content_hash, updated_at=excluded.updated_at""",
            [{"id": e.id, "kind": e.kind, "title": e.title, "answer": e.answer, "category": e.category, "url": e.url,
              "source": e.source, "hash": e.content_hash(), "now": now} for e in entries],
        )
        self.db.execute_many(
            "INSERT INTO units(entry_id, kind, ordinal, title, text, vector_key) VALUES (:entry, :kind, :ordinal, :title, :text, :key)",
            [{"entry": e.id, "kind": u.kind, "ordinal": u.ordinal, "title": u.title, "text": u.text, "key": u.vector_key}
             for e in entries for u in units[e.id]],
        )
        added = self._all_in("SELECT uid, title, text, vector_key FROM units WHERE entry_id IN :values", ids)
        self._index_lexically([(uid, title, text) for uid, title, text, _ in added])
        return removed, [(uid, key) for uid, _, _, key in added if key]

    def _index_lexically(self, units: list[tuple[int, str, str]], chunk: int = 5000) -> None:
        """PostgreSQL: the postings of new units (SQLite's FTS5 triggers do this there)."""
        if not self.postgres:
            return
        for start in range(0, len(units), chunk):
            sizes, postings = self._tokenizer.postings(units[start : start + chunk])
            self.db.execute_many("INSERT INTO unit_sizes(uid, tokens) VALUES (:uid, :tokens)",
                                 [{"uid": uid, "tokens": n} for uid, n in sizes])
            self.db.execute_many("INSERT INTO postings(term, uid, weight) VALUES (:term, :uid, :weight)",
                                 [{"term": t, "uid": uid, "weight": w} for t, uid, w in postings])

    def delete_entry(self, entry_id: str) -> list[int]:
        """Delete an entry and its units; returns the uids that had vectors."""
        uids = [r[0] for r in self._all("SELECT uid FROM units WHERE entry_id = :e AND vector_key IS NOT NULL", e=entry_id)]
        self.db.execute("DELETE FROM units WHERE entry_id = :e", e=entry_id)
        self.db.execute("DELETE FROM entries WHERE id = :e", e=entry_id)
        return uids

    def put_source(self, source: Source) -> None:
        self.db.upsert("sources", "name", **{k: getattr(source, k) for k in
                       ("name", "kind", "location", "max_pages", "pages", "added_at", "synced_at", "error")})

    def source_entry_ids(self, name: str) -> set[str]:
        return {r[0] for r in self._all("SELECT id FROM entries WHERE source = :s", s=name)}

    def set_sources(self, sources: dict[str, str]) -> None:
        """Record which source each entry (id -> source name) came from: an unchanged entry read from another
        source is not rewritten, only re-labelled."""
        self.db.execute_many("UPDATE entries SET source = :s WHERE id = :i AND source != :s",
                             [{"s": s, "i": i} for i, s in sources.items()])

    def sources(self) -> list[Source]:
        rows = self._all("SELECT name, kind, location, max_pages, pages, added_at, synced_at, error FROM sources ORDER BY added_at, name")
        return [Source(*row) for row in rows]

    def record_source_error(self, name: str, error: str) -> None:
        """A sync that failed changes no entry; the source remembers why, for `kb sources` and the console."""
        with self.write():
            self.db.execute("UPDATE sources SET error = :e WHERE name = :n", e=error, n=name)

    def delete_variants(self, variants: list[tuple[str, str]]) -> list[int]:
        """Delete question variants given as (entry id, text); returns the uids that had vectors."""
        uids = []
        for entry_id, text in variants:
            found = self._all("SELECT uid, vector_key FROM units WHERE entry_id = :e AND kind = 'question' AND text = :t",
                              e=entry_id, t=text)
            self.db.execute_many("DELETE FROM units WHERE uid = :u", [{"u": uid} for uid, _ in found])
            uids += [uid for uid, key in found if key]
        return uids

    def copy_to(self, target: Store) -> dict[str, dict]:
        """Copy this store's rows into the empty store `target` (either engine), checked by counts and checksums
        ({table: {rows, checksum}}); its lexical index is built there from the units, its meta (index version,
        embedder) set to this one's."""
        with self.snapshot(), target.write():
            report = copy_tables(self.db, target.db, TABLES)
            target._index_lexically(target._all("SELECT uid, title, text FROM units"))
            for key, value in self._all("SELECT key, value FROM meta WHERE key != 'name'"):
                target.set_meta(key, value)
        return report

    def import_vectors(self, other: Path) -> None:
        """Add the cached vectors of another store's SQLite file (a trial copy that embedded with a new model) to
        this one's."""
        source = Database(other)
        try:
            rows = source.rows("SELECT key, vector FROM vectors")
        finally:
            source.close()
        with self.write():
            self.db.execute_many("INSERT INTO vectors(key, vector) VALUES (:key, :vector) ON CONFLICT(key) DO NOTHING", rows)

    def put_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        self.db.execute_many(
            "INSERT INTO vectors(key, vector) VALUES (:k, :v) ON CONFLICT(key) DO UPDATE SET vector = excluded.vector",
            [{"k": key, "v": np.asarray(v, dtype=np.float32).tobytes()} for key, v in vectors.items()],
        )

    # --- reading ----------------------------------------------------------------------------------

    def content_hashes(self, ids: list[str]) -> dict[str, str]:
        return dict(self._all_in("SELECT id, content_hash FROM entries WHERE id IN :values", ids))

    def entry_info(self, ids: list[str]) -> dict[str, tuple[str, str, str]]:
        """id -> (title, category, url)."""
        rows = self._all_in("SELECT id, title, category, url FROM entries WHERE id IN :values", ids)
        return {r[0]: r[1:] for r in rows}

    def missing_vectors(self, keys: list[str]) -> set[str]:
        return set(keys) - {r[0] for r in self._all_in("SELECT key FROM vectors WHERE key IN :values", keys)}

    def vectors_for(self, pairs: list[tuple[int, str]], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(uids, matrix) for (uid, vector key) pairs, read from the cache."""
        blobs = dict(self._all_in("SELECT key, vector FROM vectors WHERE key IN :values", list({k for _, k in pairs})))
        matrix = np.zeros((len(pairs), dim), dtype=np.float32)
        for row, (_, key) in enumerate(pairs):
            matrix[row] = np.frombuffer(blobs[key], dtype=np.float32)
        return np.array([uid for uid, _ in pairs], dtype=np.int64), matrix

    def dense_unit_texts(self, text_of: Callable[[str, str, str], str]) -> list[tuple[int, str]]:
        """(uid, the text its vector encodes) of every embedded unit; text_of(kind, title, text) says which."""
        rows = self._all("SELECT uid, kind, title, text FROM units WHERE vector_key IS NOT NULL ORDER BY uid")
        return [(uid, text_of(kind, title, text)) for uid, kind, title, text in rows]

    def set_vector_keys(self, keys: dict[int, str]) -> None:
        self.db.execute_many("UPDATE units SET vector_key = :k WHERE uid = :u", [{"k": key, "u": uid} for uid, key in keys.items()])

    def all_dense_units(self) -> list[tuple[int, str]]:
        return self._all("SELECT uid, vector_key FROM units WHERE vector_key IS NOT NULL ORDER BY uid")

    def unit_texts(self) -> list[str]:
        """The title and text of every unit (variants and passages): the knowledge base's vocabulary."""
        return [f"{title} {text}" for title, text in self._all("SELECT title, text FROM units")]

    def entry_vector_keys(self, entry_id: str) -> list[tuple[int, str]]:
        """(uid, vector key) of every embedded unit of one entry (its variants and passages)."""
        return self._all("SELECT uid, vector_key FROM units WHERE entry_id = :e AND vector_key IS NOT NULL", e=entry_id)

    def question_entries(self) -> list[tuple[int, str, str]]:
        """(uid, vector key, entry id) of every embedded question variant."""
        return self._all("SELECT uid, vector_key, entry_id FROM units WHERE kind = 'question' AND vector_key IS NOT NULL ORDER BY uid")

    def unit_entries(self, uids: list[int]) -> dict[int, tuple[str, str]]:
        """uid -> (entry id, unit text) for the uids that still exist."""
        rows = self._all_in("SELECT uid, entry_id, text FROM units WHERE uid IN :values", uids)
        return {uid: (entry_id, text) for uid, entry_id, text in rows}

    def lexical(self, query: str, limit: int, budget: int = 0, token: str = "") -> list[tuple[int, float]]:
        """BM25 over variants and passages: (uid, score) best first, score positive (higher is better).

        Scored in numpy over the postings (see retrieval.bm25: FTS5's own scores, faster on a large knowledge
        base); on SQLite a query with a word FTS5 reads as a phrase goes to FTS5 itself. With a `budget`, only
        the query's rarest terms are scored, as many as match at most `budget` units in all (and at least the
        two rarest): a term found in thousands of units costs time while its IDF, and so its effect on the
        ranking, is small. A small knowledge base never reaches the budget. `token`: the index version now, when
        the caller has just read it."""
        words = list(dict.fromkeys(content_words(query)))
        if not words:
            return []
        terms = self._query_terms.terms(words)
        if terms is None and self.postgres:
            terms = list(dict.fromkeys(self._query_terms.tokens(words)))
        if terms is not None:
            token = token or self.index_token()  # given by a search that has read it: one round trip fewer
            index, frequency = self.bm25_index(token), self._frequencies(token)
            return index.search(rarest(terms, lambda t: frequency.get(t, 0), budget) if budget else terms, limit)
        if budget:
            words = self._rarest(words, budget)
        match = " OR ".join(f'"{t}"' for t in words)
        return self._all(
            # Order by the weighted score itself: FTS5's `rank` is the unweighted bm25().
            f"SELECT rowid, -bm25(units_fts, {BM25_WEIGHTS['title']}, {BM25_WEIGHTS['text']}) AS score FROM units_fts"
            " WHERE units_fts MATCH :m ORDER BY score DESC LIMIT :n",
            m=match, n=limit,
        )

    def _rarest(self, words: list[str], budget: int) -> list[str]:
        """`rarest` for words FTS5 will stem: FTS5's vocabulary holds each (Porter-stemmed) term's unit
        count; a stem is almost always a prefix of its word (or ends in "i" for a "y"), so the longest such
        prefix found stands for the word. A word with no entry counts 0."""
        candidates = {w: [w[:-1] + "i"] * w.endswith("y") + [w[:n] for n in range(len(w), 2, -1)] for w in words}
        frequency = self._frequencies(self.index_token())
        df = {w: next((frequency[c] for c in cs if c in frequency), 0) for w, cs in candidates.items()}
        return rarest(words, df.get, budget)

    def bm25_index(self, token: str) -> Bm25Index:
        """BM25 for the index version `token` (now): row lengths read once per version (every write makes a new
        one; about 0.3 s at 200,000 units), postings as queries need them."""
        with self._bm25_lock:
            if self._bm25_token != token:
                with self.snapshot():
                    if self.postgres:
                        rows = self._all("SELECT uid, tokens FROM unit_sizes")
                        lengths = (np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.float64))
                    else:
                        lengths = docsize_lengths(self._all("SELECT id, sz FROM units_fts_docsize"))
                    self._bm25 = Bm25Index(*lengths, self._postings)
                    self._bm25_token = self.meta("index_token")
            return self._bm25

    def _postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """A term's (uids ascending, weighted counts): FTS5's instance vocabulary on SQLite, the postings table
        on PostgreSQL."""
        if self.postgres:
            return summed(self._all("SELECT uid, weight FROM postings WHERE term = :t", t=term))
        rows = self._all("SELECT doc, col FROM units_instance WHERE term = :t", t=term)
        return summed([(doc, BM25_WEIGHTS.get(col, 1.0)) for doc, col in rows])

    def _frequencies(self, token: str) -> dict[str, int]:
        """Every indexed term's unit count, read once per index version (`token`, now; every write makes a new
        one): FTS5's vocabulary table counts a term's postings on each look-up, milliseconds per query term on a
        large knowledge base, while reading it whole once costs about as much as a few queries."""
        if self._df_token != token:
            with self.snapshot():
                sql = ("SELECT term, COUNT(*) FROM postings GROUP BY term" if self.postgres
                       else "SELECT term, doc FROM units_vocab")
                self._df = dict(self._all(sql))
                self._df_token = self.meta("index_token")
        return self._df

    def entry(self, entry_id: str) -> Entry | None:
        rows = self._all("SELECT id, kind, title, answer, category, url, source FROM entries WHERE id = :e", e=entry_id)
        if not rows:
            return None
        eid, kind, title, answer, category, url, source = rows[0]
        units = self._all("SELECT kind, title, text FROM units WHERE entry_id = :e ORDER BY kind, ordinal", e=eid)
        return Entry(
            id=eid, kind=kind, title=title, answer=answer, category=category, url=url, source=source,
            questions=[text for k, _, text in units if k == "question"],
            passages=[Passage(title=t, text=text) for k, t, text in units if k == "passage"],
        )

    def entries(self, category: str | None = None, contains: str | None = None, limit: int | None = None) -> list[EntrySummary]:
        sql = """SELECT e.id, e.kind, e.title, e.category, e.url, e.source,
                        SUM(CASE WHEN u.kind = 'question' THEN 1 ELSE 0 END),
                        SUM(CASE WHEN u.kind = 'passage' THEN 1 ELSE 0 END), e.updated_at
                 FROM entries e LEFT JOIN units u ON u.entry_id = e.id WHERE 1 = 1"""
        args: dict = {}
        if category:
            sql += " AND e.category = :category"
            args["category"] = category
        if contains:
            sql += " AND (LOWER(e.title) LIKE :contains OR LOWER(e.id) LIKE :contains)"
            args["contains"] = f"%{contains.lower()}%"
        sql += " GROUP BY e.id ORDER BY e.category, e.id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [EntrySummary(*(r[:6]), int(r[6] or 0), int(r[7] or 0), r[8]) for r in self._all(sql, **args)]

    def counts(self) -> dict[str, int]:
        with self.snapshot():
            (entries, documents), = self._all(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN kind = 'document' THEN 1 ELSE 0 END), 0) FROM entries")
            (variants, passages, dense), = self._all(
                "SELECT COALESCE(SUM(CASE WHEN kind = 'question' THEN 1 ELSE 0 END), 0),"
                " COALESCE(SUM(CASE WHEN kind = 'passage' THEN 1 ELSE 0 END), 0), COUNT(vector_key) FROM units"
            )
            (cached,), = self._all("SELECT COUNT(*) FROM vectors")
            (categories,), = self._all("SELECT COUNT(DISTINCT category) FROM entries WHERE category != ''")
        return {
            "entries": entries, "documents": documents, "categories": categories, "variants": variants,
            "passages": passages, "vectors": dense, "cached_vectors": cached,
        }

    def _all(self, sql: str, **params) -> list[tuple]:
        return self.db.tuples(sql, **params)

    def _all_in(self, sql: str, values: list) -> list[tuple]:
        """Run `sql` whose `:values` is an IN list, in chunks of a sane size."""
        rows: list[tuple] = []
        for start in range(0, len(values), IN_CHUNK):
            rows += self._all(sql, values=values[start : start + IN_CHUNK])
        return rows
