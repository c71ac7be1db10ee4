"""Crawl a help-centre site into its HTML pages, politely and within bounds.

The crawl stays on the start URL's scheme, host and port and under its folder, obeys robots.txt (with its
Crawl-delay), paces requests across all workers, and de-duplicates pages by their canonical URL. Sites
hold traps (calendars, endless listings): besides `max_pages`, a link is not followed when it would make
more than MAX_RUN pages in a row, each found on the previous one, whose URLs differ only in numbers or
query values. Counting a chain rather than all pages of one pattern keeps a help centre whose articles
are all `/articles/<number>` whole (they hang off a few category pages), while a calendar whose months
are reachable only through the month before ends after MAX_RUN months.
"""

from __future__ import annotations

import heapq
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import lxml.etree
import lxml.html
from protego import Protego

from .records import IngestError

MAX_RUN = 50  # pages in a row, each linked from the one before, sharing one URL pattern
MAX_SEGMENTS = 12  # path depth: deeper links are relative-link loops, not articles
MAX_REDIRECTS = 5
MAX_SITEMAPS = 50  # sitemap files read, index files included
HTML_TYPES = ("text/html", "application/xhtml+xml")
XML_TYPES = ("application/xml", "text/xml")
_TRACKING = re.compile(r"utm_.*|gclid|fbclid|msclkid|mc_cid|mc_eid|_hsenc|_hsmi|_ga", re.I)


@dataclass
class CrawlOptions:
    """How `kb add URL` and `kb sync` read a help-centre site (retrieval/crawl.py)."""

    max_pages: int = 2000  # pages read per site at most; the crawl stops there and says so (`kb add --max-pages`)
    delay: float = 0.2  # seconds between two requests (politeness), shared by the workers; a longer robots.txt Crawl-delay wins
    concurrency: int = 4  # requests in flight at once
    timeout: float = 10.0  # seconds to wait for a page
    # A larger page is skipped (the start page refused): main-text extraction takes about 1.3 s per MB and grows
    # faster than the size, and a help article is rarely over 200 KB.
    max_bytes: int = 2_000_000
    user_agent: str = "supportbot"  # the name robots.txt rules are matched against


@dataclass
class CrawledPage:
    url: str  # canonical URL
    html: str


@dataclass
class CrawlReport:
    pages: list[CrawledPage]
    skipped: list[str]  # one line per page not taken, e.g. "http://.../huge: over 2,000,000 bytes"
    stopped_at_limit: bool  # True when max_pages stopped the crawl
    unread: int = 0  # pages that failed for a passing reason (server error, timeout): a sync keeps what they held


def crawl(start: str, options: CrawlOptions = CrawlOptions(), progress: Callable[[int, int], None] | None = None) -> CrawlReport:
    """Crawl from a page or a sitemap.xml URL; raise IngestError (one line naming the URL) when the start
    cannot be read. Problems with later pages are reported in `skipped`."""
    url = normalise(start)
    if url is None:
        raise IngestError(f"{start}: not an http(s) URL")
    limits = httpx.Limits(max_connections=max(1, options.concurrency))
    with httpx.Client(headers={"User-Agent": options.user_agent}, timeout=options.timeout, limits=limits, follow_redirects=False) as client:
        return _Crawler(client, options, url).run(progress or (lambda done, total: None))


def normalise(url: str) -> str | None:
    """The URL that identifies a page: lower-case scheme and host, no default port, no fragment, no
    tracking parameters (other query parameters kept as written); None for what is not http(s)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if port is None or port == {"http": 80, "https": 443}[scheme] else f"{host}:{port}"
    query = "&".join(p for p in parts.query.split("&") if p and not _TRACKING.fullmatch(p.split("=", 1)[0]))
    return urlunsplit((scheme, netloc, parts.path or "/", query, ""))


class _Problem(Exception):
    """A page not taken; the message is the one line for `skipped` (or the IngestError for the start)."""

    def __init__(self, url: str, reason: str, status: int = 0, unreachable: bool = False) -> None:
        super().__init__(f"{url}: {reason}")
        self.reason = reason
        self.status = status
        self.unreachable = unreachable

    @property
    def passing(self) -> bool:
        """A failure that says nothing of the page (the server erred or did not answer), unlike a 404."""
        return self.unreachable or self.status >= 500 or self.status == 429


@dataclass
class _Fetched:
    url: str  # after redirects
    content_type: str
    charset: str | None  # from the Content-Type header
    data: bytes


@dataclass
class _Page:
    url: str
    html: str
    canonical: str | None
    links: list[str]


@dataclass(order=True)
class _Todo:
    depth: int
    seq: int
    url: str = field(compare=False)
    run: int = field(compare=False)  # pages in a row sharing this URL's pattern, this one included


class _Pacer:
    """One politeness clock for all workers: request slots at least `delay` seconds apart."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._lock = threading.Lock()
        self._last = -float("inf")  # the latest slot given; slots follow it by the current delay

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._last + self.delay)
            self._last = slot
        if slot > now:
            time.sleep(slot - now)


@dataclass
class _Scope:
    scheme: str
    netloc: str
    prefix: str  # path folder the crawl stays under
    path: str  # the start path itself, in scope even without its trailing slash

    @classmethod
    def of(cls, url: str) -> _Scope:
        parts = urlsplit(url)
        head, _, last = parts.path.rpartition("/")
        prefix = parts.path + "/" if last and "." not in last else head + "/"
        return cls(parts.scheme, parts.netloc, prefix, parts.path)

    def same_site(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc) == (self.scheme, self.netloc)

    def __contains__(self, url: str) -> bool:
        path = urlsplit(url).path
        return self.same_site(url) and (path.startswith(self.prefix) or path == self.path)


class _Crawler:
    def __init__(self, client: httpx.Client, options: CrawlOptions, start: str) -> None:
        self.client = client
        self.options = options
        self.start = start
        self.scope = _Scope.of(start)
        self.pacer = _Pacer(options.delay)
        self.robots = Protego.parse("")
        self.pages: list[CrawledPage] = []
        self.skipped: list[str] = []
        self.unread = 0  # pages that failed for a passing reason
        self.seen: set[str] = set()  # every URL queued, fetched or known as a canonical or redirect target
        self.taken: set[str] = set()  # URLs (fetched and canonical) of the pages kept
        self.frontier: list[_Todo] = []
        self.seq = 0

    def run(self, progress: Callable[[int, int], None]) -> CrawlReport:
        self._read_robots()
        if not self.robots.can_fetch(self.start, self.options.user_agent):
            raise IngestError(f"{self.start}: robots.txt does not allow crawling it")
        try:
            fetched = self._get(self.start, HTML_TYPES + XML_TYPES, self.scope.same_site)
            self.scope = _Scope.of(fetched.url)
            self.seen.update({self.start, fetched.url})
            if fetched.content_type in XML_TYPES:
                self._read_sitemaps(self._use_sitemap(fetched))
            else:
                self._take(_parse(fetched), _Todo(0, 0, fetched.url, 1))
                self._read_sitemaps(self._sitemap_urls())
        except _Problem as problem:
            raise IngestError(str(problem)) from None
        done = 1
        progress(done, done + len(self.frontier))
        stopped = False
        workers = max(1, self.options.concurrency)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crawl") as pool:
            running: dict[Future, _Todo] = {}
            while self.frontier or running:
                while self.frontier and len(running) < workers and len(self.pages) + len(running) < self.options.max_pages:
                    todo = heapq.heappop(self.frontier)
                    if todo.url not in self.taken:
                        running[pool.submit(self._fetch_page, todo.url)] = todo
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    todo = running.pop(future)
                    result = future.result()
                    done += 1
                    if isinstance(result, _Problem):
                        self.skipped.append(str(result))
                        self.unread += result.passing
                    elif len(self.pages) >= self.options.max_pages:
                        stopped = True
                    else:
                        self._take(result, todo)
                    progress(done, done + len(self.frontier) + len(running))
        stopped = stopped or any(todo.url not in self.taken for todo in self.frontier)
        return CrawlReport(self.pages, self.skipped, stopped, self.unread)

    # --- what to crawl ---------------------------------------------------------------------------

    def _take(self, page: _Page, todo: _Todo) -> None:
        """Keep a page unless its URL or canonical URL is already kept, and queue its links."""
        canonical = page.canonical if page.canonical and page.canonical in self.scope else page.url
        if canonical in self.taken or page.url in self.taken:
            return
        self.taken.update({canonical, page.url})
        self.seen.update({canonical, page.url})
        self.pages.append(CrawledPage(canonical, page.html))
        shape = _shape(page.url)
        for link in page.links:
            self._queue(link, todo.depth + 1, todo.run + 1 if _shape(link) == shape else 1)

    def _queue(self, url: str, depth: int, run: int) -> None:
        if url in self.seen or url not in self.scope:
            return
        self.seen.add(url)
        if urlsplit(url).path.count("/") > MAX_SEGMENTS:
            self.skipped.append(f"{url}: not followed, path deeper than {MAX_SEGMENTS} folders")
        elif run > MAX_RUN:
            self.skipped.append(f"{url}: not followed, {MAX_RUN} pages in a row before it share its URL pattern (an endless calendar?)")
        elif not self.robots.can_fetch(url, self.options.user_agent):
            self.skipped.append(f"{url}: disallowed by robots.txt")
        else:
            self.seq += 1
            heapq.heappush(self.frontier, _Todo(depth, self.seq, url, run))

    def _read_robots(self) -> None:
        url = f"{self.scope.scheme}://{self.scope.netloc}/robots.txt"
        try:
            fetched = self._get(url, None, self.scope.same_site)
        except _Problem as problem:
            if problem.unreachable:
                raise IngestError(f"{self.start}: {problem.reason}") from None
            if problem.status >= 500:
                raise IngestError(f"{self.start}: the site's robots.txt answers HTTP {problem.status}; try again later") from None
            return  # no robots.txt: everything is allowed
        self.robots = Protego.parse(fetched.data.decode("utf-8", errors="replace"))
        self.pacer.delay = max(self.options.delay, self.robots.crawl_delay(self.options.user_agent) or 0.0)

    def _sitemap_urls(self) -> list[str]:
        """The sitemaps robots.txt names on this site, else the conventional /sitemap.xml."""
        named = [url for url in map(normalise, self.robots.sitemaps) if url and self.scope.same_site(url)]
        return named or [f"{self.scope.scheme}://{self.scope.netloc}/sitemap.xml"]

    def _read_sitemaps(self, urls: list[str]) -> None:
        pending, read = list(urls), 0
        while pending and read < MAX_SITEMAPS:
            url = pending.pop(0)
            read += 1
            try:
                pending.extend(self._use_sitemap(self._get(url, XML_TYPES, self.scope.same_site)))
            except _Problem as problem:
                if problem.status != 404:
                    self.skipped.append(str(problem))

    def _use_sitemap(self, fetched: _Fetched) -> list[str]:
        """Queue the in-scope pages a sitemap lists; return the sitemaps a sitemap index lists."""
        kind, locs = _sitemap(fetched.data, fetched.url)
        urls = [url for url in map(normalise, locs) if url]
        if kind == "sitemapindex":
            return [url for url in urls if self.scope.same_site(url)]
        for url in urls:
            self._queue(url, 1, 1)
        return []

    # --- fetching (worker threads) ---------------------------------------------------------------

    def _fetch_page(self, url: str) -> _Page | _Problem:
        try:
            return _parse(self._get(url, HTML_TYPES, self.scope.__contains__))
        except _Problem as problem:
            return problem

    def _get(self, url: str, types: tuple[str, ...] | None, may_redirect: Callable[[str], bool]) -> _Fetched:
        """GET one URL, following redirects only where `may_redirect` and robots.txt allow, reading at
        most max_bytes, of one of `types` (None: any); any failure is a _Problem naming the requested URL."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            self.pacer.wait()
            try:
                with self.client.stream("GET", current) as response:
                    if response.is_redirect:
                        target = normalise(urljoin(current, response.headers.get("location", "")))
                        if target is None or not may_redirect(target):
                            raise _Problem(url, f"redirects off the site to {response.headers.get('location', '')}")
                        if not self.robots.can_fetch(target, self.options.user_agent):
                            raise _Problem(url, f"redirects to {target}, disallowed by robots.txt")
                        current = target
                        continue
                    if not response.is_success:
                        raise _Problem(url, f"HTTP {response.status_code}", status=response.status_code)
                    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    if types is not None and content_type not in types:
                        wanted = "a sitemap" if types == XML_TYPES else "HTML"
                        raise _Problem(url, f"not {wanted} ({content_type or 'no content type'})")
                    return _Fetched(current, content_type, response.charset_encoding, self._read(response, url))
            except httpx.ConnectError as err:
                raise _Problem(url, f"cannot connect ({err})", unreachable=True) from None
            except httpx.TimeoutException:
                raise _Problem(url, f"no answer within {self.options.timeout:g} seconds", unreachable=True) from None
            except httpx.HTTPError as err:
                raise _Problem(url, f"request failed ({err})", unreachable=True) from None
        raise _Problem(url, f"more than {MAX_REDIRECTS} redirects")

    def _read(self, response: httpx.Response, url: str) -> bytes:
        """The body, refused as soon as it passes max_bytes (announced or read)."""
        limit = self.options.max_bytes
        announced = response.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > limit:
            raise _Problem(url, f"over {limit:,} bytes")
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise _Problem(url, f"over {limit:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


# --- parsing -----------------------------------------------------------------------------------------


def _parse(fetched: _Fetched) -> _Page:
    """The page's text, canonical URL and links (normalised, absolute), read with lxml."""
    text = _decode(fetched.data, fetched.charset)
    try:
        doc = lxml.html.document_fromstring(text.encode("utf-8"), parser=lxml.html.HTMLParser(encoding="utf-8"))
    except lxml.etree.ParserError:
        raise _Problem(fetched.url, "empty page") from None
    base = next((urljoin(fetched.url, el.get("href", "")) for el in doc.iter("base") if el.get("href")), fetched.url)
    canonical = next((normalise(urljoin(base, el.get("href", ""))) for el in doc.iter("link")
                      if "canonical" in (el.get("rel") or "").lower().split() and el.get("href")), None)
    links = [normalise(urljoin(base, el.get("href", ""))) for el in doc.iter("a", "area") if el.get("href")]
    return _Page(fetched.url, text, canonical, list(dict.fromkeys(link for link in links if link)))


def _decode(data: bytes, charset: str | None) -> str:
    """The header's charset, else UTF-8 when the bytes are UTF-8 (nearly every site), else the encoding
    lxml reads from <meta charset>."""
    for encoding in filter(None, (charset, "utf-8-sig")):
        try:
            return data.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            pass
    encoding = lxml.html.document_fromstring(data).getroottree().docinfo.encoding or "windows-1252"
    try:
        return data.decode(encoding, errors="replace")
    except LookupError:
        return data.decode("windows-1252", errors="replace")


def _sitemap(data: bytes, url: str) -> tuple[str, list[str]]:
    """('urlset' or 'sitemapindex', the <loc> URLs); entities and network access are off."""
    parser = lxml.etree.XMLParser(resolve_entities=False, no_network=True, recover=True)
    root = lxml.etree.fromstring(data, parser) if data.strip() else None
    if root is None or lxml.etree.QName(root).localname not in ("urlset", "sitemapindex"):
        raise _Problem(url, "not a sitemap (no <urlset> or <sitemapindex>)")
    return lxml.etree.QName(root).localname, [el.text.strip() for el in root.iter("{*}loc") if el.text]


def _shape(url: str) -> str:
    """A URL's pattern: digits folded and query values dropped, so calendar months or page counters match."""
    parts = urlsplit(url)
    keys = sorted({pair.split("=", 1)[0] for pair in parts.query.split("&") if pair})
    return re.sub(r"\d+", "0", parts.path) + "?" + "&".join(keys)
