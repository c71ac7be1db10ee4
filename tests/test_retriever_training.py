"""Retriever fine-tuning on the tiny random embedder: the entry-aware batch sampler, training pairs from the
knowledge base and from the log, one training step that writes a loadable model, and `train retriever`."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from helpers import write

from chatbot import ConversationLog
from retrieval import Embedder, Entry, Passage
from training.retriever import (EntryBatchSampler, Pair, Resolved, RetrieverSettings, clusters, epochs_for, hold_out, kb_pairs,
                                log_pairs, perturbed_pairs, resolved_queries, train_retriever)
from ui.cli import main

FAQ = """id,question,answer,title
ship-ca,How long does delivery to Canada take?,Canada orders arrive in 5-10 business days.,Canada shipping
ship-ca,Do you ship to Toronto?,Canada orders arrive in 5-10 business days.,Canada shipping
ship-ca,When will my parcel reach Vancouver?,Canada orders arrive in 5-10 business days.,Canada shipping
gift-exp,Do gift cards expire?,Gift cards never expire and have no fees.,Gift card expiry
gift-exp,Is there an expiry date on gift cards?,Gift cards never expire and have no fees.,Gift card expiry
gift-exp,Can I still use an old gift card?,Gift cards never expire and have no fees.,Gift card expiry
phone,What is your phone number?,Call us on 1-800-555-0142 from 8am to 8pm.,Phone support
phone,How can I call you?,Call us on 1-800-555-0142 from 8am to 8pm.,Phone support
phone,Is there a support hotline?,Call us on 1-800-555-0142 from 8am to 8pm.,Phone support
hours,When are you open?,From 9 to 5 on weekdays.,Opening hours
"""
DOC = "# Returns policy\n\n## Refunds\n\nRefunds reach your card within 5 days.\n\n## Exchanges\n\nExchanges are free within 30 days.\n"


# --- the sampler ------------------------------------------------------------------------------------


@pytest.mark.parametrize("grouped", [False, True])
def test_sampler_never_batches_two_pairs_of_one_entry_and_yields_every_pair_once(grouped):
    rng = np.random.default_rng(0)
    sizes = [1, 2, 3, 3, 4, 12] + [int(n) for n in rng.integers(1, 5, size=40)]  # one entry with many logged pairs
    entries = [f"e{i}" for i, n in enumerate(sizes) for _ in range(n)]
    groups = clusters({f"e{i}": v / np.linalg.norm(v) for i, v in enumerate(rng.normal(size=(len(sizes), 8)))}, 8, 0) if grouped else None
    sampler = EntryBatchSampler(entries, batch_size=8, groups=groups, seed=3)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)  # what the trainer plans its steps on, the same every epoch
        assert all(0 < len(b) <= 8 for b in batches)
        for batch in batches:  # in-batch negatives are always other entries
            assert len({entries[i] for i in batch}) == len(batch)
        assert sorted(i for b in batches for i in b) == list(range(len(entries)))  # every pair once
        orders.append(batches)
    assert orders[0] != orders[1]  # reshuffled each epoch
    assert len(sampler) >= 12  # the entry with 12 pairs needs 12 batches


def test_sampler_batches_pairs_of_about_one_length_together():
    rng = np.random.default_rng(0)
    entries = [f"e{i % 40}" for i in range(800)]  # 40 entries of 20 pairs
    lengths = rng.lognormal(3, 0.6, size=len(entries))
    padded = {}
    for name, given in (("random", None), ("by length", lengths)):
        batches = list(EntryBatchSampler(entries, batch_size=16, seed=1, lengths=given))
        assert all(len({entries[i] for i in b}) == len(b) for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(len(entries)))
        padded[name] = sum(lengths[b].max() * len(b) for b in batches) / lengths.sum()  # padded size / real size
    assert padded["by length"] < 0.75 * padded["random"]


def test_clusters_put_nearby_entries_together():
    rng = np.random.default_rng(1)
    centres = np.eye(4)[:2]  # two far-apart directions, eight entries around each
    vectors = {f"{c}-{i}": (centres[c] + 0.05 * rng.normal(size=4)) for c in range(2) for i in range(8)}
    vectors = {k: v / np.linalg.norm(v) for k, v in vectors.items()}
    found = clusters(vectors, 8, seed=0)
    assert sorted(len(g) for g in found) == [8, 8]
    assert all(len({e.split("-")[0] for e in group}) == 1 for group in found)


# --- pairs ------------------------------------------------------------------------------------------


def test_pairs_from_the_knowledge_base(make_kb, tmp_path):
    kb = make_kb()
    kb.add([write(tmp_path / "faq.csv", FAQ), write(tmp_path / "returns-policy.md", DOC)])
    entries = [kb.entry(row.id) for row in kb.entries()]
    pairs = kb_pairs(entries)
    by_entry = Counter(p.key for p in pairs)
    # each variant with the next longer one, the first variant with the answer, each document passage (its own
    # key: passages of one document may share a batch) with its heading
    assert by_entry == {"ship-ca": 4, "gift-exp": 4, "phone": 4, "hours": 1, "returns-policy#0": 1, "returns-policy#1": 1}
    ship = kb.entry("ship-ca").questions
    by_length = sorted(ship, key=len)
    assert {(p.anchor, p.positive) for p in pairs if p.key == "ship-ca"} == (
        {(by_length[i], by_length[(i + 1) % 3]) for i in range(3)} | {(ship[0], "Canada shipping\nCanada orders arrive in 5-10 business days.")})
    hours = next(p for p in pairs if p.key == "hours")
    assert hours.positive == "Opening hours\nFrom 9 to 5 on weekdays."  # a lone variant finds its answer passage
    assert {p.anchor for p in pairs if p.key.startswith("returns-policy#")} == {"Returns policy > Refunds", "Returns policy > Exchanges"}
    assert Counter(p.key for p in kb_pairs(entries, max_variants=2))["ship-ca"] == 3

    extra = perturbed_pairs(pairs, 0.5, seed=0)  # half the question pairs again, as typed in a hurry
    questions = [p for p in pairs if "#" not in p.key]
    assert len(extra) == round(len(questions) / 2) and all("#" not in p.key for p in extra)
    assert all(p.anchor not in {q.anchor for q in questions} for p in extra)
    assert {(p.positive, p.key) for p in extra} <= {(q.positive, q.key) for q in questions}
    assert perturbed_pairs(pairs, 0.5, seed=0) == extra and perturbed_pairs(pairs, 0.0, seed=0) == []

    kept, held = hold_out(entries)
    assert sorted(e for _, e in held) == ["gift-exp", "phone", "ship-ca"]  # entries with 3+ variants lose one
    assert all(q not in e.questions for q, entry_id in held for e in kept if e.id == entry_id)
    assert hold_out(entries)[1] == held  # the same ones every run


def test_pairs_from_questions_an_agent_or_a_customer_confirmed(tmp_path):
    log = ConversationLog(tmp_path / "log.sqlite")
    source = [{"n": 1, "id": "ship-ca", "title": "Canada shipping", "url": "", "score": 0.9}]
    doc_source = [{"n": 1, "id": "returns-policy", "title": "Returns policy > Exchanges", "url": "", "score": 0.8}]

    def turn(question: str, sources: list[dict], channel: str = "web", **fields) -> tuple[str, int]:
        conversation = log.start(channel)
        log.add_message(conversation, "customer", question)
        return conversation, log.add_message(conversation, "bot", "An answer. [1]", sources=sources, mode="template", **fields)

    conversation, reply = turn("parcel to Montreal, how many days?", source)
    log.add_agent_action(conversation, reply, "An answer. [1]", "approved")
    _, reply = turn("can I swap a lamp for another colour?", doc_source)
    log.add_feedback(reply, True)
    _, reply = turn("rated up then down", source)
    log.add_feedback(reply, True)
    log.add_feedback(reply, False)  # the latest rating counts
    _, reply = turn("a liked hand-off", source, handed_off=1, reason="low_confidence")
    log.add_feedback(reply, True)
    conversation, reply = turn("the agent rejected the draft", source)
    log.add_agent_action(conversation, reply, "Something else entirely.", "rejected")
    _, reply = turn("an evaluation turn", source, channel="eval")
    log.add_feedback(reply, True)
    _, reply = turn("no sources", [])
    log.add_feedback(reply, True)

    resolved = resolved_queries(log)
    log.close()
    assert [(r.question, r.entry_id) for r in resolved] == [
        ("parcel to Montreal, how many days?", "ship-ca"), ("can I swap a lamp for another colour?", "returns-policy")]

    entries = {
        "ship-ca": Entry("ship-ca", "Canada shipping", "5-10 days.", questions=["To Canada?", "To Toronto?"]),
        "returns-policy": Entry("returns-policy", "Returns policy", "...", kind="document", passages=[
            Passage("Returns policy > Refunds", "Refunds reach your card within 5 days."),
            Passage("Returns policy > Exchanges", "Exchanges are free within 30 days.")]),
    }
    pairs = log_pairs(resolved + [Resolved("another parcel question", "ship-ca", "", "c"), Resolved("gone", "removed", "", "c")], entries)
    assert pairs == [
        Pair("parcel to Montreal, how many days?", "To Canada?", "ship-ca"),
        Pair("can I swap a lamp for another colour?", "Returns policy > Exchanges\nExchanges are free within 30 days.", "returns-policy#1"),
        Pair("another parcel question", "To Toronto?", "ship-ca"),  # the entry's variants in turn
    ]


# --- training ---------------------------------------------------------------------------------------


def test_a_large_set_trains_for_fewer_epochs_within_the_pair_budget():
    settings = RetrieverSettings(epochs=4, pair_budget=20_000)
    assert epochs_for(800, settings) == 4  # the demo knowledge base: all four
    assert epochs_for(10_000, settings) == 2  # 10,000 variants: two passes
    assert epochs_for(100_000, settings) == 1  # never less than one pass
    assert epochs_for(100_000, RetrieverSettings(epochs=4, pair_budget=0)) == 4  # 0 = no cap


def test_one_training_step_writes_a_loadable_sentence_transformers_folder(tiny_embedder_path, tmp_path):
    pairs = [Pair(f"question {i} about topic {i % 5}", f"another way to ask about topic {i % 5}", f"t{i % 5}") for i in range(10)]
    calls = []
    metrics = train_retriever(tiny_embedder_path, pairs, tmp_path / "out", RetrieverSettings(max_steps=1, batch_size=4, warmup=0.0),
                              progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert metrics["steps"] == 1 and metrics["pairs"] == 10 and metrics["keys"] == 5 and metrics["loss"] > 0
    assert ("train retriever", 1, 1) in calls
    texts = ["Do gift cards expire?", "How can I call you?"]
    before, after = Embedder(tiny_embedder_path).encode(texts), Embedder(tmp_path / "out").encode(texts)
    assert after.shape == before.shape and np.allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(before, after)  # the step changed the weights


def test_cli_train_retriever_writes_a_retriever_version_with_held_out_metrics(tmp_path, tiny_embedder_path, capsys, registry):
    home = tmp_path / "home"
    settings = [f"--set=retrieval.embedder={tiny_embedder_path}", "--set=retrieval.embedder_runtime=torch"]
    assert main(["kb", "add", str(write(tmp_path / "faq.csv", FAQ)), "--home", str(home), "-q", *settings]) == 0
    capsys.readouterr()
    assert main(["train", "retriever", "--max-steps", "1", "--batch-size", "4", "--json", "-q", "--home", str(home), *settings]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["kind"] == "retriever" and card["method"] == "retriever" and card["settings"]["max_steps"] == 1
    assert card["metrics"]["train"]["pairs"] == 10  # 7 variants left (3 held out) + one (variant, answer) pair per entry
    heldout = card["metrics"]["heldout"]
    assert heldout["variants"] == 3 and heldout["logged"] == 0
    assert set(heldout["base"]) == set(heldout["trained"]) == {"dense", "hybrid"}
    assert 0 <= heldout["trained"]["hybrid"]["top1"] <= 1
    versions = registry(home)
    assert versions.card(card["version"]).kind == "retriever"
    assert Embedder(versions.folder(card["version"])).encode(["Do you ship to Toronto?"]).shape == (1, 32)
    assert not list((home / "versions").glob("*.partial"))

    assert main(["train", "retriever", "--data", "x.jsonl", "-q", "--home", str(home), *settings]) == 1
    assert "--data is not supported" in capsys.readouterr().err
