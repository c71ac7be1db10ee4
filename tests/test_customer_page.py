"""The customer page's pieces that need no browser: the branding settings, how the log becomes bubbles and thumbs,
and the questions an empty chat suggests (tests/test_browser.py drives the page itself)."""

from __future__ import annotations

import base64

import pytest
from helpers import write

from chatbot import ConfigError
from ui.customer import MAX_LOGO_BYTES, feedback_values, header_html, logo_src, page_look, rateable_ids, rated_id
from ui.web import render_chat

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
FAQ = """id,question,answer,title,category,url
ship-ca,Do you ship to Canada?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping,https://help.example/ship-ca
ship-ca,How long does delivery to Canada take?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping,https://help.example/ship-ca
gift-exp,Do gift cards expire?,Gift cards never expire and have no fees.,Gift card expiry,Gift cards,
"""
HISTORY = [
    {"id": 1, "role": "customer", "text": "Do gift cards expire?", "sources": [], "handed_off": False, "rating": 0},
    {"id": 2, "role": "bot", "text": "Never. [1]", "sources": [{"n": 1, "title": "Gift cards", "url": "https://x.example/g"}],
     "handed_off": False, "rating": -1},
    {"id": 3, "role": "bot", "text": "A person will reply here.", "sources": [{"n": 1, "title": "Gift cards", "url": ""}],
     "handed_off": True, "rating": 0},
    {"id": 4, "role": "agent", "text": "Hello, I'm Sam.", "sources": [], "handed_off": False, "rating": 0},
    {"id": 5, "role": "bot", "text": "Glad to help.", "sources": [], "handed_off": False, "rating": 1},
]


def test_a_logo_file_is_sent_inline_and_anything_else_is_refused(tmp_path):
    assert logo_src("") == ""
    assert logo_src("https://cdn.example/logo.png") == "https://cdn.example/logo.png"
    src = logo_src(str(write(tmp_path / "logo.svg", SVG)))
    assert src.startswith("data:image/svg+xml;base64,") and base64.b64decode(src.split(",", 1)[1]) == SVG
    with pytest.raises(ConfigError, match="expected an image file"):
        logo_src(str(write(tmp_path / "notes.txt", "secret")))
    with pytest.raises(ConfigError, match="no such file"):
        logo_src(str(tmp_path / "missing.png"))
    with pytest.raises(ConfigError, match="over the limit"):
        logo_src(str(write(tmp_path / "huge.png", b"x" * (MAX_LOGO_BYTES + 1))))


def test_the_header_and_the_tab_show_the_company_with_its_logo_or_initial(tmp_path):
    from chatbot import load_config

    assert "Bolt &amp; Co &lt;b&gt;" in header_html("Bolt & Co <b>", "")
    assert 'class="brand-mark"' in header_html("bolt", "") and ">B</div>" in header_html("bolt", "")
    assert '<img class="brand-logo" src="https://x.example/l.png"' in header_html("Bolt", "https://x.example/l.png")
    config = load_config(tmp_path / "home", ["answer.company=bolt"], env={})
    prefix = '<link rel="icon" href="data:image/svg+xml;base64,'
    icon = page_look(config)["head"]  # the tab's icon: the initial, else Gradio's logo would show
    assert icon.startswith(prefix) and b">B</text>" in base64.b64decode(icon[len(prefix):-len('">')])
    config.serve.logo = "https://x.example/l.png"
    assert page_look(config)["head"] == '<link rel="icon" href="https://x.example/l.png">'


def test_bubbles_thumbs_and_rated_replies_follow_the_log():
    bubbles = render_chat(HISTORY)
    assert [b["role"] for b in bubbles] == ["user", "assistant", "assistant", "assistant", "assistant"]
    assert bubbles[1]["content"] == "Never. [1]\n\n*Source: \\[1\\] [Gift cards](https://x.example/g)*"
    assert bubbles[2]["content"] == "A person will reply here."  # a hand-off cites nothing
    assert 'class="agent-name"' in bubbles[3]["content"] and bubbles[3]["content"].endswith("Hello, I'm Sam.")
    assert feedback_values(HISTORY) == ["Dislike", None, None, "Like"]  # one per assistant bubble
    ids = rateable_ids(HISTORY)
    assert ids == [0, 2, 3, 0, 5]  # only the bot's replies are rated
    assert [rated_id(ids, i) for i in (1, [4, 0], 3, 9)] == [2, 5, 0, 0]  # 9: the reply still being typed


def test_an_empty_chat_suggests_the_configured_questions_else_the_most_answered(home_config):
    from ui.service import SupportService

    service = SupportService(home_config)
    service.bot.kb.add([write(home_config.home / "faq.csv", FAQ)])
    welcome = service.welcome()
    assert home_config.answer.company in welcome["greeting"] and welcome["suggested_questions"] == []  # nothing asked yet
    log = service.bot.log
    for entry, times in (("gift-exp", 1), ("ship-ca", 2)):
        for _ in range(times):
            conversation = log.start("web")
            log.add_message(conversation, "customer", "my own words, maybe personal")
            log.add_message(conversation, "bot", "answer", sources=[{"n": 1, "id": entry, "title": entry, "url": ""}])
    handed_off = log.start("web")
    log.add_message(handed_off, "bot", "a person will reply", sources=[{"n": 1, "id": "gift-exp", "title": "", "url": ""}],
                    handed_off=1, reason="low_confidence")
    assert service.welcome()["suggested_questions"] == ["Do you ship to Canada?", "Do gift cards expire?"]  # curated wording
    assert service.welcome(limit=1)["suggested_questions"] == ["Do you ship to Canada?"]
    home_config.serve.suggested_questions = ["Where is my order?"]
    home_config.serve.greeting = "Welcome!"
    assert service.welcome() == {"company": home_config.answer.company, "greeting": "Welcome!",
                                 "suggested_questions": ["Where is my order?"]}
