"""Suggestions from the log (training/suggestions.py) on a real log and a real knowledge base with the real
embedder (grouping reads meaning): each kind's extraction, accept / edit / reject / revert, auto-accept,
redaction, decisions taken once, and the CLI. The tests parametrized over `bot` run on both engines: the log and
the knowledge base in SQLite files, then in PostgreSQL."""

from __future__ import annotations

import json

import pytest
from helpers import write

from chatbot import SupportBot
from retrieval import KnowledgeBase
from training.suggestions import SuggestionError, accept, auto_accept, propose, refresh, reject, revert
from ui.cli import main

FAQ = """id,question,answer,title,category,url
ship-ca,How long does delivery to Canada take?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping,
ship-ca,Do you ship to Toronto?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping,
gift-exp,Do gift cards expire?,Gift cards never expire and have no fees.,Gift card expiry,Gift cards,
"""
ENGINES = ["sqlite", "postgresql"]
SHARPENING = "We sharpen Tidewell knives for free at the Port Alder warehouse; bring them in on a weekday."


@pytest.fixture
def bot(home_config, real_embedder, tmp_path, request):
    """A bot on a fresh home; on PostgreSQL where a test asks for it (`parametrize("bot", ENGINES, indirect=True)`)."""
    if getattr(request, "param", "sqlite") == "postgresql":
        home_config.storage.database_url = request.getfixturevalue("postgres_cluster").new_database()
    kb = KnowledgeBase(home_config.kb_dir(), home_config.retrieval, real_embedder, database=home_config.storage.database_url)
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    bot = SupportBot(home_config, kb)
    yield bot
    bot.log.close()
    kb.close()


def handed_off(bot: SupportBot, question: str, reply: str, reason: str = "low_confidence", action: str = "rejected") -> str:
    """A conversation the bot handed off and an agent answered, written to the log as the app writes it."""
    conversation = bot.log.start("web")
    bot.log.add_message(conversation, "customer", question)
    bot.log.add_message(conversation, "bot", "I'll pass you to a colleague.", handed_off=1, reason=reason, mode="policy")
    bot.log.add_agent_action(conversation, None, reply, action, "amy", draft="")
    return conversation


def answered(bot: SupportBot, question: str, entry_id: str, mode: str = "template") -> tuple[str, int]:
    conversation = bot.log.start("web")
    bot.log.add_message(conversation, "customer", question)
    entry = bot.kb.entry(entry_id)
    message = bot.log.add_message(conversation, "bot", f"{entry.answer} [1]", mode=mode, confidence=0.9,
                                  sources=[{"n": 1, "id": entry_id, "title": entry.title, "url": "", "score": 0.9}])
    return conversation, message


@pytest.mark.parametrize("bot", ENGINES, indirect=True)
def test_handed_off_questions_agents_answered_become_one_new_entry_that_is_searchable_once_accepted(bot, home_config):
    for question in ("Do you sharpen knives?", "can you sharpen my kitchen knives", "Is there a knife sharpening service?"):
        handed_off(bot, question, SHARPENING)
    handed_off(bot, "What is the capital of Peru?", "Lima, but we only know about home goods!", reason="out_of_scope")
    new = [s for s in propose(bot, home_config.learn) if s["kind"] == "new_entry"]
    sharpening = next(s for s in new if "sharpen" in s["questions"][0])
    assert len(sharpening["questions"]) == 3 and sharpening["answer"] == SHARPENING
    assert sharpening["evidence"]["count"] == 3 and not any("Peru" in q for s in new if s is not sharpening for q in sharpening["questions"])
    ids = refresh(bot, home_config.learn)
    assert refresh(bot, home_config.learn) == []  # the same evidence is proposed once
    sid = next(i for i in ids if bot.log.suggestion(i)["questions"] == sharpening["questions"])
    assert bot.kb.search("knife sharpening", k=1)[0].entry_id != sharpening["entry_id"]
    accept(bot, sid, by="ops", answer=SHARPENING + " Serrated blades excluded.")
    entry = bot.kb.entry(sharpening["entry_id"])
    assert entry.source == f"learned:{sid}" and entry.answer.endswith("Serrated blades excluded.")
    assert bot.kb.search("could you sharpen a knife for me", k=1)[0].entry_id == entry.id
    with pytest.raises(SuggestionError, match=f"suggestion {sid} is already accepted"):
        accept(bot, sid)
    assert all(s["id"] != sid for s in bot.log.suggestions("open"))  # accepted evidence is not proposed again
    revert(bot, sid, by="ops")
    assert bot.kb.entry(entry.id) is None and bot.log.suggestion(sid)["status"] == "reverted"


def test_a_rejected_suggestion_stays_rejected_until_new_evidence(bot, home_config):
    handed_off(bot, "Do you sharpen knives?", SHARPENING)
    (sid,) = refresh(bot, home_config.learn)
    reject(bot, sid, by="ops")
    assert refresh(bot, home_config.learn) == [] and bot.log.suggestions("open") == []
    handed_off(bot, "can you sharpen my knives", SHARPENING)
    (again,) = refresh(bot, home_config.learn)
    assert again != sid and bot.log.suggestion(again)["evidence"]["count"] == 2


def test_personal_data_never_reaches_a_suggestion(bot, home_config):
    handed_off(bot, "Do you sharpen knives? I'm jane.doe@example.com", SHARPENING + " Call 555-201-7788 to book.")
    (suggestion,) = [s for s in propose(bot, home_config.learn) if s["kind"] == "new_entry"]
    text = json.dumps(suggestion)
    assert "jane.doe@example.com" not in text and "555-201-7788" not in text


def test_a_resolved_wording_becomes_a_variant_and_auto_accept_applies_it(bot, home_config):
    conversation, message = answered(bot, "will my parcel to montreal take long", "ship-ca")
    bot.log.add_feedback(message, True)
    answered(bot, "Do you ship to Toronto?", "ship-ca")  # already a variant: nothing to add
    variants = [s for s in propose(bot, home_config.learn) if s["kind"] == "variant"]
    assert [(s["entry_id"], s["questions"]) for s in variants] == [("ship-ca", ["will my parcel to montreal take long"])]
    refresh(bot, home_config.learn)
    assert len(auto_accept(bot, home_config.learn)) == 1  # variants are auto-accepted by default
    assert "will my parcel to montreal take long" in bot.kb.entry("ship-ca").questions
    assert bot.kb.entry("ship-ca").answer == "Canada orders arrive in 5-10 business days."


def test_repeated_rewrites_of_a_curated_answer_propose_a_revision_and_revert_restores_it(bot, home_config):
    better = "Gift cards never expire, have no fees, and can be used online or by phone."
    for question in ("do gift cards expire", "is there an expiry on gift cards"):
        conversation, message = answered(bot, question, "gift-exp")
        bot.log.add_agent_action(conversation, message, better, "edited", "amy")
    (revision,) = [s for s in propose(bot, home_config.learn) if s["kind"] == "revision"]
    assert revision["answer"] == better and revision["previous"] == "Gift cards never expire and have no fees."
    home_config.learn.min_revisions = 3
    assert not [s for s in propose(bot, home_config.learn) if s["kind"] == "revision"]
    home_config.learn.min_revisions = 2
    sid = next(i for i in refresh(bot, home_config.learn) if bot.log.suggestion(i)["kind"] == "revision")
    accept(bot, sid)
    assert bot.kb.entry("gift-exp").answer == better
    revert(bot, sid)
    assert bot.kb.entry("gift-exp").answer == "Gift cards never expire and have no fees."


def test_an_entry_rated_down_far_more_than_the_rest_is_flagged(bot, home_config):
    for i in range(4):
        _, message = answered(bot, f"gift card question {i}", "gift-exp")
        bot.log.add_feedback(message, False)
    for i in range(8):
        _, message = answered(bot, f"canada question {i}", "ship-ca")
        bot.log.add_feedback(message, True)
    flags = [s for s in propose(bot, home_config.learn) if s["kind"] == "flag"]
    assert [(f["entry_id"], f["evidence"]["bad_rate"]) for f in flags] == [("gift-exp", 1.0)]


def test_a_suggestion_whose_entry_was_removed_is_refused_and_stays_open(bot, home_config):
    conversation, message = answered(bot, "will my parcel to montreal take long", "ship-ca")
    bot.log.add_feedback(message, True)
    (sid,) = refresh(bot, home_config.learn)
    bot.kb.remove("ship-ca")
    with pytest.raises(SuggestionError, match="entry 'ship-ca' was removed meanwhile"):
        accept(bot, sid)
    assert bot.log.suggestion(sid)["status"] == "open"


def test_the_cli_lists_accepts_and_rejects(bot, home_config, capsys):
    handed_off(bot, "Do you sharpen knives?", SHARPENING)
    handed_off(bot, "Can I pay with a cheque?", "Sorry, we don't take cheques.")
    home = ["--home", str(home_config.home), "--set", "retrieval.embedder=", "-q"]  # the KB was built with the bundled embedder
    assert main(["kb", "suggestions", "--json", *home]) == 0
    listed = json.loads(capsys.readouterr().out)["suggestions"]
    assert {s["kind"] for s in listed} == {"new_entry"} and len(listed) == 2
    first, second = (s["id"] for s in listed)
    assert main(["kb", "accept", str(first), "--json", *home]) == 0
    assert json.loads(capsys.readouterr().out)["suggestions"][0]["status"] == "accepted"
    assert main(["kb", "reject", str(second), *home]) == 0
    assert main(["kb", "accept", str(second), *home]) == 1
    assert f"suggestion {second} is already rejected" in capsys.readouterr().err


def test_learn_without_training_applies_auto_accepted_kinds_and_writes_its_report(bot, home_config, capsys):
    handed_off(bot, "Do you sharpen knives?", SHARPENING)
    conversation, message = answered(bot, "will my parcel to montreal take long", "ship-ca")
    bot.log.add_feedback(message, True)
    home = ["--home", str(home_config.home), "--set", "retrieval.embedder=", "-q"]
    assert main(["learn", "--no-train", "--json", *home]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["new_suggestions"]) == 2 and len(report["auto_accepted"]) == 1
    assert report["open_suggestions"] == {"new_entry": 1} and report["trained"] == []
    assert "will my parcel to montreal take long" in bot.kb.entry("ship-ca").questions
    assert "1 new_entry" in open(f"{report['report']}/report.md", encoding="utf-8").read()
    assert main(["learn", "--no-train", "--json", *home]) == 0
    assert json.loads(capsys.readouterr().out)["new_suggestions"] == []


def test_a_curated_answer_of_the_wrong_entry_rejected_by_an_agent_teaches_the_right_entry_not_a_revision(bot, home_config):
    conversation, message = answered(bot, "do you ship gift cards to toronto", "ship-ca")
    bot.log.add_agent_action(conversation, message, bot.kb.entry("gift-exp").answer, "rejected", "amy")
    conversation, message = answered(bot, "can you sharpen my knives", "gift-exp")
    bot.log.add_agent_action(conversation, message, SHARPENING, "rejected", "amy")
    proposed = {(s["kind"], s["entry_id"]) for s in propose(bot, home_config.learn)}
    assert ("variant", "gift-exp") in proposed and not any(kind == "revision" for kind, _ in proposed)
    assert any(kind == "new_entry" for kind, _ in proposed)


def test_the_daily_run_is_due_once_a_day_after_its_time():
    from datetime import datetime

    from chatbot import ConfigError
    from ui.daily import daily_time, due

    at = daily_time("02:30")
    assert at == (2, 30) and daily_time("") is None
    with pytest.raises(ConfigError, match="learn.daily_at '25:00': expected a time of day as HH:MM"):
        daily_time("25:00")
    with pytest.raises(ConfigError, match="serve.sync_daily_at '3am': expected a time of day as HH:MM"):
        daily_time("3am", "serve.sync_daily_at")
    assert not due(datetime(2026, 12, 7, 2, 29), at, None)
    assert due(datetime(2026, 12, 7, 2, 31), at, datetime(2026, 12, 6, 2, 31))
    assert not due(datetime(2026, 12, 7, 9, 0), at, datetime(2026, 12, 7, 2, 31))  # already ran today


@pytest.mark.parametrize("bot", ENGINES, indirect=True)
def test_two_processes_accepting_the_same_suggestion_apply_it_once(bot, home_config, real_embedder, tmp_path):
    from chatbot import ConversationLog

    handed_off(bot, "Do you sharpen knives?", SHARPENING)
    (sid,) = refresh(bot, home_config.learn)
    url = home_config.storage.database_url  # on PostgreSQL the other is a replica: its own home, the same database
    kb = KnowledgeBase(tmp_path / "replica" / home_config.kb, home_config.retrieval, real_embedder, database=url) if url else bot.kb
    other = SupportBot(home_config, kb, log=ConversationLog(home_config.log_database))  # its own connections, as another process has
    accept(other, sid, by="ops-a")
    with pytest.raises(SuggestionError, match=f"suggestion {sid} is already accepted"):
        accept(bot, sid, by="ops-b")
    assert bot.log.suggestion(sid)["decided_by"] == "ops-a" and len([e for e in bot.kb.entries() if e.source == f"learned:{sid}"]) == 1
    assert bot.kb.search("can you sharpen my knives", k=1)[0].entry_id == kb.search("can you sharpen my knives", k=1)[0].entry_id
    other.log.close()
    if url:
        kb.close()
