"""Read knowledge-base files of the text formats (CSV, JSON, JSONL, Markdown, text) into entries, or refuse them
whole.

Every refusal is an IngestError whose message is one line naming the file and the row, line or entry,
so that ops can fix the file; nothing is written before every file of a batch has parsed.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .chunking import TokenCounter, markdown_title, split_markdown, split_text, word_count
from .records import Entry, IngestError

CSV_COLUMNS = ("id", "question", "answer", "title", "category", "url")
REQUIRED_COLUMNS = ("question", "answer")
SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".md": "markdown", ".markdown": "markdown", ".txt": "text"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

csv.field_size_limit(64 * 1024 * 1024)  # our own limit (max_field_chars) gives the clear message


@dataclass
class LoadOptions:
    passage_tokens: int = 200
    max_field_chars: int = 100_000
    count_tokens: TokenCounter = word_count


@dataclass
class _Row:
    """One question with its answer, before rows sharing an id are merged into an entry."""

    where: str  # "line 7" or "entry 3": for messages
    id: str
    question: str
    answer: str
    title: str = ""
    category: str = ""
    url: str = ""


def load_file(path: Path, options: LoadOptions) -> list[Entry]:
    """Parse one file of a text format (SUFFIXES) into entries; raise IngestError naming the file and row on any
    problem. Other formats (HTML, PDF, DOCX, exports, zips) are read by retrieval.files."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise IngestError(f"{path}: unsupported file type '{path.suffix}' (use CSV, JSON, JSONL, Markdown or text)")
    text = read_text(path)
    if kind == "csv":
        return named(path, lambda: _merge(_csv_rows(text), options, path))
    if kind == "json":
        return named(path, lambda: _merge(_json_rows(text), options, path))
    if kind == "jsonl":
        return named(path, lambda: _merge(_jsonl_rows(text), options, path))
    return named(path, lambda: [_document(path, text, kind, options)])


def named(path: Path, read: Callable[[], list[Entry]]) -> list[Entry]:
    """The entries `read` makes of a file, labelled with its name as their source; a refusal names the file."""
    try:
        entries = read()
    except IngestError as err:
        raise IngestError(f"{path}: {err}") from None
    for entry in entries:
        entry.source = path.name
    return entries


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise IngestError(f"{path}: cannot read the file ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise IngestError(f"{path}: line {line}: not valid UTF-8 (byte 0x{data[err.start]:02x}); save the file as UTF-8") from None
    if not text.strip():
        raise IngestError(f"{path}: file is empty")
    return _CONTROL.sub(" ", text)


def _csv_rows(text: str) -> list[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader)]
    _check_header(header)
    rows: list[_Row] = []
    line = reader.line_num + 1
    for values in reader:
        where = f"line {line}"
        line = reader.line_num + 1
        if not any(v.strip() for v in values):
            continue
        if len(values) > len(header):
            raise IngestError(f"{where}: {len(values)} values for {len(header)} columns (is a comma missing its quotes?)")
        record = dict(zip(header, values))
        rows.append(_row(where, record))
    if not rows:
        raise IngestError("no rows after the header")
    return rows


def _check_header(header: list[str]) -> None:
    for name in header:
        if name not in CSV_COLUMNS:
            guess = difflib.get_close_matches(name, CSV_COLUMNS, n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else f" (columns are: {', '.join(CSV_COLUMNS)})"
            raise IngestError(f"line 1: unknown column '{name}'{hint}")
    for name in REQUIRED_COLUMNS:
        if name not in header:
            raise IngestError(f"line 1: missing required column '{name}' (found: {', '.join(header)})")
    if len(set(header)) != len(header):
        raise IngestError("line 1: a column name appears twice")


def parse_json(text: str, line: int = 1) -> object:
    """json.loads, every refusal an IngestError naming the line: nesting too deep and numbers too long
    raise RecursionError and ValueError, not JSONDecodeError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise IngestError(f"line {line + err.lineno - 1}: invalid JSON ({err.msg})") from None
    except RecursionError:
        raise IngestError(f"line {line}: invalid JSON (nested too deeply)") from None
    except ValueError:
        raise IngestError(f"line {line}: invalid JSON (a number with too many digits)") from None


def _json_rows(text: str) -> list[_Row]:
    return _data_rows(parse_json(text))


def json_entries(path: Path, data: object, options: LoadOptions) -> list[Entry]:
    """The entries of a JSON file already parsed (retrieval.files reads it once to tell an export from ours)."""
    return named(path, lambda: _merge(_data_rows(data), options, path))


def _data_rows(data: object) -> list[_Row]:
    if isinstance(data, dict) and isinstance(data.get("entries"), list):
        data = data["entries"]
    if not isinstance(data, list):
        raise IngestError("expected a list of entry objects (or an object with an 'entries' list)")
    return [row for i, obj in enumerate(data, 1) for row in _object_rows(f"entry {i}", obj)]


def _jsonl_rows(text: str) -> list[_Row]:
    rows: list[_Row] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        obj = parse_json(line, n)
        rows.extend(_object_rows(f"line {n}", obj))
    return rows


def _object_rows(where: str, obj: object) -> list[_Row]:
    if not isinstance(obj, dict):
        raise IngestError(f"{where}: expected an object, got {type(obj).__name__}")
    unknown = set(obj) - set(CSV_COLUMNS) - {"questions"}
    if unknown:
        raise IngestError(f"{where}: unknown field '{sorted(unknown)[0]}'")
    questions = obj.get("questions", [])
    if "question" in obj:
        questions = [obj["question"], *questions] if isinstance(questions, list) else questions
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        raise IngestError(f"{where}: 'questions' must be a list of strings")
    if not questions:
        raise IngestError(f"{where}: needs 'question' or 'questions'")
    for name in ("id", "answer", "title", "category", "url"):
        if name in obj and not isinstance(obj[name], str):
            raise IngestError(f"{where}: '{name}' must be a string, got {type(obj[name]).__name__}")
    return [_row(where, {**obj, "question": q}) for q in questions]


def _row(where: str, record: dict) -> _Row:
    fields = {k: (record.get(k) or "").strip() for k in CSV_COLUMNS}
    if not fields["question"]:
        raise IngestError(f"{where}: empty question")
    if not fields["answer"]:
        raise IngestError(f"{where}: empty answer")
    return _Row(where=where, **fields)


def _merge(rows: list[_Row], options: LoadOptions, path: Path) -> list[Entry]:
    """Rows sharing an id (or, without ids, the same answer) become one entry with question variants."""
    groups: dict[str, list[_Row]] = {}
    for row in rows:
        for name in CSV_COLUMNS:
            size = len(getattr(row, name))
            if size > options.max_field_chars:
                raise IngestError(f"{row.where}: field '{name}' has {size:,} characters, over the limit of {options.max_field_chars:,}")
        row.id = row.id or "e-" + hashlib.sha1(" ".join(row.answer.split()).encode()).hexdigest()[:12]
        groups.setdefault(row.id, []).append(row)
    entries = []
    for entry_id, group in groups.items():
        first = group[0]
        for other in group[1:]:
            if other.answer != first.answer:
                raise IngestError(f"id '{entry_id}': {first.where} and {other.where} give different answers (rows sharing an id are variants of one entry)")
        title = next((r.title for r in group if r.title), first.question)
        entries.append(faq_entry(entry_id, title, first.answer, [r.question for r in group],
                                 next((r.category for r in group if r.category), ""), next((r.url for r in group if r.url), ""), options))
    return entries


def faq_entry(entry_id: str, title: str, answer: str, questions: list[str], category: str, url: str, options: LoadOptions) -> Entry:
    """An FAQ entry with its question variants (repeats dropped) and its answer cut into passages."""
    return Entry(id=entry_id, title=title, answer=answer, questions=list(dict.fromkeys(questions)), category=category, url=url,
                 passages=split_text(answer, title, options.passage_tokens, options.count_tokens))


def _document(path: Path, text: str, kind: str, options: LoadOptions) -> Entry:
    stem_title = path.stem.replace("-", " ").replace("_", " ").strip().capitalize()
    if kind == "markdown":
        title = markdown_title(text) or stem_title
        passages = split_markdown(text, title, options.passage_tokens, options.count_tokens)
    else:
        title = stem_title
        passages = split_text(text, title, options.passage_tokens, options.count_tokens)
    if not passages:
        raise IngestError("no text besides headings")
    return Entry(id=slugify(path.stem) or "document", title=title, answer=text.strip(), kind="document", passages=passages)
