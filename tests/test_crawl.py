"""The crawler against our own help-centre fixture site: complete, polite, bounded, and clear when it cannot start."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from itertools import pairwise
from urllib.parse import urlsplit

import lxml.html
import pytest

from retrieval.crawl import MAX_RUN, CrawlOptions, CrawlReport, _decode, crawl, normalise
from retrieval.records import IngestError
from helpcentre import Site, serve_site

FAST = CrawlOptions(delay=0)


@dataclass
class Run:
    report: CrawlReport
    requests: list[str]  # what the server saw during this crawl
    progress: list[tuple[int, int]]


@pytest.fixture(scope="module")
def site():
    with serve_site(limit=45) as served:
        yield served


def _run(site: Site, start: str, options: CrawlOptions = FAST) -> Run:
    before = len(site.requests)
    calls: list[tuple[int, int]] = []
    report = crawl(start, options, progress=lambda done, total: calls.append((done, total)))
    return Run(report, site.requests[before:], calls)


@pytest.fixture(scope="module")
def full(site) -> Run:
    return _run(site, site.base)


def test_the_site_is_big_enough_and_its_chrome_is_not_content(site):
    assert len(site.articles) >= 40
    for body in site.bodies.values():
        assert not [phrase for phrase in site.chrome if phrase.lower() in body.lower()]


def test_every_article_is_found_once_under_its_canonical_url(site, full):
    urls = [page.url for page in full.report.pages]
    assert len(urls) == len(set(urls))
    assert set(site.articles) <= set(urls)
    assert not [url for url in urls if "?" in url]  # ?from=related copies folded into their canonical page
    assert any("from=related" in url for url in full.requests)
    pages = {page.url: lxml.html.document_fromstring(page.html) for page in full.report.pages}
    for url, title in site.articles.items():
        assert pages[url].findtext(".//h1") == title
    assert not full.report.stopped_at_limit


def test_robots_txt_is_obeyed(site, full):
    assert not [url for url in full.requests if "/help/internal/" in url]
    for url in site.disallowed:
        assert f"{url}: disallowed by robots.txt" in full.report.skipped


def test_nothing_off_the_site_or_outside_its_folder_is_fetched(site, full):
    origin = site.base.removesuffix("/help/")
    assert full.requests[0] == f"{origin}/robots.txt"
    assert {urlsplit(url).netloc for url in full.requests} == {urlsplit(origin).netloc}
    outside = [url for url in full.requests if not url.startswith(site.base)]
    assert sorted(set(outside)) == [f"{origin}/robots.txt", f"{origin}/sitemap.xml"]
    assert not [url for url in full.requests if "utm_" in url]


def test_a_redirect_is_followed_within_the_site_only(site, full):
    old, new = site.redirect
    assert old in full.requests
    urls = [page.url for page in full.report.pages]
    assert urls.count(new) == 1 and old not in urls
    assert f"{site.outbound}: redirects off the site to {site.offsite}" in full.report.skipped


def test_the_calendar_trap_ends(site, full):
    months = [url for url in full.requests if url.startswith(site.trap)]
    assert 0 < len(months) <= MAX_RUN
    assert len([line for line in full.report.skipped if line.startswith(site.trap)]) == 1


def test_non_html_and_oversized_pages_are_skipped_with_a_line_each(site, full):
    assert f"{site.pdf}: not HTML (application/pdf)" in full.report.skipped
    assert f"{site.huge}: over 2,000,000 bytes" in full.report.skipped
    assert site.huge not in [page.url for page in full.report.pages]


def test_progress_is_reported_after_each_page(full):
    assert len(full.progress) >= len(full.report.pages)
    assert [done for done, _ in full.progress] == sorted(done for done, _ in full.progress)
    assert full.progress[-1][0] == full.progress[-1][1]


def test_max_pages_stops_the_crawl_and_says_so(site):
    run = _run(site, site.base, CrawlOptions(delay=0, max_pages=10))
    assert len(run.report.pages) == 10 and run.report.stopped_at_limit


def test_a_sitemap_can_be_the_start(site):
    run = _run(site, site.sitemap)
    assert run.requests[:2] == [site.sitemap.replace("sitemap.xml", "robots.txt"), site.sitemap]
    assert set(site.articles) <= {page.url for page in run.report.pages}


def test_requests_are_spaced_by_the_delay_across_workers(site):
    run = _run(site, site.base, CrawlOptions(delay=0.05, max_pages=6, concurrency=4))
    times = site.request_times[-len(run.requests):]
    assert min(b - a for a, b in pairwise(times)) >= 0.045


def test_a_larger_crawl_delay_in_robots_txt_wins():
    with serve_site(limit=3, crawl_delay=0.1) as slow:
        crawl(slow.base, CrawlOptions(delay=0.01, max_pages=3))
        assert min(b - a for a, b in pairwise(slow.request_times)) >= 0.095


def test_a_start_that_cannot_be_read_is_one_clear_line(site):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/help/"
    cases = {
        closed: "cannot connect",
        site.base + "articles/no-such-article.html": "HTTP 404",
        site.pdf: "not HTML (application/pdf)",
        site.base: "over 1,000 bytes",
    }
    for start, reason in cases.items():
        with pytest.raises(IngestError) as caught:
            crawl(start, CrawlOptions(delay=0, max_bytes=1000))
        message = str(caught.value)
        assert message.startswith(f"{start}: {reason}") and "\n" not in message


def test_urls_are_normalised():
    assert normalise("HTTP://Help.Example.COM:80/a/b.html?utm_source=x&id=3&utm_medium=y#top") == "http://help.example.com/a/b.html?id=3"
    assert normalise("https://help.example.com") == "https://help.example.com/"
    assert normalise("mailto:help@example.com") is None


def test_pages_are_decoded_by_header_then_utf8_then_meta_charset():
    page = '<html><head><meta charset="windows-1252"></head><body>Café “gift” card</body></html>'
    assert "Café “gift” card" in _decode(page.encode("cp1252"), None)
    assert "Café" in _decode(page.encode("utf-8"), None)
    assert "Café" in _decode(page.encode("latin-1", errors="replace"), "iso-8859-1")


def test_a_new_crawl_sees_the_site_edited():
    with serve_site(limit=3) as small:
        changed, deleted = list(small.articles)[:2]
        small.edit(changed, "Everything ships free, always.")
        small.delete(deleted)
        added = small.publish("Caring for outdoor cushions", "Store cushions indoors over winter.")
        pages = {page.url: page.html for page in crawl(small.base, FAST).pages}
        assert "Everything ships free" in pages[changed] and deleted not in pages and added in pages
        small.restore()
        pages = {page.url: page.html for page in crawl(small.base, FAST).pages}
        assert set(small.articles) <= set(pages) and added not in pages and "ships free" not in pages[changed]
