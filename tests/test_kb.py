"""The knowledge base: upsert/remove with a consistent index, the embedding cache, refusals that leave
the KB unchanged, recovery from a missing index file, approximate index, readers beside a writer. The tests
taking `kb_database` run on both engines: the store in a SQLite file, then in PostgreSQL with each reader a
replica of its own (another folder, the same database)."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest
from helpers import write

from retrieval import IngestError

FAQ = """id,question,answer,title,category
ship-ca,How long does delivery to Canada take?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping
ship-ca,Do you ship to Toronto?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping
gift-exp,Do gift cards expire?,Gift cards never expire and have no fees.,Gift card expiry,Gift cards
acct-pw,How do I reset my password?,Use the reset link; it is valid for 30 minutes.,Password reset,Account
"""


def faq_rows(n: int, start: int = 0) -> str:
    return "id,question,answer\n" + "".join(
        f"e{i},How do I use widget {i} with the blue gadget?,Widget {i} pairs with gadget {i}.\n" for i in range(start, start + n)
    )


def test_add_then_search_returns_entries_not_variants(make_kb, tmp_path, kb_database):
    kb = make_kb(database=kb_database)
    report = kb.add([write(tmp_path / "faq.csv", FAQ)])
    assert (report.entries, report.added, report.updated, report.unchanged) == (3, 3, 0, 0)
    assert report.embedded == 4  # the question variants; short answers are lexical-only by default
    stats = kb.stats()
    assert (stats["entries"], stats["variants"], stats["passages"], stats["vectors"]) == (3, 4, 3, 4)
    hits = kb.search("Toronto delivery", k=5)
    assert [h.entry_id for h in hits].count("ship-ca") == 1
    assert hits[0].entry_id == "ship-ca" and hits[0].lexical_rank == 1


def test_an_entry_direction_is_the_mean_of_its_vectors_and_a_removed_entry_has_none(make_kb, tmp_path, kb_database):
    kb = make_kb(database=kb_database)
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    _, token, embedder = kb._loaded_index()
    mean = np.mean(embedder.encode(kb.entry("ship-ca").questions), axis=0)
    assert np.allclose(kb.entry_direction("ship-ca", token, embedder.dim), mean / np.linalg.norm(mean), atol=1e-5)
    assert not kb.entry_direction("no-such-entry", token, embedder.dim).any()


def test_reingesting_an_unchanged_file_embeds_nothing(make_kb, tmp_path):
    kb = make_kb()
    path = write(tmp_path / "faq.csv", FAQ)
    kb.add([path])
    again = kb.add([path])
    assert (again.unchanged, again.embedded, again.added, again.updated) == (3, 0, 0, 0)


def test_prefetched_queries_are_encoded_in_one_batch_and_searched_the_same(make_kb, tmp_path):
    kb = make_kb(spelling=True)
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    queries = ["Toronto   delivery", "do you ship to Canda?", "Do gift cards expire?"]
    expected = [[(h.entry_id, round(h.score, 5)) for h in kb.search(q)] for q in queries]
    kb = make_kb("again", spelling=True)  # the same file in a fresh knowledge base: nothing remembered yet
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    batches = []
    encode = kb.embedder.encode
    kb.embedder.encode = lambda texts, *a, **kw: batches.append(list(texts)) or encode(texts, *a, **kw)
    kb.prefetch(queries)
    assert len(batches) == 1 and len(batches[0]) == 3
    assert [[(h.entry_id, round(h.score, 5)) for h in kb.search(q)] for q in queries] == expected
    assert len(batches) == 1  # every search found its query's vector made


def test_upsert_replaces_the_entry_and_its_index_rows(make_kb, tmp_path, kb_database):
    kb = make_kb(database=kb_database)
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    changed = FAQ.replace("Gift cards never expire and have no fees.", "Gift cards now include a ribbon.")
    report = kb.add([write(tmp_path / "faq.csv", changed)])
    assert (report.updated, report.unchanged) == (1, 2)
    assert kb.entry("gift-exp").answer == "Gift cards now include a ribbon."
    assert kb.search("ribbon")[0].entry_id == "gift-exp"
    assert all(h.entry_id != "gift-exp" for h in kb.search("fees", mode="lexical"))
    assert kb.dense_index().size == kb.stats()["vectors"] == 4


def test_remove_deletes_entry_everywhere(make_kb, tmp_path, kb_database):
    kb = make_kb(database=kb_database)
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    assert kb.remove("ship-ca") and not kb.remove("ship-ca")
    assert kb.entry("ship-ca") is None
    for mode in ("hybrid", "dense", "lexical"):
        assert "ship-ca" not in [h.entry_id for h in kb.search("Canada Toronto delivery", k=10, mode=mode)]
    assert kb.dense_index().size == 2


def test_a_refused_batch_leaves_the_kb_unchanged(make_kb, tmp_path, kb_database):
    kb = make_kb(database=kb_database)
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    before = kb.stats()
    good = write(tmp_path / "more.csv", faq_rows(5))
    bad = write(tmp_path / "zbad.csv", "id,question,answer\nx,Q?,A\nx,Q2?,B\n")
    with pytest.raises(IngestError, match="zbad.csv"):
        kb.add([good, bad])
    assert kb.stats() == before


def test_index_file_lost_in_a_crash_is_rebuilt_from_the_store(make_kb, tmp_path, settings, tiny_embedder, kb_database):
    from retrieval import KnowledgeBase

    kb = make_kb(database=kb_database)
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    expected = [h.entry_id for h in kb.search("gift card fees")]
    for f in kb.folder.glob("dense-*.faiss"):
        f.unlink()
    fresh = KnowledgeBase(kb.folder, settings, tiny_embedder, kb_database)
    assert [h.entry_id for h in fresh.search("gift card fees")] == expected
    assert fresh.dense_index().size == 4
    fresh.close()


def test_a_second_instance_sees_writes_of_the_first(make_kb, tmp_path, kb_database):
    writer = make_kb(database=kb_database)
    reader = make_kb("replica/kb" if kb_database else "kb", database=kb_database)
    assert reader.search("gift cards") == []
    writer.add([write(tmp_path / "faq.csv", FAQ)])
    assert reader.search("gift cards expire")[0].entry_id == "gift-exp"
    writer.remove("gift-exp")
    assert "gift-exp" not in [h.entry_id for h in reader.search("gift cards expire")]


def test_past_the_threshold_the_index_is_approximate_and_still_supports_removal(make_kb, tmp_path):
    kb = make_kb(approximate_above=100, ivf_nprobe=64)
    kb.add([write(tmp_path / "a.csv", faq_rows(60))])
    assert kb.stats()["index_kind"] == "flat"
    kb.add([write(tmp_path / "b.csv", faq_rows(150, start=60))])
    assert kb.stats()["index_kind"].startswith("ivf")
    assert kb.search("widget 200 gadget", mode="lexical")[0].entry_id == "e200"
    assert kb.dense_index().search(kb.embedder.encode(["How do I use widget 200 with the blue gadget?"])[0], 1)[0][1] > 0.99
    kb.remove("e200")
    assert kb.dense_index().size == 209


def _ingest_in_another_process(folder, embedder_path, csv_path, done):
    from retrieval import Embedder, KnowledgeBase, RetrievalSettings

    kb = KnowledgeBase(folder, RetrievalSettings(), Embedder(embedder_path))
    for i in range(4):
        kb.add([csv_path])
        kb.remove(f"e{i}")
    done.set()


def test_search_never_fails_while_another_process_ingests(make_kb, tmp_path, tiny_embedder_path):
    kb = make_kb()
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    big = write(tmp_path / "big.csv", faq_rows(400))
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Event()
    proc = ctx.Process(target=_ingest_in_another_process, args=(kb.folder, tiny_embedder_path, big, done))
    proc.start()
    searches = 0
    deadline = time.time() + 120
    while not done.is_set() and time.time() < deadline:
        hits = kb.search("gift cards expire widget")
        assert hits and all(h.title for h in hits)
        searches += 1
    proc.join(30)
    assert proc.exitcode == 0 and searches > 0
    assert kb.stats()["entries"] == 3 + 399  # each round re-adds the entry removed before; e3 stays removed


def test_lexical_search_scores_the_rarest_terms_within_its_budget(make_kb, tmp_path):
    kb = make_kb()
    kb.add([write(tmp_path / "many.csv", faq_rows(60))])  # "widget" and "gadget" are in every entry
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    full = kb.store.lexical("widget Toronto Canada", 100)
    pruned = kb.store.lexical("widget Toronto Canada", 100, budget=10)
    assert len(full) > 60
    units = kb.store.unit_entries([uid for uid, _ in pruned])
    assert {entry for entry, _ in units.values()} == {"ship-ca"}
    # the two rarest terms are always scored, even past the budget
    assert len(kb.store.lexical("widget gadget Toronto", 100, budget=10)) > 60


@pytest.fixture(scope="module")
def other_embedder_path(tmp_path_factory, tiny_embedder_path):
    """The tiny embedder with other random weights: a stand-in for a fine-tuned retriever."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_embedder_path), device="cpu")
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    path = tmp_path_factory.mktemp("other-embedder") / "st"
    model.save(str(path))
    return path


def test_switching_the_embedder_reindexes_every_unit_and_readers_follow(make_kb, tmp_path, other_embedder_path, kb_database):
    kb = make_kb(database=kb_database)
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    # another process's view of the same store (a replica's, on PostgreSQL), opened before the switch
    reader = make_kb("replica/kb" if kb_database else "kb", database=kb_database)
    assert reader.search("Do you ship to Toronto?", mode="dense")[0].dense > 0.999

    assert kb.switch_embedder(str(other_embedder_path)) == 4  # every embedded unit, under the new model
    assert kb.embedder.path == other_embedder_path and reader.embedder.path == other_embedder_path
    for view in (kb, reader):  # queries are encoded with the embedder of the vectors they are compared to
        top = view.search("Do you ship to Toronto?", mode="dense")[0]
        # > 0.99, not 1: the switch runs the new model at the configured int8 precision, whose activation
        # scales are set per batch, so a text encoded alone and inside a batch differ slightly.
        assert top.entry_id == "ship-ca" and top.dense > 0.99
    kb.add([write(tmp_path / "more.csv", "id,question,answer\nhours,When are you open?,From 9 to 5.\n")])
    assert reader.search("When are you open?", mode="dense")[0].dense > 0.999
    assert reader.dense_index().size == 5

    assert kb.switch_embedder("") == 1  # back (a rollback): only the unit added meanwhile is new to it
    assert kb.embedder.path == reader.embedder.path != other_embedder_path
    assert reader.search("When are you open?", mode="dense")[0].dense > 0.999


def test_an_entry_is_scored_by_the_mean_of_its_variants_and_readers_follow_an_upsert(make_kb, tmp_path, settings, tiny_embedder):
    import numpy as np

    from retrieval import KnowledgeBase

    writer = make_kb(prototype_weight=1.0, variant_vote=0.0)
    writer.add([write(tmp_path / "faq.csv", FAQ)])
    reader = KnowledgeBase(writer.folder, settings, tiny_embedder)  # another process: it sees the write at its next search
    query = "parcel to Canada"

    def mean_cosine(questions):
        mean = tiny_embedder.encode(questions).mean(axis=0)
        return float(tiny_embedder.encode([query])[0] @ (mean / np.linalg.norm(mean)))

    def score(kb):
        return next(h.score for h in kb.search(query, k=5, mode="dense") if h.entry_id == "ship-ca")

    two = ["How long does delivery to Canada take?", "Do you ship to Toronto?"]
    assert score(writer) == pytest.approx(mean_cosine(two), abs=1e-5) and score(reader) == pytest.approx(score(writer), abs=1e-6)
    extra = "ship-ca,Can I get a parcel sent to Vancouver?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping\n"
    writer.add([write(tmp_path / "faq.csv", FAQ + extra)])
    three = two + ["Can I get a parcel sent to Vancouver?"]
    assert score(reader) == pytest.approx(mean_cosine(three), abs=1e-5) and score(writer) == pytest.approx(score(reader), abs=1e-6)
    reader.close()


def test_a_trial_copy_is_a_sqlite_copy_without_the_held_out_variants(make_kb, tmp_path, kb_database):
    """What a retriever's gate searches: the whole store copied (from either engine) into a local file, checked,
    less the variants it asks; the original is untouched."""
    kb = make_kb(database=kb_database)
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    trial = kb.trial_copy(tmp_path / "trial", without=[("ship-ca", "Do you ship to Toronto?")])
    try:
        assert trial.store.db.dialect == "sqlite" and trial.store.index_token() != kb.store.index_token()
        assert trial.entry("ship-ca").questions == ["How long does delivery to Canada take?"]
        assert trial.stats()["variants"] == kb.stats()["variants"] - 1 and trial.dense_index().size == 3
        assert [h.entry_id for h in trial.search("gift cards", mode="lexical")] == [h.entry_id for h in kb.search("gift cards", mode="lexical")]
    finally:
        trial.close()
    assert kb.entry("ship-ca").questions == ["How long does delivery to Canada take?", "Do you ship to Toronto?"]


def test_two_names_that_share_a_postgresql_schema_are_told_apart(make_kb, postgres_cluster):
    from retrieval.database import DatabaseError
    from retrieval.store import schema_name

    url = postgres_cluster.new_database()
    make_kb("Returns", database=url)
    assert schema_name("Returns") == schema_name("returns") and len(schema_name("x" * 64)) <= 63
    with pytest.raises(DatabaseError, match="its schema kb_returns already holds knowledge base 'Returns'"):
        make_kb("returns", database=url)
