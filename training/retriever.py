"""Retriever fine-tuning: contrastive training of the embedder on the knowledge base's own question variants
and on logged questions that an entry resolved.

Every training pair is (a question, another text of the same entry): another variant, the answer, or for
a document's heading or a question from the log, the passage. The loss is MultipleNegativesRankingLoss
(in-batch negatives), so the other pairs' positives in a batch are the negatives; `EntryBatchSampler` never
puts two pairs of one key (an entry; for a document, one passage) in a batch, so variants of one entry are
never pushed apart, and it batches pairs of about one length (a batch is padded to its longest text). With `hard_negatives`, each
batch is drawn from a cluster of entries that lie near each other in the starting embedder's space (the
entries a query confuses), which makes the in-batch negatives hard at no extra cost per step.

`run_retriever` is the `supportbot train retriever` run: pairs from the home's knowledge base and log, one
variant per entry (of those with three or more) held out, train, compare the starting and the trained
embedder on the held-out questions, and write the model as a version of kind "retriever".
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from chatbot import Config, ConversationLog
from chatbot.versions import Card, Versions, now, open_versions
from retrieval import Embedder, Entry, KnowledgeBase, evaluate_retrieval
from retrieval.kb import embed_text
from retrieval.perturb import CHOICES as KINDS_ALL, perturb

from .examples import _context, data_hash, is_heldout
from .runs import TrainError, new_version_name
from .trainers import Log, Progress, _reporter

Query = tuple[str, str]  # (question, entry id)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class RetrieverSettings:
    """Plain values with defaults (chosen on bench/retriever.py, see its docstring); the CLI maps flags onto these."""

    epochs: float = 4.0
    pair_budget: int = 20_000  # pairs seen in all: a large set trains for fewer epochs (at least one); 0 = no cap
    max_steps: int = -1  # >0 overrides epochs
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup: float = 0.1  # share of the steps over which the learning rate rises
    max_seq_length: int = 128  # tokens; questions are far shorter, passages are cut (the index cuts them at 256)
    max_variants: int = 0  # question variants per entry used for pairs (0 = all)
    hard_negatives: bool = True  # batches drawn from clusters of nearby entries
    scale: float = 20.0  # MultipleNegativesRankingLoss: 1 / temperature
    # Share of question pairs trained a second time with the question as a customer in a hurry types it
    # (`retrieval.perturb`: typos, lower case, chatty openings, all of them, in turn); 0 = off.
    perturbed: float = 0.0
    seed: int = 0
    threads: int = 0  # torch threads (0 = leave default)
    logging_steps: int = 10


class Pair(NamedTuple):
    anchor: str  # a question
    positive: str  # a text of the same entry that the question should find
    key: str  # what is never a negative of this pair: its entry, or for a document, the passage (`passage_key`)


def passage_key(entry_id: str, number: int) -> str:
    """A document's passages are told apart in training (they answer different questions, and a document with
    N passages would otherwise need N batches): "<entry id>#<passage number>"."""
    return f"{entry_id}#{number}"


class Resolved(NamedTuple):
    """A logged customer question whose answer a person confirmed, and the entry that answered it."""

    question: str
    entry_id: str
    title: str  # the cited source's title: names the passage of a document
    conversation_id: str


# --- pairs ------------------------------------------------------------------------------------------


def kb_pairs(entries: Iterable[Entry], max_variants: int = 0) -> list[Pair]:
    """The knowledge base's own pairs (measured on bench/retriever.py):
    - each question variant with the next longer variant of its entry (cyclically, so every variant is a
      positive as often as an anchor): the phrasings of one question meet, and a pair's two texts are about
      as long, so `EntryBatchSampler` can batch pairs of one length;
    - an entry's first variant with its first passage (title and answer): the question meets the words of
      its answer, which new phrasings often use (one per entry: one per variant scored the same, 0.645 against
      0.643 top-1 on the held-out folds, with a third more pairs);
    - each passage of a document (documents have no questions) with its heading path: documents stay
      findable, and as in-batch negatives their passages keep the questions from drifting onto them
      (without these pairs, a policy document was the top hit of a third of the fine-tuned model's misses)."""
    pairs = []
    for entry in entries:
        passages = [Pair(p.title, embed_text("passage", p.title, p.text), passage_key(entry.id, n)) for n, p in enumerate(entry.passages)]
        if entry.kind == "document":
            pairs += passages
            continue
        questions = sorted(entry.questions[: max_variants or None], key=len)
        if len(questions) > 1:
            pairs += [Pair(q, questions[(i + 1) % len(questions)], entry.id) for i, q in enumerate(questions)]
        if questions and passages:
            pairs.append(Pair(entry.questions[0], passages[0].positive, entry.id))
    return pairs


def resolved_queries(log: ConversationLog) -> list[Resolved]:
    """Customer questions answered from an entry that a person confirmed: an agent sent the bot's draft (as
    is or edited), or the customer's latest rating of the reply is a thumbs up (a hand-off says nothing about
    its sources, so it does not count). The entry is the reply's first cited source."""
    ratings = {row["message_id"]: row["rating"] for row in log.feedback()}  # in order: the latest rating wins
    approved = {a["draft_message_id"] for a in log.agent_actions() if a["action"] in ("approved", "edited") and a["draft_message_id"]}
    out = []
    for message_id in sorted(approved | {m for m, rating in ratings.items() if rating > 0}):
        reply = log.message(message_id)
        if not reply.sources or (reply.handed_off and message_id not in approved):
            continue
        if log.conversation(reply.conversation_id)["channel"] == "eval":
            continue
        context = _context(log.history(reply.conversation_id), reply.id)
        if context is not None:
            top = reply.sources[0]
            out.append(Resolved(context.question, top["id"], top.get("title", ""), reply.conversation_id))
    return out


def log_pairs(resolved: Iterable[Resolved], entries: dict[str, Entry]) -> list[Pair]:
    """A logged question paired with a variant of its entry (taking the variants in turn) or, for a document,
    the cited passage; questions whose entry is no longer in the knowledge base are left out."""
    turn: Counter[str] = Counter()
    pairs = []
    for query in resolved:
        entry = entries.get(query.entry_id)
        if entry is None:
            continue
        if entry.questions:
            pairs.append(Pair(query.question, entry.questions[turn[entry.id] % len(entry.questions)], entry.id))
        elif entry.passages:
            n = next((n for n, p in enumerate(entry.passages) if p.title == query.title), 0)
            passage = entry.passages[n]
            pairs.append(Pair(query.question, embed_text("passage", passage.title, passage.text), passage_key(entry.id, n)))
        turn[entry.id] += 1
    return pairs


def hold_out(entries: Iterable[Entry], min_variants: int = 3) -> tuple[list[Entry], list[Query]]:
    """(entries without their held-out variant, the held-out variants): one variant of each entry with at
    least `min_variants`, so at least two remain to train on. The one held out has the smallest digest, so
    every run on the same knowledge base holds out the same ones, and a model continued from an earlier
    version has never seen them either."""
    kept, queries = [], []
    for entry in entries:
        if len(entry.questions) >= min_variants:
            held = min(entry.questions, key=lambda q: hashlib.sha256(q.encode()).hexdigest())
            entry = replace(entry, questions=[q for q in entry.questions if q != held])
            queries.append((held, entry.id))
        kept.append(entry)
    return kept, queries


def logged_questions(config: Config) -> tuple[list[Resolved], list[Resolved]]:
    """The log's resolved questions, split as every training run splits the log: (train, held out), by
    conversation (`gate.heldout_share`)."""
    log = ConversationLog(config.log_database, config.answer.redact)
    try:
        resolved = resolved_queries(log)
    finally:
        log.close()
    held = [is_heldout({"conversation_id": q.conversation_id}, config.gate.heldout_share) for q in resolved]
    return [q for q, h in zip(resolved, held) if not h], [q for q, h in zip(resolved, held) if h]


def as_queries(resolved: Iterable[Resolved], entries: Iterable[Entry]) -> list[Query]:
    ids = {e.id for e in entries}
    return [(q.question, q.entry_id) for q in resolved if q.entry_id in ids]


def heldout_queries(config: Config, entries: list[Entry]) -> tuple[list[Query], list[Query]]:
    """(held-out variants, held-out logged questions): the questions of this knowledge base and log that no
    retriever training uses, for comparing retrievers."""
    return hold_out(entries)[1], as_queries(logged_questions(config)[1], entries)


# --- the batch sampler ------------------------------------------------------------------------------


def clusters(vectors: dict[str, np.ndarray], size: int, seed: int) -> list[list[str]]:
    """Entries in groups of about `size` that lie near each other: a random entry and its `size - 1` nearest
    neighbours among those not yet taken, while that many are left; each of the last few joins the group
    whose mean is nearest (a group of one or two would make batches without negatives)."""
    ids = list(vectors)
    rng = np.random.default_rng(seed)
    matrix = np.stack([vectors[i] for i in ids])
    free = np.ones(len(ids), dtype=bool)
    groups: list[np.ndarray] = []
    for start in rng.permutation(len(ids)):
        if free[start] and (free.sum() >= size or not groups):
            similarity = np.where(free, matrix @ matrix[start], -np.inf)
            taken = np.argsort(-similarity, kind="stable")[: min(size, int(free.sum()))]
            free[taken] = False
            groups.append(taken)
    means = np.stack([matrix[g].mean(axis=0) for g in groups])
    members = [[ids[i] for i in g] for g in groups]
    for i in np.flatnonzero(free):
        members[int(np.argmax(means @ matrix[i]))].append(ids[i])
    return members


class EntryBatchSampler:
    """Batches in which no two pairs share an entry, each pair once per epoch, the same number of batches
    every epoch (the trainer plans its steps and learning-rate schedule from it), and pairs of about the same
    length together: a batch is padded to its longest text, and random batches of Banking77's queries were
    mostly padding (see `deal`).

    Within each group of entries (all entries, or with `groups` the clusters of nearby ones) the pairs go into
    as many batches as the largest entry has pairs, or as `batch_size` needs. `entries[i]` is the entry of row
    i of the dataset and `lengths[i]` its length in any unit (none: all alike, so the batches are random). A
    plain batch sampler (`__iter__`, `__len__`, `set_epoch`) rather than a sentence-transformers subclass, so
    that importing this module does not import sentence-transformers (seconds: the gate imports it)."""

    drop_last = False  # every pair, every epoch
    jitter = 0.1  # lengths are scaled by a random factor in [1 - jitter, 1 + jitter] each epoch: batches vary

    def __init__(self, entries: Sequence[str], batch_size: int, groups: list[list[str]] | None = None, seed: int = 0,
                 lengths: Sequence[float] | None = None):
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.lengths = np.ones(len(entries)) if lengths is None else np.asarray(lengths, dtype=float)
        self.rows: dict[str, list[int]] = defaultdict(list)
        for index, entry in enumerate(entries):
            self.rows[entry].append(index)
        self.groups = [[e for e in group if e in self.rows] for group in (groups or [list(self.rows)])]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches_in(self, group: list[str]) -> int:
        count = sum(len(self.rows[e]) for e in group)
        return max(math.ceil(count / self.batch_size), max((len(self.rows[e]) for e in group), default=0))

    def __len__(self) -> int:
        return sum(self._batches_in(group) for group in self.groups)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        batches = [batch for group in self.groups for batch in self.deal(group, rng)]
        for b in rng.permutation(len(batches)):
            yield batches[b]

    def deal(self, group: list[str], rng: np.random.Generator) -> list[list[int]]:
        """The group's batches. Each pair aims at the batch of its (jittered) length rank and takes the nearest
        one that has room and no pair of its entry yet. Entries with the most pairs go first, while most
        batches still lack them, and an entry's longest pairs before its shorter ones: a short pair pushed
        among longer ones costs nothing, a long one pushed among short ones pads them all (Banking77's pairs
        in two clusters: padded tokens 1.48x the real ones this way, 2.8x random, about 2.4x shortest first).
        Should every batch with room already hold the entry, the pair joins the nearest one that does not."""
        count = self._batches_in(group)
        if not count:
            return []
        rows = np.array([i for e in group for i in self.rows[e]])
        keys = self.lengths[rows] * rng.uniform(1 - self.jitter, 1 + self.jitter, len(rows))
        target = dict(zip(rows.tolist(), (np.argsort(np.argsort(keys, kind="stable")) * count // len(rows)).tolist()))
        room = math.ceil(len(rows) / count)
        batches: list[list[int]] = [[] for _ in range(count)]
        holds: list[set[str]] = [set() for _ in range(count)]
        for entry in sorted(rng.permutation(group), key=lambda e: -len(self.rows[e])):
            for row in sorted(self.rows[entry], key=target.__getitem__, reverse=True):
                near = [b for b in _outward(target[row], count) if entry not in holds[b]]
                b = next((b for b in near if len(batches[b]) < room), near[0])
                batches[b].append(row)
                holds[b].add(entry)
        return batches


def _outward(start: int, count: int) -> Iterator[int]:
    """0..count-1 by distance from `start`."""
    yield start
    for step in range(1, count):
        for b in (start - step, start + step):
            if 0 <= b < count:
                yield b


# --- training ---------------------------------------------------------------------------------------


def entry_vectors(embedder: Embedder, pairs: list[Pair], progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Each key's (entry's or passage's) direction in the embedder's space: the normalised mean of its anchors' vectors."""
    matrix = embedder.encode([p.anchor for p in pairs], progress=(lambda d, t: progress("embed", d, t)) if progress else None)
    sums: dict[str, np.ndarray] = {}
    for pair, vector in zip(pairs, matrix):
        sums[pair.key] = sums.get(pair.key, 0) + vector
    return {e: v / (np.linalg.norm(v) or 1.0) for e, v in sums.items()}


def perturbed_pairs(pairs: list[Pair], share: float, seed: int) -> list[Pair]:
    """Copies of `share` of the question pairs (a document passage's heading is no customer's typing) with the
    question perturbed, the kinds taken in turn, so the embedder learns that a slip changes nothing."""
    questions = [p for p in pairs if "#" not in p.key]
    chosen = np.random.default_rng(seed).permutation(len(questions))[: round(share * len(questions))]
    return [Pair(perturb(questions[i].anchor, KINDS_ALL[n % len(KINDS_ALL)], seed), questions[i].positive, questions[i].key)
            for n, i in enumerate(sorted(chosen))]


def epochs_for(n_pairs: int, settings: RetrieverSettings) -> float:
    """Passes over the pairs: `epochs`, fewer past the pair budget. On bench/retriever.py (2 cores), two epochs
    over 10,000 short synthetic variants took 836 s; over Banking77's 10,003 longer queries, 864 s (1,486 s
    when batches were random: mostly padding)."""
    if settings.pair_budget <= 0:
        return settings.epochs
    return min(settings.epochs, max(1.0, settings.pair_budget / n_pairs))


def train_retriever(base_path: Path, pairs: list[Pair], out_dir: Path, settings: RetrieverSettings,
                    progress: Progress | None = None, log: Log | None = None) -> dict:
    """Fine-tune the sentence-transformers model at `base_path` on `pairs` and save it to `out_dir` (the caller
    makes the folder appear whole). Returns seconds, steps, pairs, entries, train_loss (the mean) and
    the last logged loss."""
    started = time.monotonic()
    if not pairs:
        raise ValueError("retriever: no training pairs")
    pairs = pairs + perturbed_pairs(pairs, settings.perturbed, settings.seed)
    import torch
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import PrinterCallback, set_seed

    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    set_seed(settings.seed)
    groups = None
    if settings.hard_negatives:
        groups = clusters(entry_vectors(Embedder(base_path), pairs, progress), settings.batch_size, settings.seed)
    model = SentenceTransformer(str(base_path), local_files_only=True)
    model.max_seq_length = settings.max_seq_length
    keys = [p.key for p in pairs]

    def sampler(dataset, batch_size: int, drop_last: bool, seed: int, **_) -> EntryBatchSampler:
        if drop_last:
            raise ValueError("retriever training uses every pair: dataloader_drop_last is not supported")
        return EntryBatchSampler(keys, batch_size, groups, seed, [len(p.anchor) + len(p.positive) for p in pairs])

    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir),  # only TensorBoard events: out_dir/runs/<date>_<host>/
        num_train_epochs=epochs_for(len(pairs), settings), max_steps=settings.max_steps, per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, warmup_steps=settings.warmup, seed=settings.seed,
        logging_steps=settings.logging_steps, report_to=["tensorboard"], save_strategy="no", batch_sampler=sampler,
        use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False, dataloader_num_workers=0, disable_tqdm=True)
    reporter = _reporter("retriever", progress, log)
    dataset = Dataset.from_dict({"anchor": [p.anchor for p in pairs], "positive": [p.positive for p in pairs]})
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, callbacks=[reporter],
                                         loss=MultipleNegativesRankingLoss(model, scale=settings.scale))
    trainer.remove_callback(PrinterCallback)
    result = trainer.train()
    model.save(str(out_dir))
    return {"train_loss": result.training_loss, "loss": reporter.metrics.get("loss", result.training_loss),
            "steps": trainer.state.global_step, "pairs": len(pairs), "keys": len(set(keys)),
            "seconds": time.monotonic() - started}


# --- held-out evaluation ----------------------------------------------------------------------------


def evaluate_embedders(kb: KnowledgeBase, queries: list[Query], without: list[tuple[str, str]],
                       embedders: dict[str, Path], modes: tuple[str, ...] = ("dense", "hybrid"),
                       progress: Progress | None = None) -> dict[str, dict[str, dict]]:
    """{embedder name: {mode: top1, recall_at_5, mrr}}: the product's search with each embedder in turn, over a
    trial copy of `kb` without the question variants `without` (entry id, text), so no query finds itself."""
    rows = [{"query": q, "expected_id": e, "line": i} for i, (q, e) in enumerate(queries, 1)]
    out: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="supportbot-retriever-") as tmp:
        trial = kb.trial_copy(tmp, without)
        try:
            for name, path in embedders.items():
                trial.switch_embedder(str(path), progress)
                out[name] = {mode: {key: report[key] for key in ("top1", "recall_at_5", "mrr")}
                             for mode in modes for report in [evaluate_retrieval(trial, rows, mode).summary()]}
        finally:
            trial.close()
    return out


# --- the run ----------------------------------------------------------------------------------------


def run_retriever(config: Config, settings: RetrieverSettings, parent: str = "", progress: Progress | None = None,
                  log: Log | None = None) -> Card:
    """`supportbot train retriever`: train from the home's knowledge base and log, starting from `parent` (a
    retriever version), else from the embedder the knowledge base searches with, and register a new version
    of kind "retriever" (not promoted). Its card holds both embedders' top-1, recall@5 and MRR on the
    held-out variants and logged questions, dense and hybrid."""
    with open_versions(config) as versions:
        return _run_retriever(config, versions, settings, parent, progress, log)


def _run_retriever(config: Config, versions: Versions, settings: RetrieverSettings, parent: str, progress: Progress | None,
                   log: Log | None) -> Card:
    parent = versions.resolve(parent) if parent else versions.serving_version("retriever")
    if parent and versions.card(parent).kind != "retriever":
        raise TrainError(f"version {parent!r} is a {versions.card(parent).kind}, not a retriever")
    # PyTorch for the comparison: an ONNX export of every trained model would land in the home's KB folder.
    kb = KnowledgeBase(config.kb_dir(), replace(config.retrieval, embedder_runtime="torch"), database=config.storage.database_url)
    try:
        base = versions.folder(parent) if parent else kb.embedder.path
        entries = [kb.entry(row.id) for row in kb.entries()]
        kept, variants = hold_out(entries)
        train_log, held_log = logged_questions(config)
        pairs = kb_pairs(kept, settings.max_variants) + log_pairs(train_log, {e.id: e for e in kept})
        if not pairs:
            raise TrainError(f"no retriever training pairs: knowledge base '{config.kb}' has no entry with question variants")
        queries = variants + as_queries(held_log, entries)
        version = new_version_name(versions, "retriever")
        partial = versions.start_partial(version)
        try:
            metrics = {"train": train_retriever(base, pairs, partial, settings, progress, log)}
            if queries:
                compared = evaluate_embedders(kb, queries, [(e, q) for q, e in variants], {"base": base, "trained": partial},
                                              progress=progress)
                metrics["heldout"] = {"variants": len(variants), "logged": len(queries) - len(variants), **compared}
            card = Card(version, "retriever", parent=parent, method="retriever", data_hash=data_hash([p._asdict() for p in pairs]),
                        settings={**asdict(settings), "start": str(base)}, metrics=metrics, created=now())
            versions.finish_partial(card)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    finally:
        kb.close()
    return card
