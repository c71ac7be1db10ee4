"""BM25 scored in numpy over FTS5's postings gives FTS5's own bm25() scores and ranking, follows every write,
and leaves phrase-like words to FTS5; on PostgreSQL the store's own postings give the same scores."""

from __future__ import annotations

from helpers import write

from retrieval.store import BM25_WEIGHTS

ROWS = """id,question,answer,title
ship-ca,How long does delivery to Canada take?,Delivery to Canada takes 5-10 business days.,Canada shipping
ship-ca,Do you ship to Toronto or Vancouver?,Delivery to Canada takes 5-10 business days.,Canada shipping
gift,Do gift cards expire?,Gift cards never expire; cards bought as gifts keep their balance.,Gift cards
returns,Can I return a gift?,Gifts can be returned for store credit within 30 days of delivery.,Returning gifts
fees,Are there any fees for returns?,Returns are free; return shipping to Canada costs $9.95.,Return fees
café,Is there a café at the warehouse?,No café; the warehouse in Port Alder has no shop.,Warehouse
"""
QUERIES = ["delivery Canada", "gift cards", "returning gifts to the warehouse", "cafe", "café fees canada",
           "shipping shipped ships", "nothing matches this", "return returns returned"]


def fts5_lexical(store, query: str, limit: int) -> list[tuple[int, float]]:
    """FTS5's bm25() on the same OR query, for comparison."""
    from retrieval.text import content_words

    match = " OR ".join(f'"{w}"' for w in dict.fromkeys(content_words(query)))
    return store.db.tuples(
        f"SELECT rowid, -bm25(units_fts, {BM25_WEIGHTS['title']}, {BM25_WEIGHTS['text']}) AS s FROM units_fts"
        " WHERE units_fts MATCH :m ORDER BY s DESC, rowid LIMIT :n", m=match, n=limit)


def _sorted(hits):
    return sorted(hits, key=lambda h: (-round(h[1], 9), h[0]))


def test_numpy_bm25_gives_fts5_scores_and_ranking(make_kb, tmp_path):
    kb = make_kb(embed_answers=True)  # answers become passages: units with titles and longer texts
    kb.add([write(tmp_path / "faq.csv", ROWS)])
    for query in QUERIES:
        ours, theirs = kb.store.lexical(query, 20), fts5_lexical(kb.store, query, 20)
        assert [u for u, _ in _sorted(ours)] == [u for u, _ in theirs], query
        assert all(abs(a - b) < 1e-9 for (_, a), (_, b) in zip(_sorted(ours), theirs)), query
    assert kb.store.lexical("nothing matches this", 20) == []


def test_postgres_postings_give_the_same_scores(make_kb, tmp_path, postgres_cluster):
    """The same rows in both engines: same uids, and the PostgreSQL store's postings score as FTS5 does (a
    phrase-like word aside: there its tokens are separate terms)."""
    faq = write(tmp_path / "faq.csv", ROWS)
    kbs = [make_kb(name, embed_answers=True, database=database) for name, database in
           [("kb", ""), ("pg", postgres_cluster.new_database())]]
    for kb in kbs:
        kb.add([faq])
    for query in QUERIES:
        theirs = fts5_lexical(kbs[0].store, query, 20)
        ours = _sorted(kbs[1].store.lexical(query, 20))
        assert [u for u, _ in ours] == [u for u, _ in theirs], query
        assert all(abs(a - b) < 1e-9 for (_, a), (_, b) in zip(ours, theirs)), query
    assert kbs[1].store.lexical("wi_fi cards", 5)  # two terms and one more, no phrase


def test_postings_follow_writes(make_kb, tmp_path, kb_database):
    kb = make_kb(database=kb_database)
    kb.add([write(tmp_path / "faq.csv", ROWS)])
    assert kb.search("warehouse", mode="lexical")[0].entry_id == "café"
    kb.remove("café")
    assert all(h.entry_id != "café" for h in kb.search("warehouse", mode="lexical"))
    kb.add([write(tmp_path / "more.csv", "id,question,answer\nhours,When does the warehouse open?,At 9.\n")])
    assert kb.search("warehouse", mode="lexical")[0].entry_id == "hours"
    if not kb_database:
        assert kb.store.lexical("warehouse", 5) == fts5_lexical(kb.store, "warehouse", 5)


def test_a_word_fts5_reads_as_a_phrase_is_searched_by_fts5(make_kb, tmp_path):
    """"wi_fi" is one word to the query parser but two tokens to FTS5: a phrase, which FTS5 answers."""
    kb = make_kb()
    kb.add([write(tmp_path / "faq.csv", "id,question,answer\nwifi,Does the wi fi work?,Yes.\nfi,What is fi wi?,No.\n")])
    assert kb.store._query_terms.terms(["wi_fi"]) is None
    hits = kb.store.lexical("wi_fi", 5)
    assert {entry for entry, _ in kb.store.unit_entries([u for u, _ in hits]).values()} == {"wifi"}  # in order only
