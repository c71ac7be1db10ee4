"""Make the PDF and DOCX files that loader tests, end-to-end tests and benchmarks read.

Generated from our own text at test time, so no binary fixture has to be kept in the repository and the
expected words are known. A section is (heading, paragraphs): the heading may carry Markdown's `#` marks
to give its level (else 1 for the first section, 2 for the rest); a paragraph starting with `- ` is a
bullet item.
"""

from __future__ import annotations

import re
from pathlib import Path

Section = tuple[str, list[str]]

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$")
_EMPHASIS = re.compile(r"\*\*|\*|`")
_PDF_HEADING_SIZE = {1: 20, 2: 15, 3: 12.5}
_PDF_BODY_SIZE = 10.5


def markdown_sections(path: Path) -> list[Section]:
    """A Markdown file as sections: headings keep their `#` marks, list items become `- ` paragraphs,
    wrapped lines are joined and emphasis marks dropped (they would not show in a PDF or DOCX)."""
    sections: list[Section] = []
    paragraphs: list[str] = []
    current: list[str] = []

    def end_paragraph() -> None:
        if current:
            paragraphs.append(" ".join(current))
            current.clear()

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = _EMPHASIS.sub("", raw).strip()
        heading = _HEADING.match(line)
        if heading:
            end_paragraph()
            paragraphs = []
            sections.append((line, paragraphs))
        elif not line:
            end_paragraph()
        elif re.match(r"^([-+]|\d+\.)\s+", line):
            end_paragraph()
            current.append("- " + re.sub(r"^([-+]|\d+\.)\s+", "", line))
        elif line.startswith("|"):  # a Markdown table row: keep it as its own line of text
            end_paragraph()
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                paragraphs.append("  ".join(cells))
        else:
            current.append(line)
    end_paragraph()
    return sections


def heading_level(heading: str, index: int) -> tuple[int, str]:
    """(level, text) of a section heading: from its `#` marks, else 1 for the first section and 2 after."""
    m = _HEADING.match(heading)
    if m:
        return len(m.group(1)), m.group(2)
    return (1 if index == 0 else 2), heading


def make_pdf(path: Path, sections: list[Section], *, footer: str = "", user_password: str | None = None,
             owner_password: str | None = None) -> Path:
    """A text PDF as a word processor would print it: bold headings in larger type, justified paragraphs,
    pages breaking wherever the text runs out of room. `footer` is printed at the foot of every page
    (`{page}` gives the page number); a password encrypts the file (RC4: no extra package needed)."""
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    class Printed(FPDF):
        def footer(self) -> None:
            if footer:
                self.set_y(-12)
                self.set_font("Helvetica", "", 8)
                self.cell(0, 5, footer.format(page=self.page_no()), align="C")

    pdf = Printed(format="A4")
    pdf.core_fonts_encoding = "cp1252"  # the core fonts' WinAnsi encoding: has the bullet sign
    if user_password is not None or owner_password is not None:
        pdf.set_encryption(owner_password=owner_password or "owner", user_password=user_password or "")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()
    for i, (heading, paragraphs) in enumerate(sections):
        level, text = heading_level(heading, i)
        pdf.set_font("Helvetica", "B", _PDF_HEADING_SIZE.get(level, 12))
        pdf.multi_cell(0, None, text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(2)
        pdf.set_font("Helvetica", "", _PDF_BODY_SIZE)
        for para in paragraphs:
            if para.startswith("- "):
                pdf.multi_cell(0, 5, "\u2022 " + para[2:], align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            else:
                pdf.multi_cell(0, 5, para, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(2)
        pdf.ln(2)
    pdf.output(str(path))
    return path


def make_image_pdf(path: Path, pages: int = 2) -> Path:
    """A PDF whose pages carry only drawings, as a scan does: no text layer at all."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    for _ in range(pages):
        pdf.add_page()
        pdf.set_fill_color(200, 200, 200)
        pdf.rect(20, 20, 170, 250, style="DF")
    pdf.output(str(path))
    return path


def make_docx(path: Path, sections: list[Section], table: list[list[str]] | None = None) -> Path:
    """A DOCX with Heading styles, body paragraphs, bulleted items, and an optional table placed after
    the first section (so its order among the paragraphs can be checked)."""
    import docx

    document = docx.Document()
    for i, (heading, paragraphs) in enumerate(sections):
        level, text = heading_level(heading, i)
        document.add_heading(text, level=min(level, 3))
        for para in paragraphs:
            if para.startswith("- "):
                document.add_paragraph(para[2:], style="List Bullet")
            else:
                document.add_paragraph(para)
        if i == 0 and table:
            grid = document.add_table(rows=len(table), cols=len(table[0]))
            for r, row in enumerate(table):
                for c, value in enumerate(row):
                    grid.cell(r, c).text = value
    document.save(str(path))
    return path
