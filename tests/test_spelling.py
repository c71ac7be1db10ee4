"""Customers in a hurry: the seeded perturbations `eval retrieval --perturb` asks with, and the speller that
corrects a query's slips to the knowledge base's own words before it is searched."""

from __future__ import annotations

import time

import pytest
from helpers import write

from retrieval.perturb import CHOICES, perturb
from retrieval.spelling import Speller

QUESTION = "How long does a refund take once you get my returned parcel?"


def test_each_perturbation_is_seeded_and_visible():
    for kind in CHOICES:
        assert perturb(QUESTION, kind) == perturb(QUESTION, kind)  # the same on every run
        assert perturb(QUESTION, kind) != QUESTION
    assert perturb(QUESTION, "lowercase") == QUESTION.lower().rstrip("?")
    assert perturb(QUESTION, "chatty").endswith(QUESTION[1:]) or QUESTION[1:] in perturb(QUESTION, "chatty")
    typed = perturb(QUESTION, "typos")
    assert typed.lower() != QUESTION.lower() and abs(len(typed) - len(QUESTION)) <= 3  # a slip or two, not a rewrite
    assert perturb(QUESTION, "typos", seed=1) != typed or perturb(QUESTION, "typos", seed=2) != typed
    everything = perturb(QUESTION, "all")
    assert everything == everything.lower() or not everything[0].isupper()  # lower case applied
    assert perturb(perturb(QUESTION, "typos"), "lowercase") in everything  # each kind in turn


def test_typos_spare_short_words_and_unknown_kinds_are_refused():
    assert perturb("Do I get a PO box?", "typos") == "Do I get a PO box?"
    with pytest.raises(ValueError, match="perturbation 'spelling'"):
        perturb(QUESTION, "spelling")


def test_speller_corrects_to_the_knowledge_bases_words_only():
    speller = Speller(["How do I cancel my order?", "Tidewell Plus membership perks", "Order number and email",
                       "Expedited shipping to Canada"])
    assert speller.correct("cancell my ordr pls") == "cancel my order pls"
    assert speller.correct("Tidewel membershp perks?") == "tidewell membership perks?"
    assert speller.correct("find my ordernumber") == "find my order number"  # two words run together
    assert speller.correct("expidited shiping") == "expedited shipping"
    # English words the knowledge base does not use, contractions typed without their apostrophe, short
    # words and other spellings of nothing are left as typed
    assert speller.correct("is this a scam? I dont know") == "is this a scam? I dont know"
    assert speller.correct("qzxwv ord") == "qzxwv ord"


def test_search_reads_a_misspelt_query_as_meant(make_kb, tmp_path):
    kb = make_kb()
    kb.add([write(tmp_path / "faq.csv", "id,question,answer\n"
                  "cancel,How do I cancel my order?,Cancel from your account within one hour.\n"
                  "perks,What are the membership perks?,Free shipping and early sales.\n")])
    assert kb.search("cancell my ordr", mode="lexical")[0].entry_id == "cancel"
    assert kb.search("membershp perks", mode="lexical")[0].entry_id == "perks"
    kb.settings.spelling = False
    assert kb.search("membershp perkz", mode="lexical") == []


def test_the_speller_follows_the_knowledge_base(make_kb, tmp_path):
    """A write gives the speller the new words: the stale one serves while the new one is built aside."""
    kb = make_kb()
    kb.add([write(tmp_path / "faq.csv", "id,question,answer\ncancel,How do I cancel my order?,From your account.\n")])
    assert kb.search("cancell it", mode="lexical")[0].entry_id == "cancel"
    kb.add([write(tmp_path / "more.csv", "id,question,answer\nkettle,Is the kettle dishwasher safe?,Hand wash only.\n")])
    deadline = time.monotonic() + 30
    while not kb.search("kettel dishwaser", mode="lexical") or kb.search("kettel dishwaser", mode="lexical")[0].entry_id != "kettle":
        assert time.monotonic() < deadline, "the speller never learnt the new words"
        time.sleep(0.05)
    assert kb.search("cancell it", mode="lexical")[0].entry_id == "cancel"
