"""Prompt building and trimming, citation mapping, grounding."""

from chatbot.citations import resolve_citations
from chatbot.config import AnswerSettings
from chatbot.grounding import grounding
from chatbot.prompt import Source, Turn, build_messages, question_message, system_prompt


def words(text: str) -> int:
    return len(text.split())


SOURCES = [Source(i, f"e{i}", f"Title {i}", f"passage {i} " + "word " * 20) for i in (1, 2, 3)]


def test_system_prompt_carries_company_tone_and_rules():
    settings = AnswerSettings(company="Acme", tone="warm", rules=["Rule one."])
    text = system_prompt(settings)
    assert "Acme" in text and "warm" in text and "- Rule one." in text


def test_passages_are_numbered_with_titles_and_question_is_last():
    messages, kept, n_history = build_messages(AnswerSettings(), SOURCES, [], "Where is it?", words, 50)
    assert [m["role"] for m in messages] == ["system", "user"]
    last = messages[-1]["content"]
    assert "[1] Title 1\npassage 1" in last and "[3] Title 3" in last and last.endswith("Customer question: Where is it?")
    assert kept == SOURCES and n_history == 0


def test_history_is_trimmed_oldest_first_and_passages_always_fit():
    history = [Turn("customer" if i % 2 == 0 else "bot", f"turn{i} " + "x " * 30) for i in range(10)]
    settings = AnswerSettings(context_tokens=400)
    messages, kept, n_history = build_messages(settings, SOURCES, history, "and then?", words, 50)
    assert kept == SOURCES
    assert 0 < n_history < 10
    contents = [m["content"] for m in messages[1:-1]]
    assert contents[-1].startswith("turn9") and not any(c.startswith("turn0 ") for c in contents)
    assert messages[1]["role"] == "user"  # never starts the history with a bot turn
    assert sum(words(m["content"]) for m in messages) <= 400 - 50


def test_passages_are_dropped_last_first_when_even_they_overflow():
    two = words(system_prompt(AnswerSettings())) + words(question_message(SOURCES[:2], "q")) + 16
    settings = AnswerSettings(context_tokens=two + 20 + 5)
    _, kept, n_history = build_messages(settings, SOURCES, [Turn("customer", "hi")], "q", words, 20)
    assert [s.number for s in kept] == [1, 2] and n_history == 0


def test_citations_keep_real_numbers_and_drop_invented_ones():
    text, cited = resolve_citations("Five days [2]. Free over $50 [7]. See [1, 9] and [2][1].", SOURCES)
    assert text == "Five days [2]. Free over $50. See [1] and [2] [1]."
    assert [s.entry_id for s in cited] == ["e2", "e1"]
    assert resolve_citations("No citations here.", SOURCES) == ("No citations here.", [])


def test_grounding_counts_reply_words_found_in_passages():
    passages = ["Canada orders arrive in 5-10 business days and cost $14.95."]
    assert grounding("Canada orders arrive in 5-10 business days.", passages) == 1.0
    assert grounding("Thanks, happy to help!", passages) == 1.0
    drifted = grounding("Canada orders arrive in 2 weeks via Dreamweaver couriers.", passages)
    assert drifted < 0.6
    assert grounding("Deliveries to Canada arriving", ["delivery to canada arrives"]) == 1.0


def test_grounding_accepts_the_customers_facts_and_one_step_of_arithmetic_but_not_invented_numbers():
    passages = ["Returns cost a $6.95 label fee, deducted from the refund."]
    question = "I paid $80 for a lamp and shade bundle. How much do I get back if I return it?"
    worked = "You get $73.05 back: the $80 you paid minus the $6.95 label fee."
    assert grounding(worked, passages, question) == 1.0
    assert grounding(worked, passages) < 1.0  # without the question, the lamp's price is nobody's fact
    assert grounding("You get $61.20 back: the $80 you paid minus the $6.95 label fee.", passages, question) < 1.0
    assert grounding("You get 3 refunds.", passages, question) < 1.0  # a small whole number must be stated


def test_passage_pieces_join_into_the_prompt_and_are_found_again_from_the_texts():
    from chatbot.prompt import passage_pieces, passages_block, pieces_in, question_message

    sources = [Source(1, "a", "Delivery", "Two days."), Source(2, "b", "Returns [2]", "Thirty days.\n\nUnused only.")]
    pieces = passage_pieces(sources)
    assert pieces == ["[1]", " Delivery\nTwo days.", "\n\n[2]", " Returns [2]\nThirty days.\n\nUnused only."]
    assert "".join(pieces) == passages_block(sources)
    message = question_message(sources, "How long?")
    assert pieces_in(message, [s.text for s in sources]) == pieces
    assert pieces_in(message, ["Thirty days."]) == [] and pieces_in("no passages", ["Two days."]) == []
