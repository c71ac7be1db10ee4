# pypdfium2, not pypdf: same words and reading order on our policies printed four ways, 3-20x the pages/s.
"""Read a PDF into one document entry per page, so that an answer's citation names the page.

Headings come back from the layout (lines set larger than the body text, or short bold lines) so that
passages are titled by their section; running headers and footers repeated on most pages are dropped;
a section that runs over a page break keeps its heading on the next page's passages.
"""

from __future__ import annotations

import ctypes
import re
import statistics
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from .chunking import split_markdown, split_text
from .loaders import LoadOptions, slugify
from .records import Entry, IngestError

HEADING_RATIO = 1.15  # a line this much taller than the body text is a heading
HEADING_MAX_WORDS = 14
PARAGRAPH_GAP = 1.3  # a gap between lines this much over the usual line pitch starts a paragraph

_BULLET = re.compile(r"^[\u2022\u25aa\u25cf\u25e6\u2023\u2043\uf0b7]\s*")  # bullet signs: an item wherever they stand
_MARKER = re.compile(r"^(?:[-*\u2013]|\d{1,2}[.)])\s+")  # dashes and numbers: an item only after a sentence ends
_HYPHEN_BREAK = re.compile(r"(\w+)\ufffe(\w+)")  # PDFium joins a word hyphenated over a line break so
_CONTENTS_LINE = re.compile(r"(?:\.\s?){4,}\s*\d+$")  # "Refunds ........ 4": a table of contents
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\xad]")
_BOLD_NAME = re.compile(r"bold|black|heavy|semibold|demi", re.IGNORECASE)
_PDFIUM = threading.Lock()  # PDFium is not thread-safe, not even across documents: one call at a time


@dataclass
class _Line:
    text: str
    height: float  # glyph box height in user space: the font size as drawn, whatever the matrices
    bottom: float
    bold: bool


def load_pdf(path: Path, options: LoadOptions) -> list[Entry]:
    """One document entry per page that has text; refuse encrypted, scanned or unreadable files."""
    pages = _read_pages(path)
    if not any(pages):
        raise IngestError("no text layer (a scanned PDF?): run OCR on it first")
    pages = _drop_page_furniture(pages)
    vocabulary = Counter(w.lower() for lines in pages for line in lines for w in re.findall(r"[\w-]+", line.text))
    style = _Style.of(pages)
    slug = slugify(path.stem) or "document"
    entries: list[Entry] = []
    carried: list[str] = []  # the headings in force at the end of the previous page
    for number, lines in enumerate(pages, 1):
        blocks = _blocks(lines, style)
        text = _dehyphenate("\n\n".join(blocks), vocabulary).strip()
        if not text:
            continue
        title = f"{path.name}, page {number}"
        passages = (split_markdown("\n\n".join([*carried, text]), title, options.passage_tokens, options.count_tokens)
                    or split_text(re.sub(r"^#+ ", "", text, flags=re.MULTILINE), title, options.passage_tokens, options.count_tokens))
        entries.append(Entry(id=f"{slug}-p{number}", title=title, answer=text, url=f"{quote(path.name)}#page={number}",
                             kind="document", passages=passages))
        carried = _headings_in_force(carried, blocks)
    if not entries:
        raise IngestError("no text besides page headers, footers and contents lines")
    return entries


def _read_pages(path: Path) -> list[list[_Line]]:
    """The text lines of every page, in PDFium's reading order; every failure becomes an IngestError."""
    with _PDFIUM:
        try:
            document = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as err:
            if err.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
                raise IngestError("encrypted PDF: remove the password and add it again") from None
            raise IngestError(f"not a readable PDF ({err})") from None
        try:
            return [_page_lines(document, i) for i in range(len(document))]
        except pdfium.PdfiumError as err:
            raise IngestError(f"not a readable PDF ({err})") from None
        finally:
            document.close()


def _page_lines(document: pdfium.PdfDocument, index: int) -> list[_Line]:
    """Closed here, under the lock, rather than by the garbage collector in whatever thread it runs."""
    page = document[index]
    textpage = page.get_textpage()
    try:
        raw = textpage.get_text_range()
        lines: list[_Line] = []
        offset = 0  # in UTF-16 units, as PDFium counts
        for piece in raw.split("\n"):
            text = _CONTROL.sub("", piece.replace("\r", "")).strip()
            if text:
                lead = len(piece) - len(piece.lstrip())
                first = offset + _utf16_len(piece[:lead])
                last = offset + _utf16_len(piece.rstrip()) - 1
                lines.append(_measure(textpage, text, first, last))
            offset += _utf16_len(piece) + 1
        return lines
    finally:
        textpage.close()
        page.close()


def _measure(textpage: pdfium.PdfTextPage, text: str, first: int, last: int) -> _Line:
    """Size and weight from the line's first and last characters: both must be large (or bold)."""
    boxes, bolds = [], []
    for text_index in (first, last):
        char = pdfium_c.FPDFText_GetCharIndexFromTextIndex(textpage.raw, text_index)
        if char >= 0:
            boxes.append(textpage.get_charbox(char, loose=True))  # (left, bottom, right, top)
            bolds.append(_is_bold(textpage, char))
    height = min((top - bottom for _, bottom, _, top in boxes), default=0.0)
    return _Line(text=text, height=round(height, 1), bottom=boxes[0][1] if boxes else 0.0, bold=bool(bolds) and all(bolds))


def _is_bold(textpage: pdfium.PdfTextPage, char: int) -> bool:
    if pdfium_c.FPDFText_GetFontWeight(textpage.raw, char) >= 600:
        return True
    name = ctypes.create_string_buffer(128)
    flags = ctypes.c_int()
    size = pdfium_c.FPDFText_GetFontInfo(textpage.raw, char, name, len(name), ctypes.byref(flags))
    return 0 < size <= len(name) and bool(_BOLD_NAME.search(name.value.decode("utf-8", "replace")))


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _drop_page_furniture(pages: list[list[_Line]]) -> list[list[_Line]]:
    """Drop what is not content: contents-page lines (dot leaders to a page number), and headers and
    footers (among a page's first or last two lines, text, digits aside, found there on three pages or
    more, and on more than half of them)."""
    def key(line: _Line) -> str:
        return re.sub(r"\d+", "#", line.text.lower())

    def edges(lines: list[_Line]) -> list[_Line]:
        return lines[:2] + lines[2:][-2:]

    counts = Counter(k for lines in pages for k in {key(line) for line in edges(lines)})
    running = {k for k, n in counts.items() if n >= 3 and n > len(pages) / 2}
    return [[line for i, line in enumerate(lines)
             if not _CONTENTS_LINE.search(line.text) and not (key(line) in running and (i < 2 or i >= len(lines) - 2))]
            for lines in pages]


@dataclass
class _Style:
    """What the document's typography says: the body text height and the heading level of each larger one."""

    body: float
    levels: dict[float, int]  # line height -> heading level
    bold_level: int  # the level of a short bold line at body size: below every sized heading

    @classmethod
    def of(cls, pages: list[list[_Line]]) -> _Style:
        weights = Counter[float]()
        for lines in pages:
            for line in lines:
                weights[line.height] += len(line.text)
        body = weights.most_common(1)[0][0] if weights else 0.0
        sizes = sorted({line.height for lines in pages for line in lines
                        if line.height >= body * HEADING_RATIO and _looks_like_heading(line)}, reverse=True)
        return cls(body, {height: min(i + 1, 3) for i, height in enumerate(sizes)}, min(len(sizes) + 1, 3))

    def level(self, line: _Line) -> int:
        """0 for body text, else the Markdown heading level of the line."""
        if not _looks_like_heading(line):
            return 0
        if line.height in self.levels:
            return self.levels[line.height]
        if line.bold and line.height >= self.body * 0.95 and len(line.text.split()) <= 8:
            return self.bold_level
        return 0


def _item(text: str, previous: _Line | None) -> str | None:
    """The line as a Markdown list item when it starts one, else None."""
    if m := _BULLET.match(text):
        return "- " + text[m.end():]
    if _MARKER.match(text) and (previous is None or previous.text.endswith((".", ":", ";", "!", "?"))):
        return re.sub(r"^[*\u2013]", "-", text)
    return None


def _looks_like_heading(line: _Line) -> bool:
    words = line.text.split()
    return (0 < len(words) <= HEADING_MAX_WORDS and any(c.isalpha() for c in line.text)
            and not line.text.endswith((".", ",", ";", ":")) and not _BULLET.match(line.text) and not _MARKER.match(line.text))


def _blocks(lines: list[_Line], style: _Style) -> list[str]:
    """A page's lines as Markdown blocks: headings, list items and paragraphs (lines joined)."""
    gaps = [a.bottom - b.bottom for a, b in zip(lines, lines[1:]) if a.height == b.height == style.body and a.bottom > b.bottom]
    pitch = statistics.quantiles(gaps, n=4)[0] if len(gaps) >= 2 else (gaps[0] if gaps else 0.0)
    blocks: list[str] = []
    current: list[str] = []
    previous: _Line | None = None
    previous_level = 0

    def flush() -> None:
        if current:
            blocks.append(" ".join(current))
            current.clear()

    for line in lines:
        level = style.level(line)
        gap = previous.bottom - line.bottom if previous else 0.0
        item = _item(line.text, previous)
        if level and level == previous_level and gap < previous.height * 1.6:
            blocks[-1] += f" {line.text}"  # a heading wrapped over two lines
        elif level:
            flush()
            blocks.append(f"{'#' * level} {line.text}")
        else:
            if item is not None or (pitch and gap > pitch * PARAGRAPH_GAP):
                flush()
            current.append(line.text if item is None else item)
        previous, previous_level = line, level
    flush()
    return blocks


def _dehyphenate(text: str, vocabulary: Counter[str]) -> str:
    """Rejoin a word PDFium found hyphenated over a line break: as one word when the document spells it
    so elsewhere ('infor-mation'), else keeping the hyphen ('drop-off')."""
    def join(m: re.Match[str]) -> str:
        whole = m.group(1) + m.group(2)
        return whole if vocabulary[whole.lower()] > vocabulary[f"{m.group(1)}-{m.group(2)}".lower()] else f"{m.group(1)}-{m.group(2)}"

    return _HYPHEN_BREAK.sub(join, text).replace("\ufffe", "-")


def _headings_in_force(carried: list[str], blocks: list[str]) -> list[str]:
    """The heading path after a page: each heading replaces those of its level and below."""
    path = list(carried)
    for block in blocks:
        m = re.match(r"^(#+) ", block)
        if m:
            depth = len(m.group(1))
            path = [h for h in path if len(h) - len(h.lstrip("#")) < depth] + [block]
    return path
