"""Sources and sync: a site, a folder or a file added once is remembered, and a sync adds, updates and removes
what changed in one commit; a sync that fails or is killed part-way leaves the knowledge base as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpcentre import serve_site
from helpers import write

from retrieval import IngestError
from retrieval.crawl import CrawlOptions

FAST = CrawlOptions(delay=0.0, concurrency=4)


def state(kb) -> tuple[dict[str, str], str]:
    """Everything a search sees: each entry's content hash, and the index version."""
    ids = [e.id for e in kb.entries()]
    return kb.store.content_hashes(ids), kb.store.index_token()


@pytest.fixture(scope="module")
def site():
    with serve_site(limit=45) as site:
        yield site


@pytest.fixture(scope="module")
def crawled(site, tmp_path_factory, tiny_embedder):
    """The fixture site added once (tests below only read it)."""
    from retrieval import KnowledgeBase, RetrievalSettings

    kb = KnowledgeBase(tmp_path_factory.mktemp("site-kb"), RetrievalSettings(), tiny_embedder)
    report = kb.add([site.base], crawl=FAST)
    yield kb, report
    kb.close()


def test_a_site_becomes_one_entry_per_article_citing_its_page(crawled, site):
    kb, report = crawled
    entries = [kb.entry(e.id) for e in kb.entries()]
    assert sorted(e.url for e in entries) == sorted(site.articles)  # each article once, by its canonical URL
    assert report.added == len(site.articles) and report.removed == 0
    assert {e.title for e in entries} == set(site.articles.values())
    for entry in entries:
        for passage in entry.passages:
            leaked = [phrase for phrase in site.chrome if phrase.lower() in passage.text.lower()]
            assert not leaked, f"{entry.url}: {leaked}"
    (source,) = kb.sources()
    assert (source.kind, source.location, source.pages, source.error) == ("web", site.base, len(site.articles), "")
    assert any("manual.pdf" in note for note in report.notes)  # a skipped page is reported, not fatal


def test_a_search_finds_an_article_and_cites_its_url(crawled, site):
    kb, _ = crawled
    url, title = next(iter(site.articles.items()))
    hit = kb.search(title, k=3)[0]
    assert hit.url == url


def test_folder_sync_adds_updates_and_removes_in_one_commit(make_kb, tmp_path):
    folder = tmp_path / "docs"
    write(folder / "faq.csv", "id,question,answer\nship,How long is shipping?,Three days.\ngift,Do gift cards expire?,Never.\n")
    write(folder / "care.md", "# Care guide\n\nOil the teak table twice a year.\n")
    kb = make_kb()
    first = kb.add([folder])
    assert (first.added, first.sources) == (3, ["docs/"])

    write(folder / "faq.csv", "id,question,answer\nship,How long is shipping?,Two days now.\nwarranty,Is there a warranty?,Two years.\n")
    (folder / "care.md").unlink()
    report = kb.sync(["docs/"])
    assert (report.added, report.updated, report.unchanged, report.removed) == (1, 1, 0, 2)
    assert sorted(e.id for e in kb.entries()) == ["ship", "warranty"]
    assert kb.entry("ship").answer == "Two days now."
    again = kb.sync()
    assert (again.added, again.updated, again.removed, again.embedded) == (0, 0, 0, 0)  # unchanged: nothing embedded


def test_adding_the_same_file_again_syncs_it_and_another_file_of_that_name_is_a_new_source(make_kb, tmp_path):
    kb = make_kb()
    kb.add([write(tmp_path / "a" / "faq.csv", "id,question,answer\nx,Q one?,A.\ny,Q two?,B.\n")])
    report = kb.add([write(tmp_path / "a" / "faq.csv", "id,question,answer\nx,Q one?,A.\n")])
    assert report.removed == 1 and [e.id for e in kb.entries()] == ["x"]
    other = kb.add([write(tmp_path / "b" / "faq.csv", "id,question,answer\nz,Q three?,C.\n")])
    assert other.sources == ["faq.csv (2)"] and sorted(e.id for e in kb.entries()) == ["x", "z"]


def test_a_failed_sync_changes_nothing_and_the_source_says_why(make_kb, tmp_path):
    folder = tmp_path / "docs"
    write(folder / "faq.csv", "id,question,answer\nship,How long is shipping?,Three days.\n")
    kb = make_kb()
    kb.add([folder])
    before = state(kb)
    write(folder / "new.csv", "id,question,answer\nnew,A new question?,Yes.\n")
    write(folder / "broken.csv", "id,question,answer\nbad,,No question.\n")
    with pytest.raises(IngestError, match=r"broken\.csv: line 2: empty question"):
        kb.sync(["docs/"])
    assert state(kb) == before
    (source,) = kb.sources()
    assert "broken.csv: line 2: empty question" in source.error


def test_sync_refuses_unknown_names_and_uploads(make_kb, tmp_path):
    kb = make_kb()
    kb.add([write(tmp_path / "up" / "faq.csv", "question,answer\nQ?,A.\n")], uploaded=True)
    assert kb.sources()[0].location == "faq.csv"  # the server's temporary copy is not remembered
    with pytest.raises(IngestError, match="faq.csv: an uploaded file; upload it again"):
        kb.sync(["faq.csv"])
    with pytest.raises(IngestError, match="no source named 'nope'"):
        kb.sync(["nope"])


def test_a_site_sync_follows_new_changed_and_deleted_pages(site, make_kb):
    kb = make_kb()
    kb.add([site.base], crawl=FAST)
    changed, deleted = list(site.articles)[:2]
    site.edit(changed, "Our new policy: everything ships free, always.")
    site.delete(deleted)
    added = site.publish("Caring for outdoor cushions", "Store cushions indoors over winter and brush off pollen weekly.")
    try:
        report = kb.sync(crawl=FAST)
        assert (report.added, report.updated, report.removed) == (1, 1, 1)
        by_url = {kb.entry(e.id).url: kb.entry(e.id) for e in kb.entries()}
        assert deleted not in by_url and added in by_url
        assert "everything ships free" in by_url[changed].answer
    finally:
        site.restore()


def test_a_sync_killed_mid_way_leaves_the_previous_state(site, tmp_path, tiny_embedder_path):
    """A real process, killed with SIGKILL while it crawls: the next reader sees exactly the last good sync."""
    from chatbot import load_config, open_kb

    home = tmp_path / "home"
    overrides = [f"retrieval.embedder={tiny_embedder_path}", "crawl.delay=0"]
    config = load_config(home, overrides, env={})
    kb = open_kb(config)
    kb.add([site.base], crawl=config.crawl)
    before = state(kb)
    kb.close()
    changed = next(iter(site.articles))
    site.edit(changed, "A change that must not half-arrive.")
    try:
        cmd = [sys.executable, "-m", "ui.cli", "kb", "sync", "--all", "--home", str(home),
               *[f"--set={o}" for o in overrides[:1]], "--set=crawl.delay=0.2"]
        process = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in process.stderr:
            if line.startswith("progress: crawl"):
                break
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        site.restore()
    kb = open_kb(config)
    assert state(kb) == before
    kb.close()


@pytest.mark.parametrize("start, message", [
    ("http://127.0.0.1:9/help/", r"http://127\.0\.0\.1:9/help/: cannot connect"),
    ("{base}no-such-page", r"no-such-page: HTTP 404"),
    ("{pdf}", r"manual\.pdf: not HTML \(application/pdf\)"),
    ("{huge}", r"huge: over 2,000,000 bytes"),
])
def test_a_bad_start_url_is_one_line_and_changes_nothing(site, make_kb, start, message):
    kb = make_kb()
    before = state(kb)
    with pytest.raises(IngestError, match=message) as refused:
        kb.add([start.format(base=site.base, pdf=site.pdf, huge=site.huge)], crawl=FAST)
    assert "\n" not in str(refused.value) and state(kb) == before and kb.sources() == []


def test_a_crawl_stopped_by_its_page_limit_says_so_and_removes_nothing(site, make_kb):
    kb = make_kb()
    kb.add([site.base], crawl=FAST)
    everything = len(kb.entries())
    report = kb.sync(crawl=CrawlOptions(delay=0.0, max_pages=20))
    assert any("stopped at 20 pages (the crawl limit)" in note for note in report.notes)
    assert report.removed == 0 and len(kb.entries()) == everything


def test_every_format_reads_through_kb_add_with_its_citation(make_kb, tmp_path):
    """PDF pages, a DOCX, a saved HTML page and a Zendesk export in a folder, and an Intercom export and
    Markdown inside a zip: each reaches the knowledge base through the one ingestion path."""
    import shutil
    import zipfile

    from documents import make_docx, make_pdf, markdown_sections

    from conftest import DATA

    folder = tmp_path / "handbook"
    folder.mkdir()
    sections = markdown_sections(DATA / "kb" / "returns-policy.md")
    make_pdf(folder / "returns.pdf", sections)
    make_docx(folder / "warranty.docx", markdown_sections(DATA / "kb" / "warranty-policy.md"))
    write(folder / "saved" / "gift-cards.html", "<html><head><title>Gift cards | Tidewell Help</title></head><body><nav><a href='/'>Home</a>"
          "</nav><main><h1>Gift cards</h1><p>Tidewell gift cards never expire and carry no fees.</p></main></body></html>")
    fixtures = Path(__file__).parent / "fixtures" / "helpdesk"
    shutil.copy(fixtures / "zendesk_articles.json", folder / "zendesk.json")
    with zipfile.ZipFile(folder / "more.zip", "w") as archive:
        archive.write(fixtures / "intercom_articles.json", "intercom.json")
        archive.writestr("notes/care.md", "# Care guide\n\nOil the teak table twice a year.\n")
    kb = make_kb()
    report = kb.add([folder])
    entries = [kb.entry(e.id) for e in kb.entries()]
    pages = [e for e in entries if e.url.startswith("returns.pdf#page=")]
    assert len(pages) >= 3 and all(e.title.startswith("returns.pdf, page ") for e in pages)
    assert any(e.id.startswith("zendesk-") for e in entries) and any(e.id.startswith("intercom-") for e in entries)
    assert {"warranty", "gift-cards", "care"} <= {e.id for e in entries}
    assert report.added == len(entries) and {e.source for e in entries} == {"handbook/"}
    assert kb.entry("gift-cards").answer == "Tidewell gift cards never expire and carry no fees."


def test_a_page_the_server_fails_to_send_is_not_taken_for_deleted(site, make_kb):
    kb = make_kb()
    kb.add([site.base], crawl=FAST)
    gone, failing = list(site.articles)[2:4]
    site.delete(gone)
    site.failing.add(failing)
    try:
        report = kb.sync(crawl=FAST)
    finally:
        site.restore()
    assert any(f"{failing}: HTTP 503" == note for note in report.notes)
    assert any("could not be read this time (server errors or timeouts); no page was removed" in note for note in report.notes)
    assert report.removed == 0 and len(kb.entries()) == len(site.articles)
