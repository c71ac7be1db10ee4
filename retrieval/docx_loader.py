"""Read a Word document (DOCX) into one document entry, its structure kept as Markdown.

Heading styles become Markdown headings (passages are titled by them), list paragraphs `- ` items and
tables `| a | b |` rows, all in document order, so that a table stays beside the text that explains it.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import docx
from docx.document import Document as DocxDocument
from docx.enum.style import WD_STYLE_TYPE
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table
from docx.text.paragraph import Paragraph
from lxml.etree import XMLSyntaxError

from .chunking import split_markdown
from .loaders import LoadOptions, slugify
from .records import Entry, IngestError

MAX_UNPACKED_BYTES = 200 * 2**20  # a DOCX is a zip: refuse one that claims to unpack past this


def load_docx(path: Path, options: LoadOptions) -> list[Entry]:
    """One document entry titled by the first Title or Heading 1 paragraph, else by the file's stem."""
    markdown, title = _read(path)
    if not markdown:
        raise IngestError("no text")
    title = title or path.stem.replace("-", " ").replace("_", " ").strip().capitalize()
    passages = split_markdown(markdown, title, options.passage_tokens, options.count_tokens)
    if not passages:
        raise IngestError("no text besides headings")
    return [Entry(id=slugify(path.stem) or "document", title=title, answer=markdown, kind="document", passages=passages)]


def _read(path: Path) -> tuple[str, str]:
    """(Markdown, title) of the document; every failure an IngestError without the file's path (the caller
    adds it). python-docx reads parts lazily, so walking the document can fail as well as opening it."""
    try:
        with zipfile.ZipFile(path) as package:
            if sum(info.file_size for info in package.infolist()) > MAX_UNPACKED_BYTES:
                raise IngestError(f"not a readable DOCX (unpacks to over {MAX_UNPACKED_BYTES / 2**20:g} MB)")
        return _markdown(docx.Document(str(path)))
    except IngestError:
        raise
    except (zipfile.BadZipFile, PackageNotFoundError):
        raise IngestError(f"not a readable DOCX ({_not_a_zip(path)})") from None
    except (zlib.error, EOFError, NotImplementedError) as err:  # a member that does not decompress
        raise IngestError(f"not a readable DOCX (a damaged zip package: {err})") from None
    except KeyError as err:  # a part the package names is not in it
        raise IngestError(f"not a readable DOCX ({err.args[0] if err.args else err})") from None
    except XMLSyntaxError as err:
        raise IngestError(f"not a readable DOCX (broken XML: {err.msg})") from None
    except OSError as err:
        raise IngestError(f"not a readable DOCX ({err.strerror or err})") from None
    except (ValueError, TypeError, AttributeError) as err:  # python-docx on parts of the wrong type
        raise IngestError(f"not a readable DOCX ({type(err).__name__}: {err})") from None


def _markdown(document: DocxDocument) -> tuple[str, str]:
    """The body's paragraphs and tables in document order, as Markdown blocks; and the first level-1 heading."""
    blocks: list[str] = []
    title = ""
    styles = _style_names(document)
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            blocks.append(_table(item))
            continue
        text = " ".join(item.text.split())
        if not text:
            continue
        style = styles.get(item._p.style, styles[None])
        level = _heading_level(style)
        if level == 1 and not title:
            title = text
        blocks.append(f"{'#' * level} {text}" if level else f"- {text}" if _is_list(item, style) else text)
    return "\n\n".join(b for b in blocks if b), title


def _style_names(document: DocxDocument) -> dict[str | None, str]:
    """Paragraph style id -> name (None: the default style), read once: `Paragraph.style` searches the whole style
    list on every call, 85% of the time a document took to read (bench/ingest.py)."""
    names = {s.style_id: s.name or "" for s in document.styles if s.type == WD_STYLE_TYPE.PARAGRAPH}
    default = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    names[None] = (default.name or "") if default is not None else ""
    return names


def _not_a_zip(path: Path) -> str:
    """Why a .docx is no zip at all: an old Word file renamed, or a damaged copy."""
    with open(path, "rb") as file:
        start = file.read(8)
    if start.startswith(b"\xd0\xcf\x11\xe0"):
        return "an old binary .doc: save it as .docx"
    if start.startswith(b"PK"):
        return "a damaged or truncated zip package"
    return "not a zip package"


def _heading_level(name: str) -> int:
    """1 for Title and Heading 1, N for Heading N, 0 for body text (by the paragraph's style name)."""
    if name == "Title":
        return 1
    if name.startswith("Heading ") and name[8:].isdigit():
        return min(int(name[8:]), 6)
    return 0


def _is_list(paragraph: Paragraph, name: str) -> bool:
    """Bulleted and numbered paragraphs: a List style (`name`), or Word's own numbering on the paragraph."""
    return name.startswith("List") or bool(paragraph._p.xpath("./w:pPr/w:numPr"))


def _table(table: Table) -> str:
    """Markdown table rows; a cell merged across columns is written once."""
    rows: list[list[str]] = []
    for row in table.rows:
        grid = row.cells  # a merged cell is the same object in each column it spans
        cells = [cell for i, cell in enumerate(grid) if i == 0 or cell is not grid[i - 1]]
        texts = [" ".join(cell.text.split()).replace("|", "\\|") for cell in cells]
        if any(texts):
            rows.append(texts)
    lines = ["| " + " | ".join(texts) + " |" for texts in rows]
    if len(lines) > 1:
        lines.insert(1, "|" + " --- |" * len(rows[0]))
    return "\n".join(lines)
