"""Promoting a trained retriever: the gate on a copy of the knowledge base, the switch of every knowledge base
of the home (a running bot follows it), rollback, and a new knowledge base starting on the serving retriever.
Tiny random models: whether the candidate is better is set by the gate's tolerance, not left to chance."""

from __future__ import annotations

import pytest
from helpers import write

from chatbot import SupportBot, load_config, open_kb
from chatbot.versions import VersionError
from retrieval import KnowledgeBase
from training import promote, rollback
from ui.cli import main

FAQ = """id,question,answer,title,category
ship-ca,How long does delivery to Canada take?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping
ship-ca,Do you ship to Toronto?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping
ship-ca,When will my parcel reach Vancouver?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping
gift-exp,Do gift cards expire?,Gift cards never expire and have no fees.,Gift card expiry,Gift cards
gift-exp,Is there an expiry date on gift cards?,Gift cards never expire and have no fees.,Gift card expiry,Gift cards
gift-exp,Can my gift voucher run out?,Gift cards never expire and have no fees.,Gift card expiry,Gift cards
phone,What is your phone number?,Call us on 1-800-555-0142.,Phone support,Contact
phone,How can I call you?,Call us on 1-800-555-0142.,Phone support,Contact
phone,Is there a hotline?,Call us on 1-800-555-0142.,Phone support,Contact
"""


def configure(home, tiny_embedder_path, tiny_lm_path, tolerance: float):
    """The home's settings for the gate: the tiny LM it was trained with (without model.path, `promote` would register
    and convert the bundled SmolLM2 first: about 20 s per test)."""
    queries = write(home.parent / "queries.csv", "query,expected_id\nparcel to Canada,ship-ca\n")
    return load_config(home, [f"retrieval.embedder={tiny_embedder_path}", f"model.path={tiny_lm_path}",
                              f"gate.tolerance={tolerance}", f"gate.retrieval_file={queries}"], env={})


@pytest.fixture
def trained(tmp_path, tiny_embedder_path, tiny_lm_path, registry) -> tuple:
    """A home with two knowledge bases and a retriever trained on it (one step); returns (home, version)."""
    home = tmp_path / "home"
    faq = write(tmp_path / "faq.csv", FAQ)
    for name in ("default", "other"):
        assert main(["kb", "add", str(faq), "--kb", name, "--home", str(home), "-q", f"--set=retrieval.embedder={tiny_embedder_path}"]) == 0
    assert main(["train", "retriever", "--max-steps", "1", "--batch-size", "2", "--home", str(home), "-q",
                 f"--set=retrieval.embedder={tiny_embedder_path}", f"--set=model.path={tiny_lm_path}"]) == 0
    return home, registry(home).resolve("latest")


def embedders(config) -> dict[str, str]:
    out = {}
    for name in ("default", "other"):
        kb = KnowledgeBase(config.kb_dir(name), config.retrieval)
        out[name] = kb.embedder.path.name
        assert kb.search("Do you ship to Toronto?", mode="dense")[0].dense > 0.999  # vectors and queries agree
        kb.close()
    return out


def test_a_retriever_worse_than_the_serving_one_is_refused_and_nothing_changes(trained, tiny_embedder_path, tiny_lm_path, registry):
    home, version = trained
    config = configure(home, tiny_embedder_path, tiny_lm_path, tolerance=-1.0)  # any candidate counts as worse
    result = promote(config, version)
    assert not result.passed and not result.promoted and result.questions >= 4  # the file's query + 3 held-out variants
    assert {r["metric"] for r in result.rows} == {"top1", "recall_at_5", "mrr"}
    assert registry(home).serving_version("retriever") == ""
    assert set(embedders(config).values()) == {tiny_embedder_path.name}


def test_promotion_switches_every_knowledge_base_and_a_running_bot_follows_then_rollback(trained, tiny_embedder_path, tiny_lm_path, registry):
    home, version = trained
    config = configure(home, tiny_embedder_path, tiny_lm_path, tolerance=1.0)  # any candidate passes
    bot = SupportBot(config)
    before = bot.kb.search("Do you ship to Toronto?", mode="dense")[0]
    result = promote(config, version)
    assert result.passed and result.promoted
    assert registry(home).serving_version("retriever") == version
    assert set(embedders(config).values()) == {version}
    after = bot.kb.search("Do you ship to Toronto?", mode="dense")[0]  # the bot opened before the switch
    assert after.dense > 0.999 and bot.kb.embedder.path.name == version and before.entry_id == after.entry_id

    fresh = load_config(home, [f"retrieval.embedder={tiny_embedder_path}", "kb=new"], env={})
    kb = open_kb(fresh)  # a knowledge base created now starts on the serving retriever
    assert kb.embedder.path.name == version
    kb.close()

    assert rollback(config, "retriever") == ""
    assert registry(home).serving_version("retriever") == ""
    assert set(embedders(config).values()) == {tiny_embedder_path.name}
    assert bot.kb.search("Do you ship to Toronto?", mode="dense")[0].dense > 0.999
    with pytest.raises(VersionError, match="nothing to roll back"):
        rollback(config, "retriever")
    bot.log.close()
