"""The follow-up decision on our own examples: a message that stands on its own is never read as a follow-up."""

from __future__ import annotations

import pytest

from chatbot.followup import asks, goes_back, is_follow_up, names_own_topic, topic_message

FOLLOW_UPS = [
    "and how much is it?", "does it affect my credit?", "What about Canada?", "how long does that take?", "And for furniture?",
    "is it free?", "can I return it?", "How much?", "why?", "same for gift cards?", "what if it arrives damaged?",
    "and overnight?", "Can they deliver it on a Saturday?",
]
STANDING = [
    "Do you sell pizza?", "How long does a refund take?", "Do you ship to Canada?", "Is there a fee for returns?",
    "Where is my order TW-482913?", "Can I pay with PayPal?", "What's your returns policy for furniture?",
    "I bought a lamp and shade bundle, can I return just the shade and how much do I get back?",
    "Are there any discounts for teachers or nurses?", "how do i change my delivery address",
]


@pytest.mark.parametrize("message", FOLLOW_UPS)
def test_elliptical_messages_continue_the_previous_question(message):
    assert is_follow_up(message)


@pytest.mark.parametrize("message", STANDING)
def test_questions_that_name_their_topic_stand_on_their_own(message):
    assert not is_follow_up(message)


def test_a_follow_up_continues_the_last_question_that_stood_on_its_own_and_skips_small_talk():
    asked = ["How long does standard shipping take?", "and expedited?", "thanks!"]
    assert topic_message(asked, lambda text: text != "thanks!") == "How long does standard shipping take? and expedited?"
    assert topic_message(["Do you ship to Canada?", "Do gift cards expire?"]) == "Do gift cards expire?"
    assert topic_message([]) == ""


def test_a_follow_up_that_names_its_own_topic_surely_is_read_alone():
    assert is_follow_up("also can I return my kettle if I opened it?")
    assert names_own_topic("also can I return my kettle if I opened it?", 0.9)
    assert not names_own_topic("also can I return my kettle if I opened it?", 0.5)  # unsure alone: lean on the topic
    assert not names_own_topic("and expedited?", 0.99)  # too few words of its own


@pytest.mark.parametrize("message, question", [
    ("is there a fee", True), ("what do I bring", True), ("so what are my options", True), ("Hours?", True),
    ("good to know, thank u", False), ("fair enough", False), ("my landlord is so slow lol", False),
])
def test_a_question_is_told_from_a_remark(message, question):
    """Only a question leans on the entry the conversation is on; a remark is read alone."""
    assert asks(message) is question


def test_going_back_to_an_earlier_topic_names_it():
    assert goes_back("back to the refund - what if I paid with PayPal?") and goes_back("ok, about the missing item, how long?")
    assert not goes_back("is there a fee")
