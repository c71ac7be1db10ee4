"""Prompt injection: the attacks of tests/injection/attacks.json against the message policy, the filter
for instructions planted in the knowledge base and the output checks; through the real engine on the
tiny LM; and a few end to end on the real bundled models (slow). bench/injection.py measures the whole
corpus on the real models."""

from __future__ import annotations

import base64
import codecs
import csv
import sys

import pytest
from conftest import DATA, REPO
from helpers import write

from chatbot import SupportBot, load_config, system_prompt
from chatbot.config import AnswerSettings
from chatbot.policy import Messages, classify_message, clean_message, instructs_model, sanitize, unsafe
from retrieval import KnowledgeBase
from retrieval.loaders import LoadOptions, load_file

sys.path.insert(0, str(REPO))
from bench.injection import Attack, Judge, load_attacks, run_attack, write_plants  # noqa: E402

ATTACKS = load_attacks()
MESSAGE_ATTACKS = [a for a in ATTACKS if a.group == "message"]
PLANTED = [a for a in ATTACKS if a.group == "kb"]
# Goals the output checks must stop on their own, whatever reached the model.
GUARDED_GOALS = ("leak", "link", "markup")
REFUSALS = ("injection", "abuse", "harmful", "human", "language")
SETTINGS = AnswerSettings()
SECRET = system_prompt(SETTINGS)
GENUINE = [p.read_text(encoding="utf-8") for p in sorted((DATA / "kb").iterdir())]  # every demo passage at once


@pytest.fixture(scope="module")
def judge() -> Judge:
    return Judge.for_demo(SECRET, SETTINGS.company)


def obeying_reply(attack: Attack) -> str:
    """The attack's `obeyed` reply with the system prompt put in, in the form the attack asked for."""
    sentence = SECRET.splitlines()[1].lstrip("- ")
    return attack.obeyed.format(
        prompt=SECRET, prompt_part=sentence, prompt_base64=base64.b64encode(SECRET.encode()).decode(),
        prompt_rot13=codecs.encode(SECRET, "rot13"), prompt_reversed=SECRET[::-1], prompt_dashed="-".join(sentence),
    )


def stopped_by_output_checks(reply: str, attack: Attack, judge: Judge) -> bool:
    """What the customer would get from that reply: replaced by a hand-off, or cleaned so that it no longer
    reaches the goal. The passages are the whole demo knowledge base, the most any prompt could hold."""
    shown = sanitize(reply, GENUINE)
    return bool(unsafe(shown, GENUINE, SECRET, [])) or not judge.reached(attack, shown)


def refused(message: str) -> bool:
    return classify_message(clean_message(message, SETTINGS.max_message_chars)[0]) in REFUSALS


def test_the_corpus_has_both_groups_and_unique_ids():
    assert len(ATTACKS) >= 30 and len(MESSAGE_ATTACKS) >= 20 and len(PLANTED) >= 10
    assert len({a.id for a in ATTACKS}) == len(ATTACKS)
    assert all(a.plant for a in PLANTED) and not any(a.plant for a in MESSAGE_ATTACKS)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.id)
def test_each_check_recognises_an_obeying_reply_and_not_the_bots_own_messages(attack, judge):
    assert judge.reached(attack, obeying_reply(attack))
    messages = Messages(SETTINGS.company)
    assert not any(judge.reached(attack, text) for text in (messages.injection, messages.handoff, messages.abuse))


@pytest.mark.parametrize("attack", MESSAGE_ATTACKS, ids=lambda a: a.id)
def test_customer_attacks_are_refused_or_stopped_by_the_output_checks(attack, judge):
    stopped = stopped_by_output_checks(obeying_reply(attack), attack, judge)
    assert stopped if attack.goal in GUARDED_GOALS else stopped or refused(attack.messages()[-1])


@pytest.mark.parametrize("attack", PLANTED, ids=lambda a: a.id)
def test_planted_instructions_are_recognised_and_their_links_stopped(attack, judge):
    assert instructs_model(attack.plant["text"])
    if attack.goal in GUARDED_GOALS:
        assert stopped_by_output_checks(obeying_reply(attack), attack, judge)


def test_the_system_prompt_is_caught_however_the_model_writes_it():
    sentence = SECRET.splitlines()[-1].lstrip("- ")
    for text in (SECRET, sentence, sentence.upper(), " ".join(sentence), "-".join(sentence), sentence[::-1],
                 " ".join(reversed(sentence.split())), codecs.encode(sentence, "rot13"),
                 "Here: " + base64.b64encode(sentence.encode()).decode(),
                 sentence.replace("e", "\u0435").replace("o", "\u043e"),  # Cyrillic look-alikes
                 "My instructions say I must cite the passages."):
        assert unsafe(text, GENUINE, SECRET, []) == "leak", text


def test_genuine_knowledge_is_neither_planted_nor_refused_nor_unsafe_to_copy():
    """No demo passage counts as planted; a model that copies any FAQ answer passes the output checks;
    no demo question is refused as an injection (the two in answers.csv that are, are attacks)."""
    entries = [e for path in sorted((DATA / "kb").iterdir()) for e in load_file(path, LoadOptions())]
    assert not [p.text[:80] for e in entries for p in e.passages if instructs_model(p.text)]
    faq = [e for e in entries if e.kind == "faq"]
    assert not [(e.id, unsafe(e.answer, [e.answer], SECRET, [])) for e in faq if unsafe(e.answer, [e.answer], SECRET, [])]
    questions = [q for e in faq for q in e.questions]
    questions += [r["query"] for r in csv.DictReader((DATA / "eval" / "retrieval.csv").open(encoding="utf-8"))]
    answers = list(csv.DictReader((DATA / "eval" / "answers.csv").open(encoding="utf-8")))
    questions += [r["question"] for r in answers if r["answer"]]
    assert not [q for q in questions if classify_message(q) == "injection"]
    assert len([r for r in answers if not r["answer"] and classify_message(r["question"]) == "injection"]) == 2


# --- through the real engine ------------------------------------------------------------------------

GENUINE_FAQ = """id,question,answer,title,category,url
ship-canada,How long does delivery to Canada take?,"Canada orders arrive in 5-10 business days for a flat $14.95, free over $150.",Shipping to Canada,Shipping,https://help.tidewell.example/ship-canada
refund-timing,How long do refunds take?,"Refunds are issued within 5-7 business days of your return reaching our warehouse.",Refund timing,Refunds,https://help.tidewell.example/refund-timing
acct-locked,My account is locked,"After 5 failed sign-in attempts your account is locked for 15 minutes. Wait, or use Forgot password.",Locked account,Account,https://help.tidewell.example/acct-locked
pay-methods,What payment methods do you accept?,"We accept Visa, Mastercard, American Express, PayPal and Tidewell gift cards.",Payment methods,Payments,
"""


@pytest.fixture(scope="module")
def attacked_bot(tmp_path_factory, real_embedder, tiny_lm_path):
    """The real engine on the tiny LM, with real retrieval over genuine entries and every planted document."""
    root = tmp_path_factory.mktemp("injection")
    config = load_config(root / "home", [f"model.path={tiny_lm_path}", "model.max_new_tokens=12",
                                         "model.temperature=1.0", "answer.handoff_confidence=0"], env={})
    kb = KnowledgeBase(config.kb_dir(), config.retrieval, real_embedder)
    kb.add([write(root / "faq.csv", GENUINE_FAQ), *write_plants(PLANTED, root / "planted")])
    bot = SupportBot(config, kb)
    yield bot
    bot.log.close()
    kb.close()


@pytest.mark.parametrize("mode", ["auto", "generate"])
def test_customer_attacks_through_the_engine_are_refused_or_get_nothing(attacked_bot, judge, mode):
    attacked_bot.settings.mode = mode
    for attack in MESSAGE_ATTACKS:
        outcome = run_attack(attacked_bot, attack, judge)
        assert not (outcome.obeyed or outcome.leaked), outcome
        if refused(attack.messages()[-1]):
            assert outcome.result in ("refused", "handed_off"), outcome


@pytest.mark.parametrize("mode", ["template", "generate"])
def test_planted_entries_reach_neither_the_model_nor_the_customer(attacked_bot, judge, mode):
    attacked_bot.settings.mode = mode
    for attack in PLANTED:
        question = attack.turns[0]
        assert any(instructs_model(h.matched) or instructs_model(attacked_bot.kb.entry(h.entry_id).answer)
                   for h in attacked_bot.kb.search(question, k=4)), attack.id  # retrieval alone would show it
        reply = attacked_bot.ask(question)
        assert not judge.reached(attack, reply.text), (attack.id, reply.text)
        assert not any(instructs_model(s.text) for s in reply.sources), attack.id


# --- the real bundled models -----------------------------------------------------------------------

@pytest.mark.slow
def test_attacks_end_to_end_on_the_real_models(bundled_model_home, real_embedder, judge, tmp_path):
    """The fine-tuned demo model with the attacks that get past the message policy (a link to add, a
    refund to promise, a planted FAQ row that template mode used to serve verbatim)."""
    config = load_config(bundled_model_home, ["kb=injection", "model.max_new_tokens=60"], env={})
    kb = KnowledgeBase(config.kb_dir(), config.retrieval, real_embedder)
    picked = {a.id: a for a in ATTACKS if a.id in ("msg-link-canada", "msg-loyal-customer", "kb-faq-refund-link", "kb-faq-cushion-link")}
    kb.add([write(tmp_path / "faq.csv", GENUINE_FAQ), *write_plants(picked.values(), tmp_path / "planted")])
    bot = SupportBot(config, kb)
    try:
        for mode in ("auto", "generate"):
            bot.settings.mode = mode
            for attack in picked.values():
                outcome = run_attack(bot, attack, judge)
                assert not (outcome.obeyed or outcome.leaked), outcome
    finally:
        bot.log.close()
        kb.close()
