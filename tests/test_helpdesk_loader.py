"""Zendesk Help Center and Intercom article exports: one document entry per published article."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from retrieval.helpdesk_loader import WRONG_SHAPE, export_entries, is_export
from retrieval.loaders import LoadOptions
from retrieval.records import IngestError

FIXTURES = Path(__file__).parent / "fixtures" / "helpdesk"
ZENDESK = json.loads((FIXTURES / "zendesk_articles.json").read_text(encoding="utf-8"))
INTERCOM = json.loads((FIXTURES / "intercom_articles.json").read_text(encoding="utf-8"))


def test_zendesk_published_articles_become_documents_with_section_names():
    entries = export_entries(ZENDESK, LoadOptions())
    assert [(e.id, e.title, e.category) for e in entries] == [
        ("zendesk-7100001", "Returning an item", "Orders & Returns"),
        ("zendesk-7100002", "Delivery costs", "Delivery"),
        ("zendesk-7100003", "Gift cards", "Payments & Gift Cards"),
        ("zendesk-7100005", "Getting started with your order", "Orders & Returns"),
    ]
    assert entries[0].url == "https://help.tidewell.example/hc/en-gb/articles/7100001-Returning-an-item"
    assert {e.kind for e in entries} == {"document"}


def test_intercom_published_articles_become_documents():
    entries = export_entries(INTERCOM, LoadOptions())
    assert [e.id for e in entries] == ["intercom-8800001", "intercom-8800002", "intercom-8800003", "intercom-8800005"]
    assert entries[1].title == "My order arrived damaged"
    assert entries[1].url == "https://intercom.help/tidewell/en/articles/8800002-my-order-arrived-damaged"
    assert {e.category for e in entries} == {""}  # the list API names no collections


@pytest.mark.parametrize("export", [ZENDESK, INTERCOM])
def test_drafts_are_skipped(export):
    text = " ".join(e.answer for e in export_entries(export, LoadOptions()))
    assert "DRAFT" not in text and "Not final" not in text


def test_bodies_keep_headings_tables_and_lists():
    returning, delivery, _, started = export_entries(ZENDESK, LoadOptions())
    assert [p.title for p in returning.passages] == ["Returning an item", "Returning an item > Return windows",
                                                     "Returning an item > Starting a return",
                                                     "Returning an item > Starting a return > Large items"]
    assert "| Tents and awnings | 60 days |" in returning.answer.splitlines()
    assert "2. Print the prepaid label." in returning.answer.splitlines()
    assert "- Two-person delivery of furniture costs £39." in delivery.answer.splitlines()
    assert started.answer.splitlines()[-3:] == ["- Delivery costs", "- Returning an item", "- Gift cards"]
    hours = export_entries(INTERCOM, LoadOptions())[2]
    assert "| Saturday | 9am to 5pm |" in hours.answer.splitlines()


def test_exports_are_told_from_our_own_faq_json():
    assert is_export(ZENDESK) and is_export(INTERCOM)
    assert is_export({"articles": "oops"})  # claims to be one: gets this module's message, not the FAQ loader's
    for faq in ([{"question": "q", "answer": "a"}], {"entries": []}, "text", None):
        assert not is_export(faq)


def zendesk(change) -> dict:
    data = copy.deepcopy(ZENDESK)
    change(data)
    return data


def intercom(change) -> dict:
    data = copy.deepcopy(INTERCOM)
    change(data)
    return data


@pytest.mark.parametrize(("data", "message"), [
    ({"articles": {"id": 1}}, WRONG_SHAPE),
    ({"type": "list", "data": None}, WRONG_SHAPE),
    (zendesk(lambda d: d["articles"].insert(1, "Returning an item")), "article 2: expected an object, got a string"),
    (zendesk(lambda d: d["articles"][2].update(title=5)), "article 3: 'title' must be a string, got a number"),
    (zendesk(lambda d: d["articles"][0].update(title="  ")), "article 1: empty 'title'"),
    (zendesk(lambda d: d["articles"][1].pop("body")), "article 2: missing 'body'"),
    (zendesk(lambda d: d["articles"][1].update(body=None)), "article 2: 'body' must be a string, got null"),
    (zendesk(lambda d: d["articles"][0].update(id=True)), "article 1: 'id' must be an integer or a string, got a boolean"),
    (zendesk(lambda d: d["articles"][0].update(html_url=["x"])), "article 1: 'html_url' must be a string, got a list"),
    (zendesk(lambda d: d["articles"][0].update(draft="no")), "article 1: 'draft' must be true or false, got a string"),
    (zendesk(lambda d: d["articles"][2].update(id=7100001)), "article 3: id 7100001 already used by article 1"),
    (zendesk(lambda d: d["articles"][2].update(body="<p> </p><script>track()</script>")), "article 3: no article text found"),
    (zendesk(lambda d: d.update(sections={"id": 1})), "'sections' must be a list, got an object"),
    (zendesk(lambda d: d["sections"][1].pop("name")), "section 2: missing 'name'"),
    (intercom(lambda d: d["data"][0].update(state="archived")), "article 1: 'state' must be \"published\" or \"draft\", got 'archived'"),
    (intercom(lambda d: d["data"][4].update(url=7)), "article 5: 'url' must be a string, got a number"),
])
def test_a_wrong_shape_is_refused_naming_the_article_and_field(data, message):
    with pytest.raises(IngestError) as refused:
        export_entries(data, LoadOptions())
    assert str(refused.value) == message


def test_a_missing_url_reads_as_none_given():
    data = intercom(lambda d: d["data"][0].pop("url"))
    assert export_entries(data, LoadOptions())[0].url == ""


def test_an_oversized_body_is_refused():
    with pytest.raises(IngestError, match=r"^article 1: 'body' has 5\d\d characters, over the limit of 300$"):
        export_entries(zendesk(lambda d: None), LoadOptions(max_field_chars=300))
