"""What the staff pages read from SupportService, without a browser: the queue says why in words, the
knowledge base pages, and a gate report is found for every version whose gate scores the models table shows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from helpers import write


@pytest.fixture
def service(home_config):
    from ui.service import SupportService

    return SupportService(home_config)


def token(service, role: str) -> str:
    return service.login(role, role)["token"]


def test_the_queue_says_why_in_words_and_keeps_the_cause_of_a_hand_off(service):
    log = service.bot.log
    conversation = log.start("web")
    log.add_message(conversation, "customer", "Can I pay with seashells?")
    log.add_message(conversation, "bot", "I'm not certain...", handed_off=1, reason="low_confidence")
    log.set_status(conversation, "handed_off")
    log.add_message(conversation, "customer", "Hello?")
    log.add_message(conversation, "bot", "I've added this to your conversation.", handed_off=1, reason="waiting_for_agent")
    (item,) = service.queue(token(service, "agent"))["items"]
    assert item["handoff_reason"] == "low_confidence"  # not the acknowledgement of the later message
    assert item["why"] == "handed off: no confident match in the knowledge base" and item["last_customer"] == "Hello?"


def test_knowledge_base_pages_stay_within_the_entries(service, tmp_path):
    rows = "".join(f"q{i},Question {i}?,Answer {i}.\n" for i in range(45))
    service.bot.kb.add([write(tmp_path / "faq.csv", "id,question,answer\n" + rows)])
    ops = token(service, "ops")
    page = service.kb_page(ops, "", 3, 20)
    assert (page["page"], page["pages"], page["total"], len(page["entries"])) == (3, 3, 45, 5)
    assert service.kb_page(ops, "", 9, 20)["page"] == 3 and service.kb_page(ops, "", 0, 20)["page"] == 1
    assert [e["id"] for e in service.kb_page(ops, "q12", 1, 20)["entries"]] == ["q12"]


def test_a_gate_report_is_found_for_every_version_with_gate_scores(service, registry):
    from chatbot.versions import Card
    from training.gate import GateResult, write_report
    from ui.service import ServiceError

    versions, ops = registry(service.config), token(service, "ops")
    scores = {"answer_similarity": 0.47, "grounding": 0.99, "eval_set": "x", "questions": 96, "at": "2026-11-24T02:07:39+00:00"}
    for name, metrics in (("shipped", {"gate": scores}), ("served", {"gate": scores}), ("candidate", {}), ("untested", {})):
        versions.folder(name).mkdir(parents=True)
        versions.save_card(Card(name, "lm", metrics=metrics, created="2026-11-24T00:00:00+00:00"))
    rows = [{"metric": "answer_similarity", "serving": 0.47, "candidate": 0.5, "delta": 0.03, "ok": True}]
    write_report(GateResult("candidate", "served", passed=True, promoted=True, rows=rows, questions=4), versions.folder("candidate") / "gate")

    as_candidate = service.gate_report(ops, "candidate")
    assert "candidate was the candidate" in as_candidate["markdown"] and as_candidate["plot"].endswith("report.png")
    as_serving = service.gate_report(ops, "served")  # the comparison is kept in the candidate's folder
    assert "served was the serving version" in as_serving["markdown"] and "| answer similarity | 0.47 | 0.5 |" in as_serving["markdown"]
    shipped = service.gate_report(ops, "shipped")  # came with scores, no comparison in this home
    assert "Gate scores of shipped" in shipped["markdown"] and "| grounding | 0.99 |" in shipped["markdown"] and shipped["plot"] == ""
    with pytest.raises(ServiceError, match="has not been through the gate yet"):
        service.gate_report(ops, "untested")


def test_times_read_as_people_say_them():
    from ui.staff import ago

    now = datetime(2026, 12, 6, 20, 0, tzinfo=timezone.utc)
    stamps = [now - timedelta(seconds=20), now - timedelta(minutes=4), now - timedelta(hours=3), now - timedelta(days=1, hours=2),
              now - timedelta(days=5)]
    assert [ago(s.isoformat(), now) for s in stamps] == ["just now", "4 min ago", "3 h ago", "yesterday", "5 days ago"]
    assert ago("2026-10-01T08:00:00+00:00", now) == "01 Oct 2026" and ago("") == ""


def test_only_ops_list_and_decide_suggestions(service, tmp_path):
    from ui.auth import AuthError
    from ui.service import ServiceError

    service.bot.kb.add([write(tmp_path / "faq.csv", "id,question,answer\ngift,Do gift cards expire?,Never.\n")])
    conversation = service.bot.log.start("web")
    service.bot.log.add_message(conversation, "customer", "Do you sharpen knives?")
    service.bot.log.add_message(conversation, "bot", "I'll pass you on.", handed_off=1, reason="low_confidence")
    service.bot.log.add_agent_action(conversation, None, "Yes, for free at the warehouse.", "rejected", "amy", draft="")
    for caller in ("", token(service, "agent")):
        with pytest.raises(AuthError):
            service.suggestions(caller)
        with pytest.raises(AuthError):
            service.decide(caller, 1, "accept")
    ops = token(service, "ops")
    (suggestion,) = service.suggestions(ops)
    assert suggestion["kind"] == "new_entry" and suggestion["answer"] == "Yes, for free at the warehouse."
    accepted = service.decide(ops, suggestion["id"], "accept", questions=["Do you sharpen knives?", "Can you sharpen my knife?"])
    assert accepted["decided_by"] == "ops" and service.bot.kb.entry(accepted["entry_id"]).questions[1] == "Can you sharpen my knife?"
    with pytest.raises(ServiceError, match=f"suggestion {suggestion['id']} is already accepted"):
        service.decide(ops, suggestion["id"], "reject")
    assert service.suggestions(ops) == [] and service.suggestions(ops, status="accepted")[0]["id"] == suggestion["id"]

