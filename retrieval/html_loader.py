"""Main-content extraction from help-centre pages: the article as Markdown, without the site's chrome.

Why trafilatura (favor_precision): measured on 6 hand-written Tidewell pages of three themes, each with a
cookie banner, menus, breadcrumbs, "Related articles", a "Was this helpful?" widget and a footer (timed with
an 80 KB mega-menu and script added), and on the 172 article pages of tests/helpcentre.py (2 busy cores);
each cell reads "our 6 pages | the 172 fixture pages":

    pipeline                         chrome leaks  sentences lost  headings  table rows  list items   ms/page
    trafilatura, defaults               1 | 0      0/64 | 0/981     all       all       10/12 | all   31 | 1.7
    trafilatura, favor_precision        0 | 0      0/64 | 0/981     all       all       all           13 | 1.7
    readability-lxml + bs4 Markdown     0 | 0      1/64 | 0/981     all       all       all            8 | 1.7

Both find the article. readability-lxml returns HTML, so it needs a Markdown converter of our own (its
first version already lost a word break at a <br>); trafilatura writes Markdown headings, lists and tables
itself. Its default mode sends a short article to a fallback that flattens the lists and keeps the
"Updated 3 months ago" line; favor_precision does not.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import lxml.etree
import lxml.html
import trafilatura

from .chunking import split_markdown
from .records import Entry, IngestError

# Extraction takes about 1.3 s per MB of HTML and grows faster than the size (90 s at 8 MB); a help article is
# rarely over 200 KB. The crawler's own limit is `crawl.max_bytes`.
MAX_HTML_CHARS = 2_000_000

if TYPE_CHECKING:  # loaders imports this module to dispatch HTML files
    from .loaders import LoadOptions


def html_text(html: str, url: str = "") -> tuple[str, str]:
    """(title, Markdown body) of an article page. The title is the article's own H1 when the body opens
    with it (taken out of the body), else the page's title with the site's name cut off."""
    if not html.strip():
        return "", ""
    if len(html) > MAX_HTML_CHARS:
        raise IngestError(f"{len(html):,} characters of HTML, over the limit of {MAX_HTML_CHARS:,}")
    tree = trafilatura.load_html(html)
    if tree is None:
        raise IngestError("malformed HTML (the parser found no document)")
    body = _markdown(tree, url)
    first, _, rest = body.partition("\n")
    if first.startswith("# "):
        return first[2:].strip(), rest.strip()
    return trafilatura.extract_metadata(tree, url or None).title or "", body


def link_share(html: str, body: str) -> float:
    """The share of the body's text lines (headings aside) that are a link's text on the page: near 1 for a
    category or index page, whose main text is a list of links to articles; 0 for an article."""
    tree = trafilatura.load_html(html)
    anchors = {" ".join(a.text_content().split()).lower() for a in tree.iter("a")} if tree is not None else set()
    lines = [re.sub(r"^(?:[-*+]|\d+\.)\s+|\s*\(\d+\)$", "", line.strip()).lower()
             for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return sum(line in anchors for line in lines) / len(lines) if lines else 0.0


def fragment_markdown(html: str) -> str:
    """Markdown of an HTML fragment that is all content (a help-desk article body). Without an enclosing
    <article>, trafilatura takes a bare fragment for a page with no main text and drops headings and
    lists; links are unwrapped because here a list of links is content, not a menu to drop."""
    tree = lxml.html.document_fromstring(f"<html><body><article>{html}</article></body></html>")
    lxml.etree.strip_tags(tree, "a")
    return _markdown(tree)


def html_entry(html: str, url: str, entry_id: str, options: LoadOptions, category: str = "") -> Entry:
    """A document entry for an article page; passages are titled "Page title > H2 > H3"."""
    title, body = html_text(html, url)
    return document_entry(entry_id, title or entry_id, body, url, category, options)


def document_entry(entry_id: str, title: str, body: str, url: str, category: str, options: LoadOptions) -> Entry:
    """A document entry for extracted Markdown, refused when no text is left (a message without the
    file's name: the caller adds it)."""
    passages = split_markdown(body, title, options.passage_tokens, options.count_tokens)
    if not passages:
        raise IngestError("no article text found")
    return Entry(id=entry_id, title=title, answer=body, category=category, url=url, kind="document", passages=passages)


def _markdown(tree: lxml.html.HtmlElement, url: str = "") -> str:
    text = trafilatura.extract(tree, url=url or None, output_format="markdown", include_tables=True, include_links=False,
                               include_images=False, include_comments=False, favor_precision=True)
    return "\n".join(line.rstrip() for line in (text or "").strip().splitlines())
