"""Sources: where a knowledge base's entries come from (a help-centre site, a file, a folder, an upload) and
how each is read into entries, the first time and at every sync.

Reading never writes: `KnowledgeBase.add` and `sync` (retrieval.kb) read every source first and then apply
what they read, additions, changes and removals together, in one commit. A source that cannot be read
raises IngestError naming it, and the knowledge base stays as it was.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .crawl import CrawledPage, CrawlOptions, crawl
from .files import FORMATS, expand_paths, read_file
from .html_loader import html_entry, link_share
from .loaders import LoadOptions, slugify
from .records import Entry, IngestError, Source

Progress = Callable[[str, int, int], None]
_URL = re.compile(r"^https?://", re.IGNORECASE)
TEMPLATE_COPIES = 3  # pages sharing one text that make it a template rather than an article
LISTING_LINKS = 0.5  # a page whose text lines are mostly links' text lists articles rather than being one


@dataclass
class SourceRead:
    """What one read of a source found."""

    entries: list[Entry]
    notes: list[str] = field(default_factory=list)  # pages skipped and why, a crawl stopped by its limit
    complete: bool = True  # False when a limit cut the read short: entries not seen then are kept, not removed


def is_url(location: str) -> bool:
    return bool(_URL.match(location))


def describe(location: str, uploaded: bool = False, max_pages: int = 0) -> Source:
    """The source a location names: a site by its host and path, a file or folder by its name. An uploaded
    file is known by its name only (the server's copy of it is temporary)."""
    if is_url(location):
        parts = urlsplit(location)
        if not parts.hostname:
            raise IngestError(f"{location}: not a URL with a host")
        return Source(name=f"{parts.netloc}{parts.path or '/'}", kind="web", location=location, max_pages=max_pages)
    path = Path(location)
    if uploaded:
        return Source(name=path.name, kind="upload", location=str(path))
    if path.is_dir():
        return Source(name=f"{path.resolve().name}/", kind="folder", location=location)
    return Source(name=path.name, kind="file", location=location)


def read_source(source: Source, options: LoadOptions, crawl_options: CrawlOptions, progress: Progress) -> SourceRead:
    """Every entry of the source now, labelled with its name; IngestError (one line naming the source, file or
    page) when it cannot be read."""
    if source.kind == "web":
        read = _read_site(source, options, crawl_options, progress)
    else:
        read = SourceRead(_read_files(source.location, options, progress))
    for entry in read.entries:
        entry.source = source.name
    return read


def _read_site(source: Source, options: LoadOptions, crawl_options: CrawlOptions, progress: Progress) -> SourceRead:
    if source.max_pages:
        crawl_options = CrawlOptions(**{**vars(crawl_options), "max_pages": source.max_pages})
    report = crawl(source.location, crawl_options, lambda done, total: progress("crawl", done, total))
    notes = list(report.skipped)
    articles, empty = _articles(report.pages, options)
    if empty:
        notes.append(f"{source.location}: {empty} page(s) with no article of their own (category and index pages, "
                     "or one text repeated on many pages, such as a calendar) were read for links only")
    if report.stopped_at_limit:
        notes.append(f"{source.location}: stopped at {crawl_options.max_pages:,} pages (the crawl limit); "
                     "pages not reached are kept as they were")
    if report.unread:
        notes.append(f"{source.location}: {report.unread} page(s) could not be read this time (server errors or "
                     "timeouts); no page was removed")
    if not articles:
        raise IngestError(f"{source.location}: no article found on {len(report.pages)} page(s)")
    return SourceRead(articles, notes, complete=not report.stopped_at_limit and not report.unread)


def _articles(pages: list[CrawledPage], options: LoadOptions) -> tuple[list[Entry], int]:
    """The pages that are articles, as entries, and how many were not. A page whose text is mostly links lists
    articles (a category or index page). A text that several pages share is a template, not an article (empty calendar months, "no results" pages): two copies keep the first,
    `TEMPLATE_COPIES` or more keep none."""
    entries: list[Entry] = []
    for page in pages:
        try:
            entry = html_entry(page.html, page.url, page_id(page.url), options)
        except IngestError:  # no article text: a page read for its links only
            continue
        if link_share(page.html, entry.answer) < LISTING_LINKS:
            entries.append(entry)
    copies = Counter(e.answer for e in entries)
    kept: dict[str, Entry] = {}
    texts: set[str] = set()
    for entry in entries:
        if copies[entry.answer] < TEMPLATE_COPIES and entry.answer not in texts and entry.id not in kept:
            kept[entry.id] = entry
            texts.add(entry.answer)
    return list(kept.values()), len(pages) - len(kept)


def page_id(url: str) -> str:
    """A web page's entry id: its host and path, readable and stable across syncs (a long one keeps its
    start and a digest of the whole)."""
    parts = urlsplit(url)
    slug = slugify(f"{parts.hostname or ''} {parts.path}")
    return slug if len(slug) <= 80 else f"{slug[:72].strip('-')}-{hashlib.sha1(url.encode()).hexdigest()[:7]}"


def _read_files(location: str, options: LoadOptions, progress: Progress) -> list[Entry]:
    files = expand_paths([location])
    if not files:
        raise IngestError(f"{location}: no supported files found (use {FORMATS})")
    entries: dict[str, Entry] = {}
    for i, path in enumerate(files):
        progress("read", i, len(files))
        entries.update((e.id, e) for e in read_file(path, options))
    progress("read", len(files), len(files))
    return list(entries.values())
