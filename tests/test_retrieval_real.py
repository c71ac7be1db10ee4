"""Integration: the real bundled MiniLM on the demo knowledge base and its held-out queries."""

from __future__ import annotations

import csv
from dataclasses import replace

import pytest
from conftest import DATA

from retrieval import KnowledgeBase, evaluate_perturbed, evaluate_retrieval, load_queries, perturb

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_kb(tmp_path_factory, real_embedder, demo_kb_into):
    kb = KnowledgeBase(demo_kb_into(tmp_path_factory.mktemp("demo") / "kb"), embedder=real_embedder)
    yield kb
    kb.close()


@pytest.fixture(scope="module")
def held_out(demo_kb):
    """The held-out queries and the default's report on them (hybrid), computed once for the module."""
    rows = load_queries(DATA / "eval" / "retrieval.csv", demo_kb)
    return rows, evaluate_retrieval(demo_kb, rows)


def test_demo_data_meets_the_issue_sizes(demo_kb):
    stats = demo_kb.stats()
    assert stats["entries"] - stats["documents"] >= 150 and stats["documents"] >= 3 and stats["categories"] >= 10
    rows = list(csv.DictReader(open(DATA / "kb" / "faq.csv", encoding="utf-8")))
    variants: dict[str, int] = {}
    for row in rows:
        variants[row["id"]] = variants.get(row["id"], 0) + 1
    assert sum(n >= 3 for n in variants.values()) >= 60
    assert sum(1 for r in csv.DictReader(open(DATA / "eval" / "retrieval.csv", encoding="utf-8")) if r["expected_id"]) >= 250


def test_hybrid_is_at_least_as_good_as_dense_on_held_out_queries(demo_kb, held_out):
    rows, hybrid = held_out
    dense = evaluate_retrieval(demo_kb, rows, mode="dense")
    assert hybrid.top1 >= dense.top1
    assert hybrid.top1 >= 0.75 and hybrid.recall_at_5 >= 0.9


def test_confidence_separates_answerable_from_out_of_scope(demo_kb, held_out):
    rows, _ = held_out
    inside = [demo_kb.search(r["query"], k=1)[0].confidence for r in [r for r in rows if r["expected_id"]][:100]]
    outside = [demo_kb.search(r["query"], k=1)[0].confidence for r in rows if not r["expected_id"]]
    assert sum(inside) / len(inside) > sum(outside) / len(outside) + 0.3


def test_typos_and_paraphrases_still_find_the_entry(demo_kb):
    typed = [h.entry_id for h in demo_kb.search("how lnog does shiping to canada take")]
    assert typed == [h.entry_id for h in demo_kb.search("how long does shipping to canada take")]  # read as meant
    assert "ship-canada" in typed[:2]  # with the shipping policy, which covers Canada too
    assert demo_kb.search("I forgot my password and the reset link is dead")[0].entry_id.startswith("acct-")


def test_the_default_never_loses_to_the_nearest_variant_alone(demo_kb, held_out):
    rows, default = held_out
    settings = demo_kb.settings
    demo_kb.settings = replace(settings, prototype_weight=0.0, variant_vote=0.0, entry_classifier=False)
    try:
        nearest = evaluate_retrieval(demo_kb, rows)
    finally:
        demo_kb.settings = settings
    assert default.top1 >= nearest.top1


def test_customers_in_a_hurry_are_found_within_three_points(demo_kb, held_out):
    rows, clean = held_out
    assert evaluate_retrieval(demo_kb, [{**r, "query": perturb(r["query"], "all")} for r in rows]).top1 >= clean.top1 - 0.03
    some = rows[::3]  # the speller's share, on a third of the queries
    typos = evaluate_perturbed(demo_kb, some, "typos")["typos"]["top1"]
    demo_kb.settings.spelling = False
    try:
        assert evaluate_perturbed(demo_kb, some, "typos")["typos"]["top1"] < typos - 0.03  # the speller's doing
    finally:
        demo_kb.settings.spelling = True
