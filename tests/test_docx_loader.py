"""Word documents: headings, lists and tables kept as Markdown in document order; clear refusals."""

from __future__ import annotations

import zipfile
from pathlib import Path

import docx
import pytest
from documents import make_docx, markdown_sections

from retrieval.docx_loader import load_docx
from retrieval.loaders import LoadOptions
from retrieval.records import IngestError

POLICY = Path(__file__).resolve().parents[1] / "data" / "kb" / "returns-policy.md"
TABLE = [["Item", "Return window"], ["Most items", "45 days"], ["Freight furniture", "30 days"], ["Mattresses", "100 nights"]]


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    path = make_docx(tmp_path_factory.mktemp("docx") / "returns-policy.docx", markdown_sections(POLICY), table=TABLE)
    [entry] = load_docx(path, LoadOptions())
    return entry


def test_one_document_entry_titled_by_its_first_heading(entry):
    assert (entry.id, entry.title, entry.kind, entry.url) == ("returns-policy", "Returns and Refunds Policy", "document", "")
    assert entry.answer.startswith("# Returns and Refunds Policy\n\nThis page explains in detail")


def test_heading_styles_become_passage_titles(entry):
    titles = {p.title: p.text for p in entry.passages}
    assert titles["Returns and Refunds Policy > Return windows"].startswith("The clock for a return starts")
    assert "Returns and Refunds Policy > How to start a return > With a Tidewell account" in titles
    assert "\n### Without an account\n" in entry.answer


def test_list_paragraphs_become_items(entry):
    assert "\n- Most items: 45 days from delivery.\n\n- Furniture that ships by freight: 30 days from delivery.\n" in entry.answer


def test_paragraphs_numbered_without_a_list_style_are_items_too(tmp_path):
    document = docx.Document()
    document.add_paragraph("Before you call:")
    for text in ["Find your order number.", "Have the item at hand."]:
        paragraph = document.add_paragraph(text)  # style Normal, numbered as Google Docs exports lists
        numbering = paragraph._p.get_or_add_pPr().get_or_add_numPr()
        numbering.get_or_add_ilvl().val = 0
        numbering.get_or_add_numId().val = 1
    document.save(str(tmp_path / "call.docx"))
    [entry] = load_docx(tmp_path / "call.docx", LoadOptions())
    assert entry.answer == "Before you call:\n\n- Find your order number.\n\n- Have the item at hand."


def test_table_rows_stay_in_order_and_in_place(entry):
    rows = ["| Item | Return window |", "| --- | --- |", "| Most items | 45 days |", "| Freight furniture | 30 days |",
            "| Mattresses | 100 nights |"]
    assert "\n".join(rows) in entry.answer
    intro, table, section = (entry.answer.index(s) for s in ("walk you through it by live chat", rows[0], "## Return windows"))
    assert intro < table < section  # the table sits after the first section's text, where it was put


def test_merged_cells_are_written_once_and_pipes_escaped(tmp_path):
    document = docx.Document()
    document.add_heading("Fees", level=1)
    grid = document.add_table(rows=2, cols=3)
    grid.cell(0, 0).merge(grid.cell(0, 2)).text = "Delivery fees"
    for column, value in enumerate(["Standard", "$5.95", "free | over $50"]):
        grid.cell(1, column).text = value
    document.save(str(tmp_path / "fees.docx"))
    [entry] = load_docx(tmp_path / "fees.docx", LoadOptions())
    assert "| Delivery fees |\n| --- |\n| Standard | $5.95 | free \\| over $50 |" in entry.answer


def test_without_a_heading_the_title_comes_from_the_file_name(tmp_path):
    document = docx.Document()
    document.add_paragraph("Gift cards never expire and carry no fees.")
    document.save(str(tmp_path / "gift_card-notes.docx"))
    [entry] = load_docx(tmp_path / "gift_card-notes.docx", LoadOptions())
    assert (entry.id, entry.title) == ("gift-card-notes", "Gift card notes")
    assert [p.text for p in entry.passages] == ["Gift cards never expire and carry no fees."]


def refusal(path: Path) -> str:
    with pytest.raises(IngestError) as caught:
        load_docx(path, LoadOptions())
    message = str(caught.value)
    assert "\n" not in message and path.name not in message and str(path.parent) not in message
    return message


def test_an_empty_document_is_refused(tmp_path):
    docx.Document().save(str(tmp_path / "empty.docx"))
    assert refusal(tmp_path / "empty.docx") == "no text"


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    path = tmp_path / "old.docx"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512)  # an old binary .doc renamed
    assert refusal(path) == "not a readable DOCX (an old binary .doc: save it as .docx)"
    path.write_bytes(b"Return windows: 45 days")
    assert refusal(path) == "not a readable DOCX (not a zip package)"


def test_a_zip_without_the_document_part_is_refused(tmp_path):
    good = make_docx(tmp_path / "good.docx", [("Title", ["Text."])])
    path = tmp_path / "parts.docx"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            if info.filename != "word/document.xml":
                target.writestr(info, source.read(info))
    assert refusal(path) == "not a readable DOCX (There is no item named 'word/document.xml' in the archive)"
    with zipfile.ZipFile(path, "w") as package:
        package.writestr("faq.csv", "question,answer\n")
    assert refusal(path).startswith("not a readable DOCX (")


def test_a_document_with_broken_xml_is_refused(tmp_path):
    good = make_docx(tmp_path / "good.docx", [("Title", ["Text."])])
    path = tmp_path / "broken.docx"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, data[: len(data) // 2] if info.filename == "word/document.xml" else data)
    assert refusal(path).startswith("not a readable DOCX (broken XML: ")


def test_a_truncated_docx_is_refused(tmp_path):
    good = make_docx(tmp_path / "good.docx", markdown_sections(POLICY))
    path = tmp_path / "cut.docx"
    path.write_bytes(good.read_bytes()[:-300])
    assert refusal(path) == "not a readable DOCX (a damaged or truncated zip package)"


def test_a_docx_that_unpacks_huge_is_refused_before_reading(tmp_path, monkeypatch):
    from retrieval import docx_loader

    path = make_docx(tmp_path / "big.docx", markdown_sections(POLICY))
    monkeypatch.setattr(docx_loader, "MAX_UNPACKED_BYTES", 10_000)  # a DOCX is a zip: the same bomb applies
    assert refusal(path).startswith("not a readable DOCX (unpacks to over ")
