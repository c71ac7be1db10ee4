"""PDF help documents: one entry per page citing the page, headings from the layout, clear refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from documents import heading_level, make_image_pdf, make_pdf, markdown_sections

from retrieval.loaders import LoadOptions
from retrieval.pdf_loader import load_pdf
from retrieval.records import IngestError

POLICY = Path(__file__).resolve().parents[1] / "data" / "kb" / "returns-policy.md"


@pytest.fixture(scope="module")
def sections() -> list:
    return markdown_sections(POLICY)


@pytest.fixture(scope="module")
def policy_pdf(tmp_path_factory, sections) -> Path:
    return make_pdf(tmp_path_factory.mktemp("pdf") / "returns-policy.pdf", sections)


@pytest.fixture(scope="module")
def entries(policy_pdf) -> list:
    return load_pdf(policy_pdf, LoadOptions())


def squash(text: str) -> str:
    return " ".join(text.split())


def test_one_entry_per_page_and_each_cites_its_page(entries, policy_pdf):
    pages = len(pdfium.PdfDocument(str(policy_pdf)))
    assert pages >= 3
    assert [e.id for e in entries] == [f"returns-policy-p{n}" for n in range(1, pages + 1)]
    for n, entry in enumerate(entries, 1):
        assert entry.title == f"returns-policy.pdf, page {n}"
        assert entry.url == f"returns-policy.pdf#page={n}"
        assert entry.kind == "document"
        assert entry.passages and all(p.title.startswith(entry.title) for p in entry.passages)


def test_text_printed_on_page_three_is_in_the_page_three_entry(entries, policy_pdf):
    document = pdfium.PdfDocument(str(policy_pdf))
    line = max(document[2].get_textpage().get_text_range().splitlines(), key=len).strip()
    assert len(line) > 60
    found = [e.id for e in entries if squash(line) in squash(e.answer)]
    assert found == ["returns-policy-p3"]


def test_every_word_of_the_source_is_kept_in_reading_order(entries, sections):
    words = re.compile(r"[a-z0-9]+")
    source = [w for i, (heading, paragraphs) in enumerate(sections)
              for text in [heading_level(heading, i)[1], *paragraphs] for w in words.findall(text.lower())]
    extracted = words.findall(" ".join(e.answer for e in entries).lower())
    assert extracted == source


def test_headings_set_larger_become_markdown_headings_and_passage_titles(entries):
    first = entries[0]
    assert first.answer.startswith("# Returns and Refunds Policy\n")
    assert "\n## Return windows\n" in first.answer
    titles = {p.title: p.text for e in entries for p in e.passages}
    window = "returns-policy.pdf, page 1 > Returns and Refunds Policy > Return windows"
    assert titles[window].startswith("The clock for a return starts on the day your order is delivered")
    assert "returns-policy.pdf, page 1 > Returns and Refunds Policy > How to start a return > With a Tidewell account" in titles


def test_a_section_running_over_a_page_break_keeps_its_heading(entries):
    second = entries[1]
    assert not second.answer.startswith("#")  # page 2 starts inside a section...
    last_heading = [line for line in entries[0].answer.splitlines() if line.startswith("#")][-1].lstrip("# ")
    assert second.passages[0].title.endswith(f" > {last_heading}")  # ...whose heading is on page 1
    assert second.passages[0].title.startswith("returns-policy.pdf, page 2 > ")


def test_bullets_become_list_items(entries):
    assert "\n- Most items: 45 days from delivery.\n" in entries[0].answer
    assert "\u2022" not in " ".join(e.answer for e in entries)


def test_running_footers_are_dropped(tmp_path, sections):
    path = make_pdf(tmp_path / "guide.pdf", sections, footer="Tidewell help centre - page {page} - printed copy")
    entries = load_pdf(path, LoadOptions())
    assert len(entries) >= 3
    assert not any("help centre" in e.answer or "printed copy" in e.answer for e in entries)
    assert "The clock for a return starts" in entries[0].answer


def test_a_word_hyphenated_over_a_line_break_is_joined(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "", 11)
    for line in ["Schedule a drop-", "off at any UPS location and keep the infor-", "mation we email you.",
                 "", "More information is on the order page."]:
        pdf.cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(tmp_path / "hyphens.pdf"))
    [entry] = load_pdf(tmp_path / "hyphens.pdf", LoadOptions())
    assert "Schedule a drop-off at any UPS location and keep the information we email you." in entry.answer


def test_pages_without_text_are_skipped_and_the_others_keep_their_numbers(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", "", 11)
    for page in range(1, 4):
        pdf.add_page()
        if page == 2:
            pdf.rect(20, 20, 100, 100, style="F")  # a picture only
        else:
            pdf.cell(0, 6, f"Text printed on page {page}.")
    pdf.output(str(tmp_path / "mixed.pdf"))
    entries = load_pdf(tmp_path / "mixed.pdf", LoadOptions())
    assert [(e.id, e.answer) for e in entries] == [("mixed-p1", "Text printed on page 1."), ("mixed-p3", "Text printed on page 3.")]


def test_a_file_name_with_spaces_gives_a_valid_link(tmp_path, sections):
    path = make_pdf(tmp_path / "Returns Guide.pdf", sections[:2])
    [entry] = load_pdf(path, LoadOptions())
    assert (entry.id, entry.title, entry.url) == ("returns-guide-p1", "Returns Guide.pdf, page 1", "Returns%20Guide.pdf#page=1")


def test_owner_only_encryption_still_reads(tmp_path, sections):
    path = make_pdf(tmp_path / "locked-edit.pdf", sections[:3], owner_password="boss")
    assert "The clock for a return starts" in load_pdf(path, LoadOptions())[0].answer


def refusal(path: Path) -> str:
    with pytest.raises(IngestError) as caught:
        load_pdf(path, LoadOptions())
    message = str(caught.value)
    assert "\n" not in message and path.name not in message  # one line; the caller names the file
    return message


def test_an_encrypted_pdf_is_refused(tmp_path, sections):
    path = make_pdf(tmp_path / "locked.pdf", sections[:3], user_password="secret")
    assert refusal(path) == "encrypted PDF: remove the password and add it again"


def test_a_scan_without_text_is_refused(tmp_path):
    assert refusal(make_image_pdf(tmp_path / "scan.pdf")) == "no text layer (a scanned PDF?): run OCR on it first"


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_a_truncated_pdf_is_refused(tmp_path, policy_pdf, cut):
    data = policy_pdf.read_bytes()
    path = tmp_path / "cut.pdf"
    path.write_bytes(data[: int(len(data) * cut)])
    assert refusal(path).startswith("not a readable PDF (")


@pytest.mark.parametrize("content", [b"", b"%PDF-1.7\n", b"<html>not a pdf</html>", b"\x00" * 100])
def test_a_file_that_is_not_a_pdf_is_refused(tmp_path, content):
    path = tmp_path / "fake.pdf"
    path.write_bytes(content)
    assert refusal(path).startswith("not a readable PDF (")


def test_pdfs_read_from_several_threads_at_once_agree(policy_pdf, entries):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:  # PDFium is not thread-safe: the loader must serialise its calls
        results = list(pool.map(lambda _: load_pdf(policy_pdf, LoadOptions()), range(8)))
    assert all([e.answer for e in r] == [e.answer for e in entries] for r in results)


def test_contents_page_lines_are_not_content(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "", 11)
    for line in ["Return windows .................... 2", "Refunds . . . . . . . . . . 3", "Our returns desk answers within a day."]:
        pdf.cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(tmp_path / "contents.pdf"))
    [entry] = load_pdf(tmp_path / "contents.pdf", LoadOptions())
    assert entry.answer == "Our returns desk answers within a day."


def test_short_bold_lines_at_body_size_are_headings(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    for style, line in [("B", "Gift returns"), ("", "Gift recipients can return an item without the receipt."),
                        ("", "The refund goes onto a gift card."), ("B", "Keep the box."), ("", "It protects the item.")]:
        pdf.set_font("Helvetica", style, 11)
        pdf.cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(tmp_path / "gifts.pdf"))
    [entry] = load_pdf(tmp_path / "gifts.pdf", LoadOptions())
    assert entry.answer.startswith("# Gift returns\n\nGift recipients can return")
    assert "Keep the box." in entry.answer and "# Keep the box." not in entry.answer  # a sentence, not a heading
    assert entry.passages[0].title == "gifts.pdf, page 1 > Gift returns"
