"""KnowledgeBase: ingest files, remove entries, search. One folder holds one knowledge base: `kb.sqlite` (the
source of truth) and `dense-<token>.faiss` (the vector index matching it). With a database URL the source of
truth is that PostgreSQL database (the knowledge base named as its folder, in a schema of its own), shared by
every replica; the folder keeps each replica's index file, rebuilt from the stored vectors when another
replica has written.

The store records which embedder its vectors come from once a retriever has been switched in
(`switch_embedder`); until then it is the configured one. Every process reads it from the store, so an
app serving while ops promote a retriever follows the switch, as it follows ingests."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .database import DatabaseError
from .dense import DenseIndex
from .embedder import Embedder
from .entry_classifier import EntryClassifier, Scoring, fit_entry_classifier
from .fusion import best_per_entry, fuse, variant_votes
from .crawl import CrawlOptions
from .loaders import LoadOptions, faq_entry
from .prototypes import Prototypes
from .spelling import Speller
from .records import Entry, IngestError, SearchHit, Source
from .settings import RetrievalSettings
from .sources import SourceRead, describe, read_source
from .store import EntrySummary, Store, Unit

# progress(stage, done, total): stages are "crawl", "read", "embed", "index".
Progress = Callable[[str, int, int], None]


@dataclass
class IngestReport:
    files: list[str]  # the locations read: sites, files, folders
    entries: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0  # entries of a synced source that it no longer has
    embedded: int = 0  # texts sent to the embedder (the rest came from the cache)
    seconds: float = 0.0
    ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # their names, for `kb sync NAME`
    notes: list[str] = field(default_factory=list)  # pages skipped and why, a crawl that reached its limit


# Queries are cut here: the embedder reads 256 tokens (about 1,000 characters) anyway, and a megabyte of
# query text would take seconds of BM25 term look-ups.
MAX_QUERY_CHARS = 2_000
RECENT_QUERIES = 64  # query vectors remembered (`query_vector`): a few per customer turn at once
# Texts embedded between two writes to the vector cache during an ingest (about 10 s of the MiniLM on 2 cores).
EMBED_CHUNK = 2048


class KnowledgeBase:
    def __init__(self, folder: str | Path, settings: RetrievalSettings | None = None, embedder: Embedder | None = None,
                 database: str = ""):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.settings = settings or RetrievalSettings()
        self.store = Store(database or self.folder / "kb.sqlite", self.folder.name)
        self.cache_dir = self.folder  # where embedders keep their ONNX export
        self._given = embedder  # used for the configured embedder ("") whatever the runtime
        self._embedders: dict[tuple[str, str], Embedder] = {}
        # what searches derive from one version of the index (speller, prototypes, entry classifier): name -> (token, it)
        self._derived: dict[str, tuple[str, object]] = {}
        self._derived_lock = threading.Lock()
        self._rebuilding: set[str] = set()  # names whose newer version a background thread is building
        self._derivations = self._derivation_table()  # read on every search: made once
        # (index, token, folder and runtime of the embedder its vectors come from): replaced in one assignment,
        # so a search never pairs one index with another's embedder
        self._loaded: tuple[DenseIndex | None, str, str, str] = (None, "", "", "")
        self._index_lock = threading.Lock()
        self._recent: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()  # (model id, query) -> vector
        self._directions: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()  # (index token, entry id) -> direction
        self._recent_lock = threading.Lock()
        # BM25 runs here while the query is embedded: both release the GIL, and together they are most of a search.
        self._lexical_thread = ThreadPoolExecutor(1, thread_name_prefix="bm25")

    @property
    def embedder(self) -> Embedder:
        """The embedder of the store's vectors (the one queries must be encoded with)."""
        return self.embedder_at(self.store.meta("embedder", ""))

    def embedder_at(self, path: str, runtime: str = "") -> Embedder:
        """The embedder in folder `path`; "" is the configured one (the constructor's, else the settings').
        It runs as the store's vectors were made unless `runtime` says otherwise."""
        if not path and self._given:
            return self._given
        runtime = runtime or self.runtime
        if (path, runtime) not in self._embedders:
            self._embedders[path, runtime] = Embedder(path or self.settings.embedder or None, runtime=runtime,
                                                      cache_dir=self.cache_dir)
        return self._embedders[path, runtime]

    @property
    def runtime(self) -> str:
        """The configured embedder runtime, unless this store's vectors were made at the other precision:
        float32 and int8 vectors differ slightly, and queries must be encoded like the vectors they are
        compared with. The store records its runtime at its first write and when an embedder is switched in
        (which re-embeds everything at the configured precision); one written before int8 existed holds
        float32 vectors."""
        with self.store.snapshot() as db:
            return self._runtime_in(db)

    def _runtime_in(self, db) -> str:
        configured = self.settings.embedder_runtime
        recorded = db.meta("embedder_runtime") or ("onnx" if db.has_vectors() else configured)
        return configured if configured.endswith("int8") == recorded.endswith("int8") else recorded

    def close(self) -> None:
        self._lexical_thread.shutdown()
        self.store.close()

    # --- ingestion --------------------------------------------------------------------------------

    def add(self, locations: list[str | Path], progress: Progress | None = None, crawl: CrawlOptions | None = None,
            uploaded: bool = False, max_pages: int = 0) -> IngestReport:
        """Read each location (a help-centre URL, a file, a folder) and remember it as a source; adding one
        again syncs it. Every source is read before anything is written, and then all of them apply in one
        commit (else nothing does). `uploaded`: the files are the server's copies of uploads, known by name."""
        known = {s.name: s for s in self.store.sources()}
        return self._ingest([_registered(describe(str(loc), uploaded, max_pages), known) for loc in locations],
                            progress, crawl)

    def sync(self, names: list[str] | None = None, progress: Progress | None = None, crawl: CrawlOptions | None = None) -> IngestReport:
        """Read sources again (all of them when `names` is empty): new pages added, changed ones re-embedded,
        vanished ones removed, all in one commit; a source that cannot be read changes nothing and keeps the
        reason in its `error`."""
        known = {s.name: s for s in self.store.sources()}
        for name in names or []:
            if name not in known:
                raise IngestError(f"no source named {name!r} (see `supportbot kb sources`)")
        chosen = [known[n] for n in names] if names else [s for s in known.values() if s.kind != "upload"]
        for source in chosen:
            if source.kind == "upload":
                raise IngestError(f"{source.name}: an uploaded file; upload it again to update it")
        if not chosen:
            raise IngestError("no sources to sync: add a site, file or folder with `supportbot kb add` first")
        return self._ingest(chosen, progress, crawl)

    def sources(self) -> list[Source]:
        return self.store.sources()

    def _ingest(self, sources: list[Source], progress: Progress | None, crawl: CrawlOptions | None) -> IngestReport:
        started = time.perf_counter()
        progress = progress or _no_progress
        embedder_path = self.store.meta("embedder", "")
        embedder = self.embedder_at(embedder_path)
        options = self._load_options(embedder)
        reads: list[tuple[Source, SourceRead]] = []
        for source in sources:
            try:
                reads.append((source, read_source(source, options, crawl or CrawlOptions(), progress)))
            except IngestError as err:
                if source.added_at:  # a known source: remember why its sync failed
                    self.store.record_source_error(source.name, str(err))
                raise
        entries = {e.id: e for _, read in reads for e in read.entries}
        synced_at = _now()
        for source, read in reads:
            source.pages, source.synced_at, source.error = len(read.entries), synced_at, ""
            source.added_at = source.added_at or synced_at
            if source.kind == "upload":  # the server's copy is gone after this call
                source.location = source.name
            elif source.kind in ("file", "folder"):  # read as given (messages name it so), synced from anywhere
                source.location = str(Path(source.location).absolute())
        report = IngestReport(files=[s.location for s in sources], sources=[s.name for s in sources],
                              notes=[note for _, read in reads for note in read.notes])

        def also(db) -> list[int]:
            """Entries the synced sources no longer have go, and the sources are recorded, in the same commit."""
            removed: list[int] = []
            for source, read in reads:
                if read.complete:
                    for entry_id in sorted(db.source_entry_ids(source.name) - entries.keys()):
                        removed += db.delete_entry(entry_id)
                        report.removed += 1
                db.put_source(source)
            db.set_sources({e.id: e.source for e in entries.values()})
            return removed

        label = ", ".join(s.location for s in sources)
        return self._upsert(list(entries.values()), report, label, embedder_path, embedder, progress, started, also)

    def put(self, entry_id: str, title: str, answer: str, questions: list[str], category: str = "", url: str = "",
            source: str = "") -> IngestReport:
        """Upsert one FAQ entry given as values (an accepted suggestion), written exactly as `add` writes a file's
        entries: passages cut the same way, embedded, one atomic commit that every process searches at once."""
        started = time.perf_counter()
        embedder_path = self.store.meta("embedder", "")
        embedder = self.embedder_at(embedder_path)
        entry = faq_entry(entry_id, title, answer, questions, category, url, self._load_options(embedder))
        entry.source = source
        return self._upsert([entry], IngestReport(files=[]), f"entry {entry_id}", embedder_path, embedder, _no_progress, started)

    def _load_options(self, embedder: Embedder) -> LoadOptions:
        return LoadOptions(self.settings.passage_tokens, self.settings.max_field_chars, embedder.count_tokens)

    def _upsert(self, entries: list[Entry], report: IngestReport, label: str, embedder_path: str, embedder: Embedder,
                progress: Progress, started: float, also: Callable | None = None) -> IngestReport:
        """Write the entries whose content changed (`also(db)`, when given, makes more changes in the same
        commit and returns the uids it removed)."""
        report.entries, report.ids = len(entries), [e.id for e in entries]
        known = self.store.content_hashes(report.ids)
        changed = [e for e in entries if known.get(e.id) != e.content_hash()]
        report.added = sum(e.id not in known for e in changed)
        report.updated = len(changed) - report.added
        report.unchanged = len(entries) - len(changed)

        units = {e.id: self._units(e, embedder) for e in changed}
        report.embedded = self._embed_missing(embedder, {u.vector_key: embed_text(u.kind, u.title, u.text)
                                                         for us in units.values() for u in us if u.vector_key}, progress)

        def apply(db):
            if (db.meta("embedder") or "") != embedder_path:
                raise IngestError(f"{label}: the knowledge base switched embedders during this ingest; run it again")
            if not db.meta("embedder_runtime"):  # the first vectors: their precision stays with the store
                db.set_meta("embedder_runtime", embedder.runtime)
            removed, added = db.put_entries(changed, units)
            if also:
                removed += also(db)
            return removed, added

        if changed or also:
            self._commit(apply, progress)
        report.seconds = time.perf_counter() - started
        return report

    def remove(self, entry_id: str) -> bool:
        """Delete one entry; False when there is no such id."""
        if self.store.entry(entry_id) is None:
            return False
        self._commit(lambda db: (db.delete_entry(entry_id), []), _no_progress)
        return True

    def trial_copy(self, folder: str | Path, without: list[tuple[str, str]] = ()) -> KnowledgeBase:
        """A copy in `folder` to try a change on (a candidate retriever), leaving out the question variants
        `without` (entry id, text): held-out queries must not find themselves in the index."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        trial = KnowledgeBase(folder, self.settings)
        trial._given, trial._embedders, trial.cache_dir = self._given, self._embedders, self.cache_dir  # loaded once
        self.store.copy_to(trial.store)
        if without:
            trial._commit(lambda db: (db.delete_variants(list(without)), []), _no_progress)
        return trial

    def switch_embedder(self, path: str, progress: Progress | None = None) -> int:
        """Search with the embedder in folder `path` from now on ("" = the configured one): a promoted
        retriever, or the previous one on rollback, run at the configured precision. Its vectors for every
        unit go into the cache first (cached ones reused, searches meanwhile use the current index); then the
        units' vector keys, the recorded embedder and runtime, and a new index built beside the old one change
        in one transaction. Returns how many texts were embedded."""
        progress = progress or _no_progress
        embedder = self.embedder_at(path, self.settings.embedder_runtime)

        def keys(db) -> dict[int, tuple[str, str]]:
            return {uid: (vector_key(embedder, text), text) for uid, text in db.dense_unit_texts(embed_text)}

        with self.store.snapshot() as db:
            texts = dict(keys(db).values())
        embedded = self._embed_missing(embedder, texts, progress)

        def apply(db) -> None:
            now = keys(db)  # again: an ingest may have added units since
            missing = self.store.missing_vectors([key for key, _ in now.values()])
            late = {key: text for key, text in now.values() if key in missing}
            db.put_vectors(dict(zip(late, embedder.encode(list(late.values())))))
            db.set_vector_keys({uid: key for uid, (key, _) in now.items()})
            db.set_meta("embedder", path)
            db.set_meta("embedder_runtime", embedder.runtime)
            return None  # a new index for the new vectors, not a change to the current one

        self._commit(apply, progress)
        return embedded

    def _units(self, entry: Entry, embedder: Embedder) -> list[Unit]:
        embed_passages = entry.kind == "document" or self.settings.embed_answers
        units = [Unit(entry.id, "question", i, entry.title, q, vector_key(embedder, q)) for i, q in enumerate(entry.questions)]
        for i, p in enumerate(entry.passages):
            key = vector_key(embedder, embed_text("passage", p.title, p.text)) if embed_passages else None
            units.append(Unit(entry.id, "passage", i, p.title, p.text, key))
        return units

    def _embed_missing(self, embedder: Embedder, texts: dict[str, str], progress: Progress) -> int:
        """Embed the texts (by vector key) that have no cached vector; returns how many. Each chunk goes into
        the cache as soon as it is done: the cache is keyed by content, so an ingest cut short (a crash,
        Ctrl-C) loses at most one chunk and the next run resumes, while entries and index still change all
        at once."""
        missing = sorted(self.store.missing_vectors(list(texts)), key=lambda k: (len(texts[k]), k))
        for start in range(0, len(missing), EMBED_CHUNK):
            keys = missing[start : start + EMBED_CHUNK]
            matrix = embedder.encode([texts[k] for k in keys],
                                     progress=lambda done, _: progress("embed", start + done, len(missing)))
            with self.store.write() as db:
                db.put_vectors(dict(zip(keys, matrix)))
        return len(missing)

    def _commit(self, apply: Callable, progress: Progress) -> None:
        """Apply store changes and the matching index delta (`apply` returns the uids removed and added, or
        None for a new index); the new index file exists before the transaction commits, so every
        committed token has its file (until a later commit replaces it)."""
        with self._index_lock, self.store.write() as db:
            index = self._load_index(db, db.meta("index_token"))
            delta = apply(db)
            token = db.new_index_token()
            progress("index", 0, 1)
            if delta is None:
                index = self._build_index(db)
            else:
                removed, added = delta
                index.remove(removed)
                if added:
                    index.add(*db.vectors_for(added, self.embedder_in(db).dim))
                if not index.suits(self.settings.approximate_above):
                    index = self._build_index(db)
            index.save(self.folder / f"dense-{token}.faiss")
            db.set_meta("index_kind", index.kind)
            self._set_index(db, index, token)
        progress("index", 1, 1)
        for stale in self.folder.glob("dense-*.faiss*"):
            if stale.name != f"dense-{token}.faiss":
                stale.unlink(missing_ok=True)

    # --- the dense index --------------------------------------------------------------------------

    def dense_index(self) -> DenseIndex:
        """The index matching the store now; reloaded when another process has written."""
        token = self.store.index_token()
        if token == self._loaded[1] and self._loaded[0] is not None:
            return self._loaded[0]
        with self._index_lock, self.store.snapshot() as db:
            return self._load_index(db, db.meta("index_token"))

    def _load_index(self, db, token: str) -> DenseIndex:
        if token == self._loaded[1] and self._loaded[0] is not None:
            return self._loaded[0]
        path = self.folder / f"dense-{token}.faiss"
        try:
            index = DenseIndex.load(path, self.settings.ivf_nprobe)
        except RuntimeError:  # not written (a crash) or already replaced: the cached vectors rebuild it
            index = self._build_index(db)
        self._set_index(db, index, token)
        return index

    def _set_index(self, db, index: DenseIndex, token: str) -> None:
        self._loaded = (index, token, db.meta("embedder") or "", self._runtime_in(db))

    def _build_index(self, db) -> DenseIndex:
        dim = self.embedder_in(db).dim
        uids, matrix = db.vectors_for(db.all_dense_units(), dim)
        return DenseIndex.build(uids, matrix, dim, self.settings.approximate_above, self.settings.ivf_nprobe)

    def _loaded_index(self) -> tuple[DenseIndex, str, Embedder]:
        """(the index matching the store now, its token, the embedder its vectors come from), read together."""
        self.dense_index()
        index, token, path, runtime = self._loaded
        return index, token, self.embedder_at(path, runtime)

    # --- what searches derive from one version of the index -----------------------------------------

    def _derivation_table(self) -> dict[str, tuple[Callable, Callable, str]]:
        """name -> (read(db), make(what was read), when a newer index is out): made at the first search that
        needs it, not at ingest (an ingest never searches, and on a large knowledge base it reads every text or
        question vector). "wait": the search builds it; "stale": one made for an earlier version serves while
        the new one is built in the background (the speller: a vocabulary a write behind still corrects, and a
        large one takes seconds); "background": always built in the background (the entry classifier is
        cross-validated: up to a minute), the search going on without it meanwhile."""
        return {"speller": (_texts, Speller, "stale"),
                "prototypes": (self._question_vectors_in, lambda read: Prototypes(*read), "wait"),
                "classifier": (self._question_vectors_in, self._fit_classifier, "background")}

    def _derived_at(self, name: str, token: str):
        _, _, when = self._derivations[name]
        with self._derived_lock:
            held = self._derived.get(name)
            if held is not None and held[0] == token:
                return held[1]
            if when != "wait" and (held is not None or when == "background"):
                if name not in self._rebuilding:
                    self._rebuilding.add(name)
                    threading.Thread(target=self._build_aside, args=(name, token), daemon=True).start()
                return held[1] if held is not None else None
        return self._build_derived(name, token)

    def _build_aside(self, name: str, token: str) -> None:
        try:
            self._build_derived(name, token)
        except DatabaseError:  # the knowledge base was closed meanwhile: nobody needs it any more
            pass

    def _build_derived(self, name: str, token: str):
        """Read in one read transaction, made outside it; None if the store has moved on from `token`."""
        read, make, _ = self._derivations[name]
        with self.store.snapshot() as db:
            current = db.meta("index_token") == token
            data = read(db) if current else None
        value = make(data) if current else None  # a classifier that does not help is None, and kept as such
        with self._derived_lock:
            self._rebuilding.discard(name)
            if current:
                self._derived[name] = token, value
        return value

    def prepare(self) -> None:
        """Build now, for the index as it is, everything searches derive from it (the speller, the prototypes,
        the entry classifier): an evaluation scores every query alike, and a server starts ready."""
        _, token, _ = self._loaded_index()
        for name in self._derivations:
            held = self._derived.get(name)
            if held is None or held[0] != token:
                self._build_derived(name, token)

    def _question_vectors_in(self, db) -> tuple[list[str], np.ndarray]:
        """(entry id of each question variant, their vectors)."""
        units = db.question_entries()
        _, matrix = db.vectors_for([(uid, key) for uid, key, _ in units], self.embedder_in(db).dim)
        return [entry_id for _, _, entry_id in units], matrix

    def _fit_classifier(self, read: tuple[list[str], np.ndarray]) -> EntryClassifier | None:
        s = self.settings
        return fit_entry_classifier(*read, Scoring(s.variant_vote, s.prototype_weight, s.prototype_full_up_to))

    def _entry_votes(self, vector: np.ndarray, token: str, dense: list[tuple[str, float, str]],
                     dense_hits: list[tuple[int, float]], units: dict[int, tuple[str, str]]) -> dict[str, float]:
        """What each entry's score gets beyond its nearest unit's cosine: the vote of its other matching
        variants, the pull towards its prototype, and the entry classifier's say where one is kept."""
        s = self.settings
        votes = variant_votes(dense_hits, units, s.variant_vote)
        prototypes = self._derived_at("prototypes", token) if s.prototype_weight > 0 else None
        extra = [prototypes.pull(vector, dense, s.prototype_weight, s.prototype_full_up_to)] if prototypes is not None else []
        classifier = self._derived_at("classifier", token) if s.entry_classifier else None
        if classifier is not None:
            said = classifier.scores(vector)
            extra.append({entry_id: said[entry_id] for entry_id, _, _ in dense if entry_id in said})
        for more in extra:
            for entry_id, value in more.items():
                votes[entry_id] = votes.get(entry_id, 0.0) + value
        return votes

    def embedder_in(self, db) -> Embedder:
        return self.embedder_at(db.meta("embedder") or "", self._runtime_in(db))

    def question_vectors(self, limit: int = 0) -> tuple[str, Embedder, np.ndarray]:
        """(index token, embedder, vectors of the FAQ question variants; at most `limit`, a random sample), read
        together so that none is from before an embedder switch and another from after it: what the knowledge
        base is about, for the out-of-scope guard."""
        with self.store.snapshot() as db:
            units = [(uid, key) for uid, key, _ in db.question_entries()]
            if limit and len(units) > limit:
                units = [units[i] for i in sorted(np.random.default_rng(0).choice(len(units), limit, replace=False))]
            embedder = self.embedder_in(db)
            return db.meta("index_token") or "", embedder, db.vectors_for(units, embedder.dim)[1]

    # --- reading ----------------------------------------------------------------------------------

    def search(self, query: str, k: int = 5, mode: str = "hybrid", context: str = "", context_weight: float = 0.0,
               about: str = "", about_weight: float = 0.0) -> list[SearchHit]:
        """Entries best first. `mode` is "hybrid", "dense" or "lexical" (the last two for comparison).

        `context` is text the query leans on (a follow-up's earlier question): the lexical side reads both, and
        the query vector is pulled towards the context's by `context_weight` (the query keeps weight 1), so the
        message's own words still decide between the entries of its topic. `about` is an entry the query is
        likely about (the one a conversation is on): the query vector is pulled towards that entry's direction
        (`entry_direction`) by `about_weight`; the lexical side reads the query alone."""
        if not _clean(query):
            return []
        n = self.settings.candidates
        index, token, embedder = self._loaded_index() if mode != "lexical" else (None, self.store.index_token(), None)
        query, context = self._as_searched(query, token), self._as_searched(context, token) if context else context
        words = f"{context} {query}"[-MAX_QUERY_CHARS:] if context else query
        lexical = (self._lexical_thread.submit(self.store.lexical, words, n, self.settings.lexical_budget, token)
                   if mode != "dense" else None)
        vector = self._leaning_vector(query, context, context_weight, embedder) if index else None
        if index and about and about_weight > 0:
            vector = _normalised(vector + about_weight * self.entry_direction(about, token, embedder.dim))
        dense_hits = index.search(vector, n) if index else []
        lexical_hits = lexical.result() if lexical else []
        units = self.store.unit_entries(list({uid for uid, _ in dense_hits + lexical_hits}))
        dense = best_per_entry(dense_hits, units)
        votes = self._entry_votes(vector, token, dense, dense_hits, units) if index else {}
        ranked = fuse(dense, best_per_entry(lexical_hits, units), self.settings, mode, votes)[:k]
        info = self.store.entry_info([c.entry_id for c in ranked])
        return [
            SearchHit(
                entry_id=c.entry_id, title=info[c.entry_id][0], score=c.score, confidence=c.confidence,
                dense=c.dense, margin=c.margin, lexical_rank=c.lexical_rank, matched=c.matched,
                category=info[c.entry_id][1], url=info[c.entry_id][2],
            )
            for c in ranked
            if c.entry_id in info
        ]

    def _leaning_vector(self, query: str, context: str, weight: float, embedder: Embedder) -> np.ndarray:
        vector = self.query_vector(query, embedder)
        if not context or weight <= 0:
            return vector
        return _normalised(vector + weight * self.query_vector(context, embedder))

    def entry_direction(self, entry_id: str, token: str, dim: int) -> np.ndarray:
        """The normalised mean of an entry's unit vectors (its variants and passages): the direction of what
        it is about; zeros for an entry that is gone. Remembered per index version for the last few entries."""
        key = (token, entry_id)
        with self._recent_lock:
            if key in self._directions:
                self._directions.move_to_end(key)
                return self._directions[key]
        with self.store.snapshot() as db:
            _, matrix = db.vectors_for(db.entry_vector_keys(entry_id), dim)
        direction = _normalised(matrix.mean(axis=0)) if len(matrix) else np.zeros(dim, np.float32)
        with self._recent_lock:
            self._directions[key] = direction
            while len(self._directions) > RECENT_QUERIES:
                self._directions.popitem(last=False)
        return direction

    def _as_searched(self, text: str, token: str) -> str:
        """The text a search reads: whitespace collapsed, cut to MAX_QUERY_CHARS, misspellings corrected."""
        speller = self._derived_at("speller", token) if self.settings.spelling else None
        return speller.correct(_clean(text)) if speller is not None else _clean(text)

    def prefetch(self, queries: list[str]) -> None:
        """Make the vectors of queries about to be searched in one batch (one forward pass instead of one per
        query: most of the time a run of many searches takes, such as building training examples); at most
        RECENT_QUERIES, the searches then find them remembered."""
        _, token, embedder = self._loaded_index()
        self._query_vectors([self._as_searched(q, token) for q in queries[:RECENT_QUERIES]], embedder)

    def query_vector(self, query: str, embedder: Embedder) -> np.ndarray:
        """The query's vector under `embedder`, remembered for the last few queries: a turn's out-of-scope check
        reads the vectors its search has just made (about 4 ms each on 2 cores)."""
        return self._query_vectors([query], embedder)[0]

    def _query_vectors(self, queries: list[str], embedder: Embedder) -> list[np.ndarray]:
        """`query_vector` of several queries; those not remembered are encoded together."""
        keys = [(embedder.model_id, _clean(q)) for q in queries]
        with self._recent_lock:
            known = {key: self._recent[key] for key in keys if key in self._recent}
            for key in known:
                self._recent.move_to_end(key)
        todo = [key for key in dict.fromkeys(keys) if key not in known]
        if todo:
            known |= dict(zip(todo, embedder.encode([text for _, text in todo])))
            with self._recent_lock:
                for key in todo:
                    self._recent[key] = known[key]
                while len(self._recent) > RECENT_QUERIES:
                    self._recent.popitem(last=False)
        return [known[key] for key in keys]

    def entry(self, entry_id: str) -> Entry | None:
        return self.store.entry(entry_id)

    def entries(self, category: str | None = None, contains: str | None = None, limit: int | None = None) -> list[EntrySummary]:
        return self.store.entries(category, contains, limit)

    def stats(self) -> dict:
        counts = self.store.counts()
        size = sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())
        return {**counts, "index_kind": self.store.meta("index_kind", "flat"), "disk_bytes": size}


def _normalised(vector: np.ndarray) -> np.ndarray:
    return (vector / (np.linalg.norm(vector) or 1.0)).astype(np.float32)


def _clean(text: str) -> str:
    return " ".join(text.split())[:MAX_QUERY_CHARS]


def _texts(db) -> list[str]:
    return list(db.unit_texts())


def _registered(source: Source, known: dict[str, Source]) -> Source:
    """The record of a source being added: the known one when it is the same location (adding it again syncs
    it; an upload is the same when its name is), else a new one whose name no other location holds."""
    name, n = source.name, 1
    place = source.location if source.kind == "web" else str(Path(source.location).absolute())
    while name in known:
        same = known[name]
        if same.kind == source.kind and (same.location == place or source.kind == "upload"):
            return Source(**{**vars(same), "location": source.location, "max_pages": source.max_pages or same.max_pages})
        n += 1
        name = f"{source.name} ({n})"
    source.name = name
    return source


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def embed_text(kind: str, title: str, text: str) -> str:
    """What a unit's vector encodes: questions as asked, passages with their title, which carries the topic."""
    return text if kind == "question" else f"{title}\n{text}"


def vector_key(embedder: Embedder, text: str) -> str:
    """The cache key of a text's vector: the same text under another model is another vector."""
    return hashlib.sha256(f"{embedder.model_id}\0{text}".encode()).hexdigest()[:32]


def _no_progress(stage: str, done: int, total: int) -> None:
    pass
