"""Integration: the real bundled SmolLM2 and MiniLM on the demo knowledge base."""

from __future__ import annotations

import pytest
from conftest import DATA

from chatbot import SupportBot, load_config
from chatbot.evaluate import evaluate_answers, load_answer_rows
from chatbot.model import BUNDLED_NAME, provision_bundled
from chatbot.versions import DEMO_ADAPTER
from retrieval import KnowledgeBase

pytestmark = pytest.mark.slow
DEMO_VERSION = DEMO_ADAPTER.name  # data/models/tidewell-sft, the committed fine-tuned adapter


@pytest.fixture(scope="module")
def demo_bot(bundled_model_home, real_embedder, demo_kb_into):
    config = load_config(bundled_model_home, ["model.max_new_tokens=48"], env={})
    kb = KnowledgeBase(demo_kb_into(config.kb_dir()), config.retrieval, real_embedder)
    bot = SupportBot(config, kb)
    yield bot
    bot.log.close()
    kb.close()


def test_provisioning_converts_once_and_then_reuses_the_folder(bundled_model_home):
    folder = provision_bundled(bundled_model_home / "models")
    assert folder.name == BUNDLED_NAME and (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert provision_bundled(bundled_model_home / "models") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_the_fine_tuned_demo_model_serves_and_answers_from_the_passages(demo_bot):
    demo_bot.settings.mode = "generate"
    response = demo_bot.respond("How long does delivery to Canada take?")
    pieces = list(response)
    reply = response.reply
    assert demo_bot.versions.serving_version("lm") == DEMO_VERSION
    assert pieces and reply.model == DEMO_VERSION and reply.prompt_tokens > 150 and 0 < reply.reply_tokens < 100
    # greedy and deterministic: the committed adapter copies its passage and cites it instead of rambling
    assert not reply.handed_off and reply.grounding >= 0.9 and reply.sources[0].entry_id.startswith("ship-")
    assert "[" not in reply.text or reply.text.rstrip().endswith("]")
    logged = demo_bot.log.message(reply.message_id)
    assert logged.model == DEMO_VERSION and logged.prompt_tokens == reply.prompt_tokens


def test_confident_faq_matches_get_the_curated_answer(demo_bot):
    demo_bot.settings.mode = "auto"
    reply = demo_bot.ask("Do your gift cards ever expire?")
    assert reply.mode == "template" and reply.sources[0].entry_id.startswith("gift-")
    assert reply.text == demo_bot.kb.entry(reply.sources[0].entry_id).answer + " [1]"


def test_out_of_scope_questions_hand_off(demo_bot):
    for question in ("What's the weather in Paris tomorrow?", "Write me a poem about the sea"):
        reply = demo_bot.ask(question)
        assert reply.handed_off and reply.reason == "low_confidence", (question, reply.confidence)


def test_eval_answers_on_a_slice_of_the_demo_set(demo_bot):
    demo_bot.settings.mode = "auto"
    rows = load_answer_rows(DATA / "eval" / "answers.csv")
    picked = [r for r in rows if r["answer"]][:6] + [r for r in rows if not r["answer"]][:12]
    report = evaluate_answers(demo_bot, picked, demo_bot.kb.embedder)
    assert report.n == 6 and report.n_out_of_scope == 12
    # deterministic (curated answers, no sampling): a drop here means retrieval or the policy regressed
    assert report.answered_similarity > 0.4 and report.template_share > 0.5
    in_scope_handoffs = sum(r["handed_off"] for r in report.rows[:6]) / 6
    assert report.handoff_recall > in_scope_handoffs  # out-of-scope questions hand off more often


def test_chit_chat_that_retrieval_finds_confidently_gets_a_reply_in_character_not_an_answer(demo_bot):
    demo_bot.settings.mode = "auto"
    question = "lol what's your favourite colour"
    reply = demo_bot.ask(question)
    assert reply.reason == "chitchat" and reply.declined and not reply.handed_off
    demo_bot.settings.small_talk = False  # the out-of-scope guard catches it too
    share = demo_bot.scope.false_alarms
    try:
        reply = demo_bot.ask(question)
        assert reply.reason == "out_of_scope" and reply.text == demo_bot.messages.out_of_scope and not reply.handed_off
        assert reply.confidence >= demo_bot.settings.handoff_confidence
        demo_bot.scope.false_alarms = 0.0  # without the guard the curated answer about a wrong-colour item went out
        assert demo_bot.ask(question).sources[0].entry_id == "dmg-wrong-item"
    finally:
        demo_bot.scope.false_alarms, demo_bot.settings.small_talk = share, True
    # alone, "and what about a rug?" looks like chit-chat to the classifier; as a follow-up it is answered
    first = demo_bot.ask("How do I return a sofa?")
    follow_up = demo_bot.ask("and what about a rug?", first.conversation_id)
    assert not first.handed_off and not follow_up.handed_off and follow_up.mode == "template"


def test_an_entry_the_company_wrote_outranks_the_generic_out_of_scope_examples(demo_bot, tmp_path):
    demo_bot.settings.mode = "auto"
    faq = tmp_path / "colour.csv"
    faq.write_text("id,question,answer,title\n" + "".join(
        f"fav-colour,{q},Tidewell teal.,Our favourite colour\n"
        for q in ("What's your favourite colour?", "Which colour do you like best?", "Do you have a favorite color?")))
    demo_bot.kb.add([faq])
    try:
        reply = demo_bot.ask("lol what's your favourite colour")
        assert not reply.handed_off and reply.text == "Tidewell teal. [1]"
    finally:
        demo_bot.kb.remove("fav-colour")
