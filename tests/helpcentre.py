"""A realistic help-centre site of Tidewell Home & Outdoor, built from our own demo knowledge base.

Crawler and HTML-extraction tests need a site with what real help centres have around their articles:
navigation, a cookie banner, breadcrumbs, sidebars, feedback widgets, footers, scripts, tracking links,
canonical URLs, a robots.txt, a sitemap, redirects, off-site links, non-HTML files, an oversized page
and an endless calendar. The articles' own text is known (`Site.bodies`), so a test can tell content
from chrome exactly. Nothing here reaches the network: the server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import csv
import html
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from itertools import zip_longest
from pathlib import Path
from urllib.parse import urlsplit

from markdown_it import MarkdownIt

KB = Path(__file__).resolve().parents[1] / "data" / "kb"
DEFAULT_ORIGIN = "http://127.0.0.1:8000"
HUGE_BYTES = 6_000_000
_MARKDOWN = MarkdownIt("commonmark").enable("table")

# Every phrase below is on every page (the cookie banner, header, breadcrumbs, widget and footer) or on
# every article page (the sidebar), and in no article's text: an extractor that keeps one kept chrome.
CHROME = [
    "We use cookies to improve your visit",
    "Accept all",
    "Manage preferences",
    "Tidewell Help Centre",
    "Shop all departments",
    "Track a parcel",
    "Find a store",
    "Help Centre home",
    "Related articles",
    "Was this article helpful?",
    "Still need help? Our team is here",
    "All rights reserved",
    "Terms of use",
    "Accessibility statement",
    "trackPageView",
]


@dataclass
class _Article:
    slug: str
    title: str
    category: str
    markdown: str


@dataclass
class Site:
    base: str  # start URL, e.g. "http://127.0.0.1:PORT/help/"
    articles: dict[str, str]  # absolute URL of every article page -> its title (what a crawl must find, each once)
    bodies: dict[str, str]  # article URL -> the article's text as Markdown (title as "# ", sections as "## ")
    chrome: list[str]  # exact phrases of the site's chrome that must never be in a passage
    disallowed: list[str]  # URLs under the robots.txt-excluded folder that exist and are linked
    offsite: str  # an off-site URL linked from the index (another host: must not be fetched)
    redirect: tuple[str, str]  # (old URL, the article it redirects to with 301)
    outbound: str  # a linked URL of the site that redirects (302) to `offsite`
    trap: str  # URL prefix of the endless calendar of links
    sitemap: str  # URL of sitemap.xml (also named in robots.txt)
    pdf: str  # a linked PDF (application/pdf) that a crawler must skip
    huge: str  # a linked HTML page of HUGE_BYTES, sent without Content-Length
    requests: list[str] = field(default_factory=list)  # every URL requested, as "http://<Host header><path>"
    request_times: list[float] = field(default_factory=list)  # time.monotonic() of each request, same order
    root: Path = Path()  # where the files are
    robots: str = ""  # robots.txt as written
    original: list[_Article] = field(default_factory=list, repr=False)
    current: list[_Article] = field(default_factory=list, repr=False)
    failing: set[str] = field(default_factory=set)  # URLs that answer 503 (a server having a bad minute)

    # Editing the live site, as its authors would: sync tests see pages change, go and appear.

    def edit(self, url: str, text: str) -> None:
        """Replace an article's text (its title stays)."""
        self.current = [replace(a, markdown=f"# {a.title}\n\n{text}\n") if self._url(a) == url else a for a in self.current]
        self._write()

    def delete(self, url: str) -> None:
        """Unpublish an article: its page answers 404 and nothing links to it."""
        self.current = [a for a in self.current if self._url(a) != url]
        self._write()

    def publish(self, title: str, text: str, category: str = "Products and warranty") -> str:
        """Add an article (linked from its category page and the sitemap); returns its URL."""
        article = _Article(_slug(title), title, category, f"# {title}\n\n{text}\n")
        self.current = [*self.current, article]
        self._write()
        return self._url(article)

    def restore(self) -> None:
        """The site as it was first written."""
        self.current = list(self.original)
        self.failing.clear()
        self._write()

    def _url(self, article: _Article) -> str:
        return f"{self.base}articles/{article.slug}.html"

    def _write(self) -> None:
        """(Re)write every file from `current`, and `articles` and `bodies` to match."""
        origin = self.base.removesuffix("/help/")
        for folder in ("articles", "categories"):
            shutil.rmtree(self.root / "help" / folder, ignore_errors=True)
        by_category: dict[str, list[_Article]] = {}
        for article in self.current:
            by_category.setdefault(article.category, []).append(article)
        self.articles.clear()
        self.articles.update({self._url(a): a.title for a in self.current})
        self.bodies.clear()
        self.bodies.update({self._url(a): a.markdown for a in self.current})
        files: dict[str, str | bytes] = {}
        for category, members in by_category.items():
            files[f"help/categories/{_slug(category)}.html"] = _category_page(origin, category, members)
            for article in members:
                related = [a for a in members if a is not article][:5]
                files[f"help/articles/{article.slug}.html"] = _article_page(origin, article, related)
        files["help/index.html"] = _index_page(origin, self, by_category, self.current)
        files["help/internal/agent-handbook.html"] = _page("Agent handbook", "<h1>Agent handbook</h1><p>Internal: refunds above $500 need a lead.</p>", [])
        files["help/internal/escalations.html"] = _page("Escalation matrix", "<h1>Escalation matrix</h1><p>Internal: who to call when.</p>", [])
        files["help/files/manual.pdf"] = b"%PDF-1.4\n% Tidewell product care manual\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
        files["sitemap.xml"] = _sitemap([self.base, *(f"{self.base}categories/{_slug(c)}.html" for c in by_category), *self.articles])
        files["robots.txt"] = self.robots
        for name, content in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")


def write_site(root: Path, limit: int | None = None, origin: str = DEFAULT_ORIGIN, crawl_delay: float | None = None) -> Site:
    """Write the static files (pages, sitemap.xml, robots.txt) under root and describe the site.

    `limit` caps the FAQ articles, taken round-robin over the categories so every category stays;
    `origin` is where the site will be served (sitemaps and canonical links are absolute).
    """
    help_url = f"{origin}/help"
    articles = _faq_articles(limit) + _policy_articles()
    delay = f"Crawl-delay: {crawl_delay:g}\n" if crawl_delay else ""
    site = Site(
        base=f"{help_url}/",
        articles={},
        bodies={},
        chrome=list(CHROME),
        disallowed=[f"{help_url}/internal/agent-handbook.html", f"{help_url}/internal/escalations.html"],
        offsite=f"http://localhost:{origin.rsplit(':', 1)[1]}/partner/register-warranty",
        redirect=(f"{help_url}/old/{articles[0].slug}", f"{help_url}/articles/{articles[0].slug}.html"),
        outbound=f"{help_url}/go/partner",
        trap=f"{help_url}/events/",
        sitemap=f"{origin}/sitemap.xml",
        pdf=f"{help_url}/files/manual.pdf",
        huge=f"{help_url}/huge",
        root=root,
        robots=f"User-agent: *\nDisallow: /help/internal/\n{delay}\nSitemap: {origin}/sitemap.xml\n",
        original=articles,
        current=list(articles),
    )
    site._write()
    return site


@contextmanager
def serve_site(limit: int | None = None, crawl_delay: float | None = None) -> Iterator[Site]:
    """Write the site into a temporary folder and serve it on 127.0.0.1 (a free port) until the block ends."""
    with tempfile.TemporaryDirectory(prefix="helpcentre-") as tmp:
        server = _Server(("127.0.0.1", 0), None)
        origin = f"http://127.0.0.1:{server.server_address[1]}"
        site = write_site(Path(tmp), limit, origin, crawl_delay)
        server.RequestHandlerClass = partial(_Handler, site, threading.Lock(), directory=tmp)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield site
        finally:
            server.shutdown()
            server.server_close()


def markdown_twin(site: Site, folder: Path) -> list[Path]:
    """The site's articles as Markdown files, one per article, named after the page: the same content
    ingested without a crawl, so a benchmark can compare the two paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for url, body in site.bodies.items():
        path = folder / (url.rsplit("/", 1)[1].removesuffix(".html") + ".md")
        path.write_text(body, encoding="utf-8")
        paths.append(path)
    return paths


# --- content -------------------------------------------------------------------------------------


def _faq_articles(limit: int | None) -> list[_Article]:
    entries: dict[str, dict] = {}
    with (KB / "faq.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            entry = entries.setdefault(row["id"], {**row, "questions": []})
            entry["questions"].append(row["question"])
    by_category: dict[str, list[dict]] = {}
    for entry in entries.values():
        by_category.setdefault(entry["category"], []).append(entry)
    chosen = [e for group in zip_longest(*by_category.values()) for e in group if e is not None][:limit]
    return [_Article(e["id"], e["title"], e["category"], _faq_markdown(e)) for e in chosen]


def _faq_markdown(entry: dict) -> str:
    questions = "\n".join(f"- {q}" for q in dict.fromkeys(entry["questions"]))
    return f"# {entry['title']}\n\n{entry['answer']}\n\n## Questions this article answers\n\n{questions}\n"


def _policy_articles() -> list[_Article]:
    articles = []
    for path in sorted(KB.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        if "\n| " not in text:
            text = _first_list_as_table(text)
        title = text.splitlines()[0].removeprefix("# ").strip()
        articles.append(_Article(path.stem, title, "Policies", text))
    return articles


def _first_list_as_table(text: str) -> str:
    """Render the first '- **Label:** details' list as a two-column table, as help centres often show
    return windows and the like, so every policy article has a table."""
    pattern = re.compile(r"(?:^- \*\*(.+?):?\*\*:? (.+(?:\n  .+)*)\n)+", re.M)
    match = pattern.search(text)
    if match is None:
        return text
    rows = re.findall(r"^- \*\*(.+?):?\*\*:? (.+(?:\n  .+)*)", match.group(0), re.M)
    table = "| Item | Details |\n| --- | --- |\n" + "".join(f"| {label} | {' '.join(details.split())} |\n" for label, details in rows)
    return text[: match.start()] + table + text[match.end():]


# --- pages -----------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _page(title: str, main: str, crumbs: list[tuple[str, str]], sidebar: str = "", canonical: str = "") -> str:
    """One page in the site's template: everything but `main` is chrome."""
    e = html.escape
    trail = "".join(f' › <a href="{e(href)}">{e(text)}</a>' if href else f" › <span>{e(text)}</span>" for text, href in crumbs)
    link = f'<link rel="canonical" href="{e(canonical)}">\n' if canonical else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} | Tidewell Help Centre</title>
{link}<link rel="stylesheet" href="/help/assets/site.css">
<script>
window.dataLayer = window.dataLayer || [];
function trackPageView(path) {{ window.dataLayer.push({{event: "page_view", page: path}}); }}
trackPageView(window.location.pathname);
</script>
</head>
<body>
<div class="cookie-banner" role="dialog">We use cookies to improve your visit and to measure site traffic.
<button class="secondary">Manage preferences</button> <button class="primary">Accept all</button></div>
<header class="site-header">
<a class="logo" href="/help/">Tidewell Help Centre</a>
<nav class="main-nav"><ul>
<li><a href="/shop/">Shop all departments</a></li>
<li><a href="/orders/track">Track a parcel</a></li>
<li><a href="/stores/">Find a store</a></li>
<li><a href="/account/sign-in">Sign in</a></li>
</ul></nav>
<form class="search" action="/help/search" method="get"><input name="q" placeholder="Search"><button>Search</button></form>
</header>
<nav class="breadcrumbs" aria-label="Breadcrumb"><a href="/help/">Help Centre home</a>{trail}</nav>
<div class="layout">
<main id="content">
{main}
<div class="helpful">Was this article helpful? <button>Yes</button> <button>No</button></div>
</main>
{sidebar}
</div>
<footer class="site-footer">
<p>Still need help? Our team is here 8am-8pm Pacific, every day.</p>
<ul>
<li><a href="/legal/terms">Terms of use</a></li>
<li><a href="/legal/accessibility">Accessibility statement</a></li>
<li><a href="/help/internal/agent-handbook.html">Staff: agent handbook</a></li>
<li><a href="/help/internal/escalations.html">Staff: escalations</a></li>
</ul>
<p>© 2025 Tidewell Home &amp; Outdoor, Inc. All rights reserved.</p>
</footer>
</body>
</html>
"""


def _article_page(origin: str, article: _Article, related: list[_Article]) -> str:
    # Related links carry a query that normalisation keeps: only <link rel=canonical> de-duplicates them.
    items = "".join(f'<li><a href="/help/articles/{a.slug}.html?from=related">{html.escape(a.title)}</a></li>' for a in related)
    sidebar = f'<aside class="sidebar"><h2>Related articles</h2><ul>{items}</ul></aside>' if items else ""
    crumbs = [(article.category, f"/help/categories/{_slug(article.category)}.html"), (article.title, "")]
    main = f'<article class="article-body">\n{_MARKDOWN.render(article.markdown)}</article>'
    return _page(article.title, main, crumbs, sidebar, canonical=f"{origin}/help/articles/{article.slug}.html")


def _category_page(origin: str, category: str, members: list[_Article]) -> str:
    items = "".join(f'<li><a href="/help/articles/{a.slug}.html">{html.escape(a.title)}</a></li>' for a in members)
    main = f"<h1>{html.escape(category)}</h1>\n<ul class=\"article-list\">{items}</ul>"
    return _page(category, main, [(category, "")], canonical=f"{origin}/help/categories/{_slug(category)}.html")


def _index_page(origin: str, site: Site, by_category: dict[str, list[_Article]], articles: list[_Article]) -> str:
    e = html.escape
    topics = "".join(f'<li><a href="categories/{_slug(c)}.html">{e(c)}</a> ({len(m)})</li>' for c, m in by_category.items())
    popular = "".join(f'<li><a href="/help/articles/{a.slug}.html?utm_source=nav&amp;utm_medium=home">{e(a.title)}</a></li>' for a in articles[1:7])
    main = f"""<h1>How can we help?</h1>
<h2>Browse by topic</h2><ul class="topics">{topics}</ul>
<h2>Popular articles</h2><ul>{popular}</ul>
<h2>More</h2><ul>
<li><a href="{e(site.redirect[0])}">Our previous help page about this topic</a></li>
<li><a href="/help/events/2025-01">Workshops and events calendar</a></li>
<li><a href="/help/files/manual.pdf">Product care manual (PDF)</a></li>
<li><a href="/help/huge">Complete product catalogue, every item on one page</a></li>
<li><a href="{e(site.offsite)}">Register your warranty with our partner</a></li>
<li><a href="{e(site.outbound)}">Our partner's assembly service</a></li>
<li><a href="#content">Back to top</a></li>
<li><a href="mailto:help@tidewell.example">Email us</a></li>
</ul>"""
    return _page("Help Centre", main, [], canonical=f"{origin}/help/")


def _sitemap(urls: list[str]) -> str:
    entries = "".join(f"  <url><loc>{html.escape(u)}</loc></url>\n" for u in urls)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n{entries}</urlset>\n'


def _calendar_page(year: int, month: int) -> str:
    after = (year + month // 12, month % 12 + 1)
    main = (f"<h1>Workshops and events: {year}-{month:02d}</h1><p>No workshops are scheduled this month.</p>"
            f'<p><a href="/help/events/{after[0]}-{after[1]:02d}">Next month ›</a></p>')
    return _page(f"Events {year}-{month:02d}", main, [("Events", "")])


# --- server ----------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """Quiet: a client that stops reading the huge page is expected, not a failure."""


class _Handler(SimpleHTTPRequestHandler):
    """Static files plus the dynamic parts: the redirects, the calendar trap and the huge page."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stall per keep-alive response

    def __init__(self, site: Site, lock: threading.Lock, *args, **kwargs) -> None:
        self.site = site
        self.lock = lock
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args) -> None:
        pass

    def list_directory(self, path):
        self.send_error(404)

    def do_GET(self) -> None:
        with self.lock:
            self.site.requests.append(f"http://{self.headers.get('Host', '')}{self.path}")
            self.site.request_times.append(time.monotonic())
        path = self.path.split("?", 1)[0]
        old, new = self.site.redirect
        month = re.fullmatch(r"/help/events/(\d{4})-(\d{2})", path)
        if any(urlsplit(url).path == path for url in self.site.failing):
            self._send(503, b"Service unavailable", "text/plain")
        elif path == urlsplit(old).path:
            self._send(301, b"", "text/html", {"Location": new})
        elif path == urlsplit(self.site.outbound).path:
            self._send(302, b"", "text/html", {"Location": self.site.offsite})
        elif month and 1 <= int(month.group(2)) <= 12:
            self._send(200, _calendar_page(int(month.group(1)), int(month.group(2))).encode(), "text/html; charset=utf-8")
        elif path == "/help/huge":
            self._send_huge()
        else:
            super().do_GET()

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_huge(self) -> None:
        """No Content-Length, so a client learns the size only by reading: a size limit must stream."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Connection", "close")
        self.end_headers()
        row = b"<p>Catalogue item: Tidewell stoneware mug, 12 oz, glazed in harbour blue.</p>\n"
        sent = 0
        try:
            self.wfile.write(b"<!DOCTYPE html><html><head><title>Catalogue</title></head><body><h1>Catalogue</h1>\n")
            while sent < HUGE_BYTES:
                self.wfile.write(row * 1000)
                sent += len(row) * 1000
            self.wfile.write(b"</body></html>\n")
        except OSError:
            pass
