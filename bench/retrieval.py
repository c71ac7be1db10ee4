"""Retrieval benchmark: quality, ingest throughput, query latency, memory and disk of the knowledge base.

What it measures, always through the product's own code (`retrieval.KnowledgeBase`, `kb.add`, `kb.search`,
`retrieval.load_queries`, `retrieval.evaluate_retrieval`):

1. Quality on the demo data: `data/kb` is ingested and `data/eval/retrieval.csv` is evaluated in the
   "dense", "lexical" and "hybrid" modes (top-1, recall@5, MRR, latency p50/p95), plus the ratio of
   hybrid's top-1 to dense's. With the int8 embedder (the default), again with its float32 baseline.
2. Ingest throughput: entries/s for N short synthetic FAQ entries (one question, a one-sentence answer),
   written as a CSV and ingested cold (a fresh knowledge base, so an empty embedding cache), median of
   several runs, with the time split into embedding, index and the rest (parse, hash, SQLite). Re-ingesting
   the same unchanged file is timed too: it must embed nothing. Target: >= 300 entries/s on 2 cores. With
   the int8 embedder, its float32 baseline ingests the same file in alternate runs, and the ratio is shown.
3. Query latency of hybrid `kb.search` at two sizes (1k and 100k synthetic entries; `--quick`: 1k and 10k),
   over ~200 varied queries after a few warm-up ones, with the parts shown apart: query embedding
   (`kb.embedder.encode([q])`), dense index search, lexical search (`kb.store.lexical`) and the rest
   (fusion and the SQLite look-ups). Target: p50 <= 15 ms at 100k entries. The dense index's recall@10
   against an exact flat search over the same stored vectors is reported (for an IVF index, past
   `RetrievalSettings.approximate_above` vectors, at nprobe 8, 16 and 32 with their latencies).
4. Memory and disk: the process's peak RSS after each size, and `kb.stats()["disk_bytes"]`.
0. Before all of that, the query encoder's runtimes side by side on the same queries: the product's
   (ONNX Runtime with int8 weights by default, `RetrievalSettings.embedder_runtime`), float32 ONNX Runtime
   and sentence-transformers on PyTorch, single-query latency, batch throughput and the minimum cosine
   between the product's vectors and PyTorch's.

Every knowledge base lives in its own fresh temporary folder (under the system temp dir, never the home
folder), removed afterwards. One embedder is loaded once and shared, so model loading (reported apart)
is not counted as ingest or query time. Timings are medians (p50) and p95 over many repetitions.

Run from the repository root:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/retrieval.py            # full: 1k and 100k entries (10+ minutes)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/retrieval.py --quick    # 1k and 10k entries (a few minutes)

With `--database postgresql://...` every size of sections 3 and 4 is measured twice side by side, the knowledge
base in a SQLite file and then in that PostgreSQL database (each in a new schema, dropped afterwards).

Options: `--out PATH` (JSON results, default bench/results/retrieval.json), `--sizes 1000,100000`,
`--queries 200`, `--approximate-above N` (override the IVF threshold, e.g. to see IVF in a quick run),
`--torch-threads N`, `--runtime onnx|torch` (the embedder runtime for sections 1-4). The machine is shared and noisy: a CPU probe (embedding rate of a fixed batch) is
taken before each section and printed, so that a slow section can be told from a busy machine.
The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
# This file is named like the product package: drop its own folder from the path (Python puts it first
# when the file runs as a script) so that `import retrieval` finds the package, not this file.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from retrieval import Embedder, KnowledgeBase, RetrievalSettings, evaluate_perturbed, evaluate_retrieval, load_queries  # noqa: E402
from retrieval.embedder import RUNTIMES  # noqa: E402
from retrieval.database import Database  # noqa: E402
from retrieval.store import schema_name  # noqa: E402

MODES = ("dense", "lexical", "hybrid")
MODE_LABELS = {"dense": "dense-only", "lexical": "lexical-only", "hybrid": "hybrid"}
NPROBES = (8, 16, 32)
INGEST_TARGET_PER_S = 300.0
LATENCY_TARGET_MS = 15.0
LATENCY_TARGET_SIZE = 100_000
WARMUP_QUERIES = 5
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f}s] {message}", file=sys.stderr, flush=True)


# --- measurement helpers ------------------------------------------------------------------------------


@dataclass
class Dist:
    """Percentiles of a set of timings, in milliseconds."""

    p50: float
    p95: float
    n: int

    @classmethod
    def of(cls, values_ms: list[float]) -> Dist:
        arr = np.asarray(values_ms, dtype=float)
        return cls(round(float(np.percentile(arr, 50)), 3), round(float(np.percentile(arr, 95)), 3), len(arr))


def timed_ms(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return (time.perf_counter() - started) * 1000, result


def embed_rate(embedder: Embedder, n: int = 256) -> float:
    """Short sentences embedded per second right now: a probe of how busy the CPU is (it is shared)."""
    texts = [f"How do I return item number {i} of my order after {i % 40} days?" for i in range(n)]
    started = time.perf_counter()
    embedder.encode(texts)
    return round(n / (time.perf_counter() - started), 1)


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class TimedEmbedder(Embedder):
    """The product's embedder, accumulating the time spent in `encode` (to split ingest time)."""

    seconds: float = 0.0

    def encode(self, texts, progress=None):
        started = time.perf_counter()
        try:
            return super().encode(texts, progress)
        finally:
            self.seconds += time.perf_counter() - started


class IngestClock:
    """A `kb.add` progress callback: times the "index" stage and logs embedding progress now and then."""

    def __init__(self, label: str):
        self.label = label
        self.index_started: float | None = None
        self.index_seconds = 0.0
        self._last_log = time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if stage == "index":
            if done == 0:
                self.index_started = now
            elif self.index_started is not None:
                self.index_seconds = now - self.index_started
        if stage == "embed" and now - self._last_log > 15:
            self._last_log = now
            log(f"{self.label}: embedded {done:,}/{total:,}")


# --- synthetic FAQ entries and queries ----------------------------------------------------------------

PRODUCTS = (
    "cast-iron skillet", "linen duvet cover", "patio umbrella", "memory foam pillow", "dining table",
    "bath towel set", "table lamp", "garden hose reel", "chef's knife", "bed frame", "outdoor sectional",
    "throw blanket", "cutting board", "floor lamp", "bookshelf", "porch swing", "shower curtain",
    "stand mixer", "dutch oven", "area rug", "desk chair", "wardrobe", "pendant light", "planter box",
    "fire pit", "coffee grinder", "tea kettle", "mattress topper", "wall mirror", "bar stool",
    "sofa bed", "nightstand", "sheet set", "bath mat", "string lights", "lounge chair", "knife block",
    "saucepan set", "picture frame", "hammock",
)
ADJECTIVES = (
    "blue", "queen-size", "large", "stainless steel", "walnut", "grey", "vintage", "cordless", "king-size",
    "compact", "weatherproof", "hand-painted", "organic cotton", "black", "two-piece", "oak", "ceramic",
    "velvet", "rattan", "non-stick",
)
VERBS = (  # (verb phrase, category)
    ("return", "Returns"), ("exchange", "Returns"), ("track", "Shipping"), ("cancel", "Orders"),
    ("assemble", "Furniture"), ("clean", "Products"), ("repair", "Warranty"), ("reorder", "Orders"),
    ("gift-wrap", "Orders"), ("price-match", "Payments"), ("ship", "Shipping"), ("pick up", "Shipping"),
    ("get a refund for", "Refunds"), ("claim the warranty on", "Warranty"), ("replace a part of", "Warranty"),
    ("schedule delivery of", "Shipping"), ("change the address for", "Orders"), ("pay in four for", "Payments"),
    ("recycle", "Sustainability"), ("review", "Products"),
)
CONTEXTS = (
    "after 30 days", "without the original box", "to Canada", "with a gift card", "if it arrived damaged",
    "before it ships", "as a Plus member", "during the holiday sale", "to a PO box", "if a part is missing",
    "bought as a gift", "if the colour looks different", "on a business account", "to Alaska",
    "after assembling it", "from the clearance section", "ordered as a guest", "with a promo code",
    "bought in the warehouse", "that was back-ordered",
)
QUESTION_TEMPLATES = (
    "How do I {verb} my {adj} {product} {context}?",
    "Can I {verb} a {adj} {product} {context}?",
    "Is it possible to {verb} the {adj} {product} {context}?",
    "What happens if I want to {verb} a {adj} {product} {context}?",
    "Who do I contact to {verb} my {adj} {product} {context}?",
    "How long does it take to {verb} a {adj} {product} {context}?",
    "Do you charge a fee to {verb} a {adj} {product} {context}?",
    "Where can I {verb} my {adj} {product} {context}?",
)
ANSWER_TEMPLATES = (
    "To {verb} a {product} {context}, open My Account > Orders and pick the item; it takes about {days} business days.",
    "Yes, you can {verb} your {product} {context} as long as you ask within {days} days of delivery.",
    "Chat with us or call 1-800-555-0142 to {verb} a {product} {context}; a ${fee} fee applies unless you are a Plus member.",
    "Requests to {verb} a {product} {context} are handled by our {team} team within {hours} hours.",
    "You can {verb} a {product} {context} online, and we email a confirmation within {hours} hours.",
)
TEAMS = ("returns", "delivery", "warranty", "customer care", "billing", "furniture")
QUERY_TEMPLATES = (
    "{verb} {product} {context}",
    "can i {verb} my {adj} {product}",
    "{adj} {product} {context} - how do i {verb} it?",
    "need help to {verb} a {product}",
    "whats the fee to {verb} a {product} {context}",
    "how long to {verb} {product}",
    "{product} question: {verb} {context}?",
    "is there a way to {verb} the {product} {context}",
)


@dataclass(frozen=True)
class SyntheticFaq:
    """Varied, realistic-looking short FAQ entries from word lists, reproducible from a seed.

    Questions are distinct (drawn without replacement from the product of the word lists), so every entry
    costs one embedding and the cold-ingest rate is not flattered by the embedding cache."""

    seed: int = 20240601

    def rows(self, n: int) -> list[dict[str, str]]:
        rng = random.Random(self.seed)
        dims = (len(QUESTION_TEMPLATES), len(VERBS), len(ADJECTIVES), len(PRODUCTS), len(CONTEXTS))
        space = int(np.prod(dims))
        if n > space:
            raise ValueError(f"at most {space:,} distinct synthetic entries")
        rows = []
        for i, code in enumerate(rng.sample(range(space), n)):
            t, v, a, p, c = _unrank(code, dims)
            verb, category = VERBS[v]
            words = {"verb": verb, "adj": ADJECTIVES[a], "product": PRODUCTS[p], "context": CONTEXTS[c]}
            answer = rng.choice(ANSWER_TEMPLATES).format(
                **words, days=rng.choice((3, 5, 7, 14, 30, 45)), fee=rng.choice((5, 9, 15, 25, 49)),
                hours=rng.choice((2, 24, 48, 72)), team=rng.choice(TEAMS),
            )
            rows.append({
                "id": f"syn-{i:06d}",
                "question": QUESTION_TEMPLATES[t].format(**words),
                "answer": answer,
                "title": f"{verb.capitalize()} a {PRODUCTS[p]} {CONTEXTS[c]}",
                "category": category,
            })
        return rows

    def write_csv(self, path: Path, n: int) -> Path:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "question", "answer", "title", "category"])
            writer.writeheader()
            writer.writerows(self.rows(n))
        return path

    def queries(self, n: int) -> list[str]:
        """Queries phrased unlike the stored questions (customers' shorthand), from another seed."""
        rng = random.Random(self.seed + 1)
        out: list[str] = []
        while len(out) < n:
            query = rng.choice(QUERY_TEMPLATES).format(
                verb=rng.choice(VERBS)[0], adj=rng.choice(ADJECTIVES), product=rng.choice(PRODUCTS),
                context=rng.choice(CONTEXTS),
            )
            if query not in out:
                out.append(query)
        return out


def _unrank(code: int, dims: tuple[int, ...]) -> list[int]:
    digits = []
    for size in reversed(dims):
        code, digit = divmod(code, size)
        digits.append(digit)
    return digits[::-1]


# --- results ------------------------------------------------------------------------------------------


@dataclass
class EncoderRow:
    runtime: str
    query: Dist  # one short query per call, ms
    texts_per_s: float  # batches of the product's batch size, short FAQ questions


@dataclass
class Encoders:
    rows: list[EncoderRow]
    min_cosine: float  # between the runtimes' vectors for the same texts
    query_speedup: float  # torch p50 / product p50


@dataclass
class Quality:
    runtime: str
    entries: int
    queries_file: str
    rows: list[dict]  # RetrievalReport.summary() per mode
    hybrid_vs_dense_top1: float
    # hybrid top-1 with the queries perturbed (`--perturb all`), spelling correction on (the default) and off
    perturbed: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class IngestRun:
    entries: int
    seconds: float
    embedded: int
    embed_seconds: float
    index_seconds: float

    @property
    def per_second(self) -> float:
        return self.entries / self.seconds if self.seconds else float("inf")


@dataclass
class Ingest:
    """Cold ingest of N synthetic entries (median run of `runs`) and unchanged re-ingest times."""

    entries: int
    runs: list[IngestRun]
    reingest_seconds: list[float]
    reingest_embedded: list[int]
    runtime: str = ""

    @property
    def median_run(self) -> IngestRun:
        return sorted(self.runs, key=lambda r: r.seconds)[len(self.runs) // 2]

    def summary(self) -> dict:
        m = self.median_run
        return {
            "runtime": self.runtime,
            "entries": self.entries,
            "runs": len(self.runs),
            "entries_per_s": round(m.per_second, 1),
            "seconds": round(m.seconds, 3),
            "embed_seconds": round(m.embed_seconds, 3),
            "index_seconds": round(m.index_seconds, 3),
            "other_seconds": round(m.seconds - m.embed_seconds - m.index_seconds, 3),
            "reingest_seconds": round(statistics.median(self.reingest_seconds), 3),
            "reingest_embedded": max(self.reingest_embedded),
            "all_runs": [asdict(r) for r in self.runs],
        }


@dataclass
class ProbeRow:
    """The dense index's agreement with an exact search: recall@10 and single-query latency."""

    index: str
    nprobe: int | None
    recall_at_10: float
    latency: Dist


@dataclass
class Scale:
    engine: str  # where the knowledge base's store is: "sqlite" or "postgresql"
    entries: int
    vectors: int
    index_kind: str
    build: Ingest
    latency: dict[str, Dist]  # "hybrid", "embed", "dense", "lexical", "other"
    probes: list[ProbeRow] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    rss_mib: float = 0.0
    disk_bytes: int = 0


# --- the benchmark ------------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    embedder: TimedEmbedder
    synthetic: SyntheticFaq = field(default_factory=SyntheticFaq)
    cpu_probes: dict[str, float] = field(default_factory=dict)  # embed_rate() before each section

    def probe_cpu(self, when: str) -> None:
        self.cpu_probes[when] = rate = embed_rate(self.embedder)
        log(f"cpu probe {when}: {rate:.0f} short sentences/s")

    @cached_property
    def float_embedders(self) -> dict[str, TimedEmbedder]:
        """The float32 ONNX embedder beside an int8 product one (the int8 baseline), else nothing."""
        if self.embedder.runtime != "onnx-int8":
            return {}
        return {"onnx": TimedEmbedder(self.embedder.path, self.embedder.batch_size, "onnx", self.embedder.cache_dir)}

    def settings(self) -> RetrievalSettings:
        if self.args.approximate_above is None:
            return RetrievalSettings()
        return RetrievalSettings(approximate_above=self.args.approximate_above)

    @contextmanager
    def fresh_kb(self, label: str, embedder: Embedder | None = None, database: str = "") -> Iterator[tuple[KnowledgeBase, Path]]:
        """A knowledge base in its own new temporary folder (removed afterwards), and that folder; with a
        `database` URL its store is a new schema there (dropped afterwards)."""
        with tempfile.TemporaryDirectory(prefix=f"supportbot-bench-{label}-") as tmp:
            folder = Path(tmp) / (f"bench-{Path(tmp).name[-8:]}" if database else "kb")
            kb = KnowledgeBase(folder, self.settings(), embedder=embedder or self.embedder, database=database)
            try:
                yield kb, Path(tmp)
            finally:
                kb.close()
                if database:
                    drop_schema(database, schema_name(folder.name))

    def ingest(self, kb: KnowledgeBase, paths: list[Path], label: str) -> IngestRun:
        clock = IngestClock(label)
        embedder = kb.embedder  # a TimedEmbedder
        embed_before = embedder.seconds
        report = kb.add(paths, progress=clock)
        return IngestRun(report.entries, report.seconds, report.embedded, embedder.seconds - embed_before, clock.index_seconds)

    def reingest(self, kb: KnowledgeBase, path: Path, label: str, ingest: Ingest) -> None:
        for _ in range(self.args.repeats):
            run = self.ingest(kb, [path], label)
            ingest.reingest_seconds.append(run.seconds)
            ingest.reingest_embedded.append(run.embedded)


def drop_schema(url: str, schema: str) -> None:
    db = Database(url)
    try:
        db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        db.close()


def warm_up(kb: KnowledgeBase, queries: list[str]) -> None:
    for query in queries:
        for mode in MODES:
            kb.search(query, k=10, mode=mode)


def eval_csv(tmp: Path) -> Path:
    """data/eval/retrieval.csv, or the concatenation of its parts while it does not exist yet."""
    whole = ROOT / "data/eval/retrieval.csv"
    if whole.exists():
        return whole
    parts = sorted((ROOT / "data/eval").glob("retrieval_part_*.csv"))
    if not parts:
        raise SystemExit("no data/eval/retrieval.csv nor data/eval/retrieval_part_*.csv")
    lines = parts[0].read_text(encoding="utf-8-sig").splitlines()[:1]
    for part in parts:
        lines += [line for line in part.read_text(encoding="utf-8-sig").splitlines()[1:] if line.strip()]
    merged = tmp / "retrieval.csv"
    merged.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return merged


def bench_encoders(bench: Bench, queries: list[str]) -> Encoders:
    """The product's runtime and PyTorch on the same queries, alternating which goes first."""
    runtimes = {"torch": Embedder(bench.embedder.path, bench.embedder.batch_size), **bench.float_embedders,
                bench.embedder.runtime: bench.embedder}
    texts = [row["question"] for row in bench.synthetic.rows(1_024)]
    for embedder in runtimes.values():
        embedder.encode(texts[:64])
    samples: dict[str, list[float]] = {name: [] for name in runtimes}
    for i, query in enumerate(queries):
        for name in list(runtimes)[:: 1 if i % 2 else -1]:
            samples[name].append(timed_ms(runtimes[name].encode, [query])[0])
    rates = {name: len(texts) / (timed_ms(e.encode, texts)[0] / 1000) for name, e in runtimes.items()}
    vectors = [e.encode(texts[:256] + queries) for e in runtimes.values()]
    rows = [EncoderRow(name, Dist.of(samples[name]), round(rates[name], 1)) for name in runtimes]
    return Encoders(rows, round(float(np.min(np.sum(vectors[0] * vectors[-1], axis=1))), 6),
                    round(rows[0].query.p50 / rows[-1].query.p50, 2))


def bench_quality(bench: Bench, embedder: Embedder, perturbed: bool = False) -> Quality:
    """`perturbed`: also the hybrid top-1 of the queries perturbed, spelling correction on and off."""
    with bench.fresh_kb("quality", embedder) as (kb, tmp):
        log(f"quality: ingesting data/kb ({embedder.runtime})")
        kb.add([ROOT / "data/kb"])
        path = eval_csv(tmp)
        rows = load_queries(path, kb)
        warm_up(kb, [r["query"] for r in rows[:WARMUP_QUERIES]])
        results = []
        for mode in MODES:
            log(f"quality: evaluating {len(rows)} queries, mode {mode}")
            r = evaluate_retrieval(kb, rows, mode=mode)
            results.append(r.summary())
        by_mode = {r["mode"]: r for r in results}
        ratio = by_mode["hybrid"]["top1"] / by_mode["dense"]["top1"] if by_mode["dense"]["top1"] else float("inf")
        noisy = {}
        for spelling in (True, False) if perturbed else ():
            log(f"quality: the same queries perturbed, spelling correction {'on' if spelling else 'off'}")
            kb.settings = replace(kb.settings, spelling=spelling)
            clean = by_mode["hybrid"]["top1"] if spelling else evaluate_retrieval(kb, rows).top1
            noisy[f"spelling {'on' if spelling else 'off'}"] = {"clean": clean} | {
                kind: r["top1"] for kind, r in evaluate_perturbed(kb, rows, "all").items()}
        return Quality(embedder.runtime, kb.stats()["entries"], str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else "parts",
                       results, round(ratio, 3), noisy)


def bench_ingest(bench: Bench, n: int) -> list[Ingest]:
    """Cold ingest of n entries, `repeats` times, each into a fresh knowledge base; then re-ingests. The
    product's embedder first, then (for int8) its float32 baseline, alternating run by run."""
    embedders = [bench.embedder, *bench.float_embedders.values()]
    results = [Ingest(n, [], [], [], e.runtime) for e in embedders]
    for i in range(bench.args.repeats):
        for embedder, result in zip(embedders, results):
            with bench.fresh_kb(f"ingest{n}", embedder) as (kb, tmp):
                path = bench.synthetic.write_csv(tmp / "faq.csv", n)
                run = bench.ingest(kb, [path], f"ingest {n}")
                result.runs.append(run)
                log(f"ingest {n} ({embedder.runtime}): run {i + 1}: {run.per_second:.0f} entries/s")
                if i == 0:
                    bench.reingest(kb, path, f"re-ingest {n}", result)
    return results


def measure_latency(kb: KnowledgeBase, queries: list[str]) -> dict[str, Dist]:
    """Per query: hybrid search end to end, and its parts timed alone (order alternated per query)."""
    n = kb.settings.candidates
    samples: dict[str, list[float]] = {name: [] for name in ("hybrid", "embed", "dense", "lexical", "other")}

    def parts(query: str) -> tuple[float, float, float]:
        embed_ms, matrix = timed_ms(kb.embedder.encode, [query])
        index = kb.dense_index()
        dense_ms, _ = timed_ms(index.search, matrix[0], n)
        lexical_ms, _ = timed_ms(kb.store.lexical, query, n, kb.settings.lexical_budget)
        return embed_ms, dense_ms, lexical_ms

    for i, query in enumerate(queries):
        if i % 2:
            split = parts(query)
            total, _ = timed_ms(kb.search, query, 10, mode="hybrid")
        else:
            total, _ = timed_ms(kb.search, query, 10, mode="hybrid")
            split = parts(query)
        for name, value in zip(("hybrid", "embed", "dense", "lexical"), (total, *split)):
            samples[name].append(value)
        samples["other"].append(max(0.0, total - sum(split)))
    return {name: Dist.of(values) for name, values in samples.items()}


def probe_dense_index(kb: KnowledgeBase, queries: list[str], nprobes: tuple[int, ...]) -> list[ProbeRow]:
    """Recall@10 of the product's dense index against an exact flat search over the same stored vectors."""
    dim = kb.embedder.dim
    with kb.store.snapshot() as db:
        uids, matrix = db.vectors_for(db.all_dense_units(), dim)
    qvecs = kb.embedder.encode(queries)
    exact = faiss.IndexFlatIP(dim)
    exact.add(matrix)
    k = min(10, len(uids))
    _, rows = exact.search(qvecs, k)
    truth = [set(uids[r[r >= 0]].tolist()) for r in rows]

    def probe(label: str, nprobe: int | None, search: Callable[[np.ndarray], list[int]]) -> ProbeRow:
        latencies, recalls = [], []
        for qvec, expected in zip(qvecs, truth):
            ms, found = timed_ms(search, qvec)
            latencies.append(ms)
            recalls.append(len(expected & set(found)) / k)
        return ProbeRow(label, nprobe, round(float(np.mean(recalls)), 4), Dist.of(latencies))

    out = [probe("exact flat (reference)", None, lambda q: uids[exact.search(q.reshape(1, -1), k)[1][0]].tolist())]
    index = kb.dense_index()
    if isinstance(index.index, faiss.IndexIVF):
        try:
            for nprobe in nprobes:
                index.set_nprobe(nprobe)
                out.append(probe(index.kind, nprobe, lambda q: [uid for uid, _ in index.search(q, k)]))
        finally:
            index.set_nprobe(kb.settings.ivf_nprobe)
    else:
        out.append(probe(f"product ({index.kind})", None, lambda q: [uid for uid, _ in index.search(q, k)]))
    return out


def bench_scale(bench: Bench, n: int, queries: list[str], database: str = "") -> Scale:
    engine = "postgresql" if database else "sqlite"
    with bench.fresh_kb(f"scale{n}", database=database) as (kb, tmp):
        path = bench.synthetic.write_csv(tmp / "faq.csv", n)
        log(f"scale {n:,} ({engine}): cold ingest")
        build = Ingest(n, [bench.ingest(kb, [path], f"scale {n:,}")], [], [])
        log(f"scale {n:,}: {build.runs[0].per_second:.0f} entries/s; re-ingesting unchanged x{bench.args.repeats}")
        bench.reingest(kb, path, f"re-ingest {n:,}", build)
        stats = kb.stats()
        warm_up(kb, queries[:WARMUP_QUERIES])
        log(f"scale {n:,}: timing {len(queries) - WARMUP_QUERIES} queries")
        result = Scale(engine, n, stats["vectors"], stats["index_kind"], build, measure_latency(kb, queries[WARMUP_QUERIES:]))
        result.peak_rss_mib, result.rss_mib, result.disk_bytes = peak_rss_mib(), current_rss_mib(), stats["disk_bytes"]
        log(f"scale {n:,}: dense index ({stats['index_kind']}) against exact search")
        result.probes = probe_dense_index(kb, queries[WARMUP_QUERIES:], NPROBES)
        return result


# --- report -------------------------------------------------------------------------------------------


def table(title: str, headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    rule = "-" * len(line(headers))
    return "\n".join([f"\n{title}", rule, line(headers), rule, *map(line, cells[1:]), rule])


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(env: dict, encoders: Encoders, qualities: list[Quality], ingests: list[Ingest], scales: list[Scale]) -> str:
    out = [f"Retrieval benchmark ({'quick' if env['quick'] else 'full'}): {env['cpus']} CPUs, torch threads {env['torch_threads']}, "
           f"embedder {env['embedder']} on {env['runtime']} (load {env['embedder_load_s']:.1f} s, not counted below)",
           "CPU probe (short sentences embedded/s, batch of 256) before each section: "
           + ", ".join(f"{k} {v:.0f}" for k, v in env["cpu_probes_sentences_per_s"].items())]
    out.append(table(
        "0. Query encoder runtimes side by side (same model and texts; single short queries, then batches)",
        ["runtime", "query p50 ms", "query p95 ms", "texts/s"],
        [[r.runtime, r.query.p50, r.query.p95, r.texts_per_s] for r in encoders.rows],
    ))
    out.append(f"query p50 torch / {env['runtime']}: {encoders.query_speedup:.2f}x; min cosine between their vectors {encoders.min_cosine:.6f}")
    rows = {r.runtime: r for r in encoders.rows}
    if "onnx" in rows and env["runtime"] != "onnx":  # int8 against its float32 baseline
        product = rows[env["runtime"]]
        out.append(f"{env['runtime']} / onnx (float32): {product.texts_per_s / rows['onnx'].texts_per_s:.2f}x texts/s, "
                   f"{rows['onnx'].query.p50 / product.query.p50:.2f}x faster single queries")
    quality = qualities[0]
    out.append(table(
        f"1. Quality on the demo data ({quality.entries} entries, {quality.rows[0]['n']} queries from {quality.queries_file})",
        ["runtime", "mode", "top1", "recall@5", "MRR", "p50 ms", "p95 ms", "n"],
        [[q.runtime, MODE_LABELS[r["mode"]], r["top1"], r["recall_at_5"], r["mrr"], r["latency_ms_p50"], r["latency_ms_p95"], r["n"]]
         for q in qualities for r in q.rows],
    ))
    out.append(f"hybrid / dense top-1 ({quality.runtime}): {quality.hybrid_vs_dense_top1:.3f}x")
    out.append(table(
        f"1b. Customers in a hurry: hybrid top-1 with every query perturbed (retrieval.perturb, {quality.runtime}); "
        "target: all within 0.03 of clean with spelling on",
        ["spelling correction", "clean", "typos", "lower case", "chatty", "all"],
        [[label, r["clean"], r["typos"], r["lowercase"], r["chatty"], r["all"]] for label, r in quality.perturbed.items()],
    ))

    summaries = [i.summary() for i in ingests]
    s = summaries[0]
    out.append(table(
        f"2. Ingest throughput ({s['entries']:,} short synthetic entries, cold, median of {s['runs']} runs; re-ingest median of {len(ingests[0].reingest_seconds)})",
        ["runtime", "entries", "entries/s", "total s", "embed s", "index s", "other s", "re-ingest s", "re-ingest embedded"],
        [[i["runtime"], i["entries"], i["entries_per_s"], i["seconds"], i["embed_seconds"], i["index_seconds"], i["other_seconds"],
          i["reingest_seconds"], i["reingest_embedded"]] for i in summaries],
    ))
    if len(summaries) > 1:
        out.append(f"{s['runtime']} / {summaries[1]['runtime']}: {s['entries_per_s'] / summaries[1]['entries_per_s']:.2f}x entries/s (runs alternated)")
    out.append(f"target >= {INGEST_TARGET_PER_S:.0f} entries/s: {verdict(s['entries_per_s'] >= INGEST_TARGET_PER_S)} "
               f"({s['entries_per_s']:.0f}); re-ingest embeds nothing: {verdict(s['reingest_embedded'] == 0)}")

    out.append(table(
        f"3. Query latency of hybrid kb.search, ms ({scales[0].latency['hybrid'].n} queries after {WARMUP_QUERIES} warm-up; parts timed alone)",
        ["engine", "entries", "index", "hybrid p50", "hybrid p95", "embed p50", "embed p95", "dense p50", "dense p95",
         "lexical p50", "lexical p95", "other p50", "other p95"],
        [[sc.engine, sc.entries, sc.index_kind] + [v for part in ("hybrid", "embed", "dense", "lexical", "other")
                                        for v in (sc.latency[part].p50, sc.latency[part].p95)] for sc in scales],
    ))
    largest = max((sc for sc in scales if sc.engine == "sqlite"), key=lambda sc: sc.entries)
    at = "" if largest.entries >= LATENCY_TARGET_SIZE else f" (measured at {largest.entries:,}, not {LATENCY_TARGET_SIZE:,}: indicative only)"
    out.append(f"target p50 <= {LATENCY_TARGET_MS:.0f} ms at {LATENCY_TARGET_SIZE:,} entries: "
               f"{verdict(largest.latency['hybrid'].p50 <= LATENCY_TARGET_MS)} ({largest.latency['hybrid'].p50:.2f} ms){at}")
    out.append(table(
        "3b. Dense index vs exact flat search over the same vectors (recall@10, single-query ms)",
        ["engine", "entries", "index", "nprobe", "recall@10", "p50 ms", "p95 ms"],
        [[sc.engine, sc.entries, p.index, "-" if p.nprobe is None else p.nprobe, p.recall_at_10, p.latency.p50, p.latency.p95]
         for sc in scales for p in sc.probes],
    ))

    out.append(table(
        "4. Build, memory and disk per size (cold build is one run; re-ingest of the unchanged file is a median)",
        ["engine", "entries", "vectors", "build entries/s", "build s", "embed s", "index s", "re-ingest s", "re-ingest embedded",
         "peak RSS MiB", "RSS MiB", "disk MiB"],
        [[sc.engine, sc.entries, sc.vectors, round(sc.build.runs[0].per_second, 1), sc.build.runs[0].seconds, sc.build.runs[0].embed_seconds,
          sc.build.runs[0].index_seconds, statistics.median(sc.build.reingest_seconds), max(sc.build.reingest_embedded),
          sc.peak_rss_mib, sc.rss_mib, round(sc.disk_bytes / 2**20, 1)] for sc in scales],
    ))
    out.append("peak RSS is the whole process's high-water mark so far (resource.getrusage), so it only grows from row to row.")
    return "\n".join(out)


def to_json(env: dict, encoders: Encoders, qualities: list[Quality], ingests: list[Ingest], scales: list[Scale]) -> dict:
    largest = max((sc for sc in scales if sc.engine == "sqlite"), key=lambda sc: sc.entries)
    return {
        "environment": env,
        "encoders": asdict(encoders),
        "quality": [asdict(q) for q in qualities],
        "ingest": [i.summary() for i in ingests],
        "scale": [
            {**{k: v for k, v in asdict(sc).items() if k != "build"}, "build": sc.build.summary()} for sc in scales
        ],
        "targets": {
            "ingest_entries_per_s": {"target": INGEST_TARGET_PER_S, "value": ingests[0].summary()["entries_per_s"]},
            "hybrid_p50_ms": {"target": LATENCY_TARGET_MS, "at_entries": largest.entries, "value": largest.latency["hybrid"].p50},
        },
    }


def environment(args: argparse.Namespace, load_s: float, embedder: Embedder) -> dict:
    import torch

    return {
        "quick": args.quick, "sizes": args.sizes, "torch_threads_arg": args.torch_threads, "queries": args.queries, "repeats": args.repeats,
        "ingest_entries": args.ingest_entries, "approximate_above": RetrievalSettings().approximate_above
        if args.approximate_above is None else args.approximate_above,
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "faiss": faiss.__version__,
        "python": platform.python_version(), "embedder": embedder.model_id, "runtime": embedder.runtime,
        "embedder_load_s": round(load_s, 2),
        "tmp": tempfile.gettempdir(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1k and 10k entries instead of 1k and 100k; smaller ingest runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/retrieval.json", help="JSON results path")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], help="knowledge-base sizes for latency")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size (after warm-up)")
    parser.add_argument("--ingest-entries", type=int, help="N for the ingest-throughput runs")
    parser.add_argument("--repeats", type=int, default=3, help="cold ingest runs and unchanged re-ingests")
    parser.add_argument("--approximate-above", type=int, help="override RetrievalSettings.approximate_above")
    parser.add_argument("--database", default="", help="a postgresql:// URL: sections 3-4 on it too, beside SQLite")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=RetrievalSettings().embedder_runtime,
                        help="embedder runtime for the quality, ingest and latency sections (default: the product's)")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ([1_000, 10_000] if args.quick else [1_000, 100_000])
    args.ingest_entries = args.ingest_entries or (1_000 if args.quick else 2_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    started = time.perf_counter()
    cache = tempfile.TemporaryDirectory(prefix="supportbot-bench-encoder-")  # the ONNX export, made once
    embedder = TimedEmbedder(runtime=args.runtime, cache_dir=cache.name)
    embedder.model_id, embedder.dim  # noqa: B018 (load once, outside every measurement)
    load_s = time.perf_counter() - started
    bench = Bench(args, embedder)
    env = environment(args, load_s, embedder)
    queries = bench.synthetic.queries(args.queries + WARMUP_QUERIES)

    bench.probe_cpu("start")
    log("query encoders side by side")
    encoders = bench_encoders(bench, queries)
    qualities = [bench_quality(bench, bench.embedder, perturbed=True), *(bench_quality(bench, e) for e in bench.float_embedders.values())]
    bench.probe_cpu("before ingest")
    ingests = bench_ingest(bench, args.ingest_entries)
    scales = []
    for n in args.sizes:
        bench.probe_cpu(f"before {n:,}")
        scales.append(bench_scale(bench, n, queries))
        if args.database:
            scales.append(bench_scale(bench, n, queries, args.database))
    bench.probe_cpu("end")
    env["cpu_probes_sentences_per_s"] = bench.cpu_probes

    print(render(env, encoders, qualities, ingests, scales), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(to_json(env, encoders, qualities, ingests, scales), indent=2) + "\n")
    log(f"wrote {args.out} (total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
