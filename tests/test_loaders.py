"""Reading knowledge-base files: every format, variants, derived ids, and whole-file refusals."""

from __future__ import annotations

import json

import pytest
from helpers import write

from retrieval.files import expand_paths
from retrieval.loaders import LoadOptions, load_file
from retrieval.records import IngestError

OPTS = LoadOptions(passage_tokens=40)

FAQ = """id,question,answer,title,category,url
ship-ca,How long to Canada?,Canada takes 5-10 business days.,Shipping to Canada,Shipping,https://x.example/ship-ca
ship-ca,Do you ship to Toronto?,Canada takes 5-10 business days.,,,
ret,Can I return a lamp?,Returns are accepted within 45 days.,Returns,Returns,
"""


def test_csv_rows_sharing_an_id_are_variants_of_one_entry(tmp_path):
    entries = load_file(write(tmp_path / "faq.csv", FAQ), OPTS)
    by_id = {e.id: e for e in entries}
    assert set(by_id) == {"ship-ca", "ret"}
    assert by_id["ship-ca"].questions == ["How long to Canada?", "Do you ship to Toronto?"]
    assert by_id["ship-ca"].title == "Shipping to Canada"
    assert by_id["ship-ca"].url == "https://x.example/ship-ca"
    assert by_id["ship-ca"].source == "faq.csv"
    assert by_id["ret"].passages[0].text == "Returns are accepted within 45 days."


def test_csv_without_ids_derives_stable_ids_and_groups_same_answers(tmp_path):
    text = "question,answer\nWhat is X?,X is a thing.\nTell me about X,X is a thing.\nWhat is Y?,Y differs.\n"
    first = load_file(write(tmp_path / "a.csv", text), OPTS)
    second = load_file(write(tmp_path / "b.csv", text), OPTS)
    assert [e.id for e in first] == [e.id for e in second]
    assert len(first) == 2 and first[0].questions == ["What is X?", "Tell me about X"]
    assert all(e.id.startswith("e-") for e in first)


def test_json_and_jsonl_with_question_lists(tmp_path):
    objects = [
        {"id": "a", "questions": ["Q1?", "Q2?"], "answer": "A.", "category": "C"},
        {"id": "b", "question": "Q3?", "questions": ["Q4?"], "answer": "B."},
    ]
    from_json = load_file(write(tmp_path / "kb.json", json.dumps(objects)), OPTS)
    from_jsonl = load_file(write(tmp_path / "kb.jsonl", "\n".join(map(json.dumps, objects))), OPTS)
    for entries in (from_json, from_jsonl):
        assert [e.questions for e in entries] == [["Q1?", "Q2?"], ["Q3?", "Q4?"]]
    assert from_json[0].category == "C"
    wrapped = load_file(write(tmp_path / "w.json", json.dumps({"entries": objects})), OPTS)
    assert len(wrapped) == 2


def test_markdown_is_one_document_split_on_headings_with_heading_paths(tmp_path):
    body = " ".join(["Words about refunds."] * 30)
    md = f"# Returns Policy\n\nIntro text.\n\n## Refunds\n\n{body}\n\n### Store credit\n\nCredit rules.\n"
    (entry,) = load_file(write(tmp_path / "returns-policy.md", md), OPTS)
    assert entry.id == "returns-policy" and entry.kind == "document" and entry.title == "Returns Policy"
    titles = [p.title for p in entry.passages]
    assert titles[0] == "Returns Policy"
    assert "Returns Policy > Refunds" in titles and "Returns Policy > Refunds > Store credit" in titles
    assert titles.count("Returns Policy > Refunds") >= 2  # the long section was split by the budget
    assert all(len(p.text.split()) <= 40 for p in entry.passages)


def test_markdown_without_headings_and_text_files_are_ingested(tmp_path):
    text = "First paragraph.\n\nSecond paragraph."
    (md,) = load_file(write(tmp_path / "care_guide.md", text), OPTS)
    (txt,) = load_file(write(tmp_path / "care_guide.txt", text), OPTS)
    for entry in (md, txt):
        assert entry.title == "Care guide"
        assert "First paragraph." in entry.passages[0].text


def test_folders_expand_to_supported_files(tmp_path):
    write(tmp_path / "kb" / "a.csv", FAQ)
    write(tmp_path / "kb" / "sub" / "b.md", "# B\n\ntext")
    write(tmp_path / "kb" / "notes.pdf", b"%PDF")
    write(tmp_path / "kb" / "photo.jpg", b"\xff\xd8")
    assert [p.name for p in expand_paths([tmp_path / "kb"])] == ["a.csv", "notes.pdf", "b.md"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("faq.csv", "questoin,answer\nQ?,A.\n", "line 1: unknown column 'questoin' (did you mean 'question'?)"),
        ("faq.csv", "id,answer\nx,A.\n", "line 1: missing required column 'question'"),
        ("faq.csv", "", "file is empty"),
        ("faq.csv", "question,answer\n", "no rows after the header"),
        ("faq.csv", "question,answer\nQ?,\n", "line 2: empty answer"),
        ("faq.csv", "id,question,answer\nx,Q1?,Yes.\ny,Q2?,Ok.\nx,Q3?,No.\n",
         "id 'x': line 2 and line 4 give different answers"),
        ("faq.csv", "question,answer\nQ?,A,extra\n", "line 2: 3 values for 2 columns"),
        ("faq.csv", b"question,answer\nQ?,caf\xe9\n", "line 2: not valid UTF-8"),
        ("faq.csv", "question,answer\nQ?," + "a" * 1_000_001 + "\n", "line 2: field 'answer' has 1,000,001 characters"),
        ("kb.jsonl", '{"question": "Q", "answer": "A"}\n{"question": \n', "line 2: invalid JSON"),
        ("kb.json", '[{"questions": "Q?", "answer": "A"}]', "entry 1: 'questions' must be a list of strings"),
        ("kb.json", '[{"question": "Q?", "answer": 3}]', "entry 1: 'answer' must be a string, got int"),
        ("kb.json", '{"question": "Q?"}', "expected a list of entry objects"),
        ("doc.md", "# Only\n## Headings\n", "no text besides headings"),
        ("notes.pdf", "%PDF-1.4", "unsupported file type '.pdf'"),
    ],
)
def test_bad_files_are_refused_with_one_line_naming_file_and_row(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(IngestError) as err:
        load_file(path, OPTS)
    text = str(err.value)
    assert text.startswith(str(path)) and message in text
    assert "\n" not in text


def test_control_characters_are_cleaned_not_fatal(tmp_path):
    (entry,) = load_file(write(tmp_path / "f.csv", "question,answer\nQ\x00?,A\x07nswer.\n"), OPTS)
    assert entry.questions == ["Q ?"] and entry.answer == "A nswer."


def test_a_hundred_thousand_rows_parse(tmp_path):
    rows = "".join(f"q{i},Question number {i}?,Answer {i}.\n" for i in range(100_000))
    entries = load_file(write(tmp_path / "big.csv", "id,question,answer\n" + rows), OPTS)
    assert len(entries) == 100_000 and entries[-1].id == "q99999"
