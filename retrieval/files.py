"""Which reader takes which file: the text formats (retrieval.loaders), HTML pages, PDF, DOCX, help-desk
exports and zip archives of any of them. Every refusal is one IngestError line naming the file (and the member
of a zip)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .archive import unpack_zip
from .docx_loader import load_docx
from .helpdesk_loader import export_entries, is_export
from .html_loader import html_entry
from .loaders import SUFFIXES as TEXT_SUFFIXES
from .loaders import LoadOptions, json_entries, load_file, named, parse_json, read_text, slugify
from .pdf_loader import load_pdf
from .records import Entry, IngestError

SUFFIXES = {*TEXT_SUFFIXES, ".html", ".htm", ".pdf", ".docx", ".zip"}
FORMATS = "CSV, JSON, JSONL, Markdown, text, HTML, PDF, DOCX, a help-desk export or a zip of them"


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files named directly, and the supported files inside named folders (sorted, recursive)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES))
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise IngestError(f"{path}: not a regular file or folder")
        else:
            raise IngestError(f"{path}: no such file or folder")
    return files


def read_file(path: Path, options: LoadOptions) -> list[Entry]:
    """Every entry of one file, labelled with the file's name as its source."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise IngestError(f"{path}: unsupported file type '{path.suffix}' (use {FORMATS})")
    if suffix == ".zip":
        return _read_zip(path, options)
    if suffix in TEXT_SUFFIXES and suffix != ".json":
        return load_file(path, options)
    if suffix == ".pdf":
        return named(path, lambda: load_pdf(path, options))
    if suffix == ".docx":
        return named(path, lambda: load_docx(path, options))
    text = read_text(path)  # its refusals name the file already
    if suffix == ".json":  # a help-desk export, or entries of ours: parsed once to tell
        try:
            data = parse_json(text)
        except IngestError as err:
            raise IngestError(f"{path}: {err}") from None
        return named(path, lambda: export_entries(data, options)) if is_export(data) else json_entries(path, data, options)
    return named(path, lambda: [html_entry(text, "", slugify(path.stem) or "page", options)])


def _read_zip(path: Path, options: LoadOptions) -> list[Entry]:
    """A zip's supported files, read as a folder's are; messages name the member inside the zip."""
    with tempfile.TemporaryDirectory(prefix="supportbot-zip-") as folder:
        try:
            members = [m for m in unpack_zip(path, Path(folder)) if m.suffix.lower() in SUFFIXES]
        except IngestError as err:
            raise IngestError(f"{path}: {err}") from None
        entries: list[Entry] = []
        for member in members:
            try:
                entries += read_file(member, options)
            except IngestError as err:
                raise IngestError(str(err).replace(folder, str(path))) from None
        if not entries:
            raise IngestError(f"{path}: no supported files in the archive (use {FORMATS})")
        return entries
