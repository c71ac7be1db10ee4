"""Help-desk article exports (the JSON of Zendesk Help Center's and Intercom's list-articles APIs) as entries.

Teams already keep their help centre in one of these tools; reading its export spares them from copying
articles by hand. Each published article becomes one document entry; drafts are not answers yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .html_loader import document_entry, fragment_markdown
from .records import Entry, IngestError

if TYPE_CHECKING:  # loaders imports this module to dispatch export JSON
    from .loaders import LoadOptions

WRONG_SHAPE = 'expected a Zendesk {"articles": [...]} or Intercom {"type": "list", "data": [...]} export'


@dataclass
class _Source:
    """Where one tool keeps what we need in its article objects."""

    name: str  # id prefix
    url_field: str
    articles: list
    sections: dict[str, str] = field(default_factory=dict)  # section id -> name, for the category


def is_export(data: object) -> bool:
    """Whether parsed JSON claims to be a help-desk export (our own FAQ JSON is a list or {"entries": [...]}),
    so that a malformed export gets this module's message rather than the FAQ loader's."""
    return isinstance(data, dict) and ("articles" in data or data.get("type") == "list")


def export_entries(data: object, options: LoadOptions) -> list[Entry]:
    """One document entry per published article; the whole export is refused on the first bad article."""
    source = _source(data)
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for index, article in enumerate(source.articles, 1):
        where = f"article {index}"
        if not isinstance(article, dict):
            raise IngestError(f"{where}: expected an object, got {_json_type(article)}")
        if _is_draft(article, where):
            continue
        raw_id = _field(article, "id", where, (int, str))
        entry_id = f"{source.name}-{raw_id}"
        if entry_id in seen:
            raise IngestError(f"{where}: id {raw_id} already used by article {seen[entry_id]}")
        seen[entry_id] = index
        title = _field(article, "title", where, (str,)).strip()
        if not title:
            raise IngestError(f"{where}: empty 'title'")
        body = _field(article, "body", where, (str,))
        if len(body) > options.max_field_chars:
            raise IngestError(f"{where}: 'body' has {len(body):,} characters, over the limit of {options.max_field_chars:,}")
        url = _field(article, source.url_field, where, (str,), optional=True)
        category = source.sections.get(str(article.get("section_id")), "")
        try:
            entries.append(document_entry(entry_id, title, fragment_markdown(body), url, category, options))
        except IngestError as err:
            raise IngestError(f"{where}: {err}") from None
    return entries


def _source(data: object) -> _Source:
    if isinstance(data, dict) and isinstance(data.get("articles"), list):
        return _Source("zendesk", "html_url", data["articles"], _sections(data.get("sections", [])))
    if isinstance(data, dict) and data.get("type") == "list" and isinstance(data.get("data"), list):
        return _Source("intercom", "url", data["data"])
    raise IngestError(WRONG_SHAPE)


def _sections(raw: object) -> dict[str, str]:
    """Zendesk's sideloaded sections (`?include=sections`): section id -> name, for the category."""
    if not isinstance(raw, list):
        raise IngestError(f"'sections' must be a list, got {_json_type(raw)}")
    names: dict[str, str] = {}
    for index, section in enumerate(raw, 1):
        where = f"section {index}"
        if not isinstance(section, dict):
            raise IngestError(f"{where}: expected an object, got {_json_type(section)}")
        names[str(_field(section, "id", where, (int, str)))] = _field(section, "name", where, (str,)).strip()
    return names


def _is_draft(article: dict, where: str) -> bool:
    """Zendesk marks drafts with `draft: true`, Intercom with `state: "draft"`."""
    draft = article.get("draft", False)
    if not isinstance(draft, bool):
        raise IngestError(f"{where}: 'draft' must be true or false, got {_json_type(draft)}")
    state = article.get("state", "published")
    if state not in ("published", "draft"):
        raise IngestError(f"{where}: 'state' must be \"published\" or \"draft\", got {state!r}")
    return draft or state == "draft"


def _field(obj: dict, name: str, where: str, types: tuple[type, ...], optional: bool = False) -> Any:
    """obj[name] checked against JSON types; an optional field that is missing or null reads as ""."""
    value = obj.get(name)
    if value is None and optional:
        return ""
    if name not in obj:
        raise IngestError(f"{where}: missing '{name}'")
    if isinstance(value, bool) or not isinstance(value, types):
        wanted = " or ".join("an integer" if t is int else "a string" for t in types)
        raise IngestError(f"{where}: '{name}' must be {wanted}, got {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
