"""Main-content extraction from help-centre pages: the article in, the site's chrome out."""

from __future__ import annotations

import pytest
from helpcentre import write_site

from retrieval.html_loader import fragment_markdown, html_entry, html_text
from retrieval.loaders import LoadOptions
from retrieval.records import IngestError

# On every page below and in no article's text: a passage holding one of these kept chrome.
CHROME = ["We use cookies", "Accept all cookies", "Manage preferences", "Sign in", "Submit a request",
          "Search the help centre", "Related articles", "Recently viewed", "Was this article helpful?",
          "found this helpful", "Updated 3 months ago", "Still need help?", "Privacy policy", "Terms of service",
          "All rights reserved", "Follow us on", "Help Centre home", "Shop all tents", "Orders & Returns", "trackPageView"]


def modern_page(title: str, body: str) -> str:
    """header/nav/main/article/aside/footer, with the feedback widget inside <article>."""
    return f"""<!DOCTYPE html><html lang="en-GB"><head><meta charset="utf-8">
<title>{title} | Tidewell Help Centre</title>
<style>.article-body h2 {{ margin-top: 2em }}</style>
<script>function trackPageView(p) {{ window.dataLayer.push(p) }} trackPageView(location.pathname);</script>
</head><body>
<div class="cookie-banner" role="dialog"><p>We use cookies to keep you signed in. <a href="/privacy">Privacy policy</a></p>
<button>Accept all cookies</button> <button>Manage preferences</button></div>
<header class="header"><a class="logo" href="/hc">Tidewell Home &amp; Outdoor</a>
<nav class="user-nav"><ul><li><a href="/hc">Help Centre home</a></li><li><a href="/shop/tents">Shop all tents</a></li>
<li><a href="/hc/requests/new">Submit a request</a></li><li><a href="/login">Sign in</a></li></ul></nav>
<form role="search"><input type="search" placeholder="Search the help centre"></form></header>
<main><nav aria-label="Breadcrumbs"><ol class="breadcrumbs"><li><a href="/hc">Help Centre home</a></li>
<li><a href="/hc/sections/1">Orders &amp; Returns</a></li></ol></nav>
<article class="article"><header class="article-header"><h1>{title}</h1><div class="meta">Updated 3 months ago</div></header>
<div class="article-body">{body}</div>
<footer><div class="article-votes"><h2>Was this article helpful?</h2><button>Yes</button><button>No</button>
<small>7 out of 9 found this helpful</small></div><p>Still need help? <a href="/hc/requests/new">Contact us</a></p></footer>
</article>
<aside class="article-sidebar"><h2>Related articles</h2><ul><li><a href="/a/101">How do I track my parcel?</a></li>
<li><a href="/a/102">Caring for your cotton canvas tent</a></li></ul><h2>Recently viewed articles</h2>
<ul><li><a href="/a/104">Using a gift card online</a></li></ul></aside></main>
<footer class="footer"><ul><li><a href="/privacy">Privacy policy</a></li><li><a href="/terms">Terms of service</a></li></ul>
<p>Follow us on Instagram.</p><p>&copy; 2025 Tidewell Home &amp; Outdoor Ltd. All rights reserved.</p></footer>
<script src="/theme/script.js"></script></body></html>"""


def div_page(title: str, body: str) -> str:
    """An older theme of nothing but divs, the sidebar before the article."""
    return f"""<html><head><title>{title} – Tidewell Help</title></head><body>
<div class="notice">We use cookies to improve your visit. <a href="#">Accept all cookies</a> <a href="/cookies">Manage preferences</a></div>
<div class="site-header"><div class="menu"><a href="/hc">Help Centre home</a> | <a href="/shop/tents">Shop all tents</a> |
<a href="/login">Sign in</a></div><div class="searchbox"><input placeholder="Search the help centre"></div></div>
<div class="breadcrumb-trail"><a href="/hc">Help Centre home</a> &gt; <a href="/hc/s/2">Orders &amp; Returns</a></div>
<div class="page"><div class="sidebar"><div class="widget-title">Related articles</div>
<div><a href="/a/201">Returning a gift</a></div><div><a href="/a/202">Where is my refund?</a></div>
<div class="widget-title">Recently viewed</div><div><a href="/a/204">Assembling the hammock stand</a></div></div>
<div class="content"><h1 class="entry-title">{title}</h1><div class="entry-content">{body}</div>
<div class="helpful-widget">Was this article helpful? <a href="#">Yes</a> <a href="#">No</a> 7 out of 9 found this helpful</div>
<div class="contact">Still need help? <a href="/contact">Submit a request</a></div></div></div>
<div class="site-footer"><a href="/privacy">Privacy policy</a> · <a href="/terms">Terms of service</a><br>
Follow us on Instagram. &copy; 2025 Tidewell Home &amp; Outdoor Ltd. All rights reserved.</div>
<script>var _paq = []; function trackPageView() {{}} trackPageView();</script></body></html>"""


RETURNS_BODY = """
<p>You can return most items bought from Tidewell Home &amp; Outdoor within 30 days of delivery, as long as they are unused.</p>
<h2>Return windows by product</h2>
<table><thead><tr><th>Product</th><th>Return window</th><th>Refund method</th></tr></thead><tbody>
<tr><td>Garden furniture</td><td>30 days</td><td>Original payment</td></tr>
<tr><td>Tents and awnings</td><td>60 days</td><td>Original payment</td></tr>
<tr><td>Sale items</td><td>14 days</td><td>Store credit</td></tr></tbody></table>
<h2>How to start a return</h2>
<ol><li>Open your order confirmation email and choose Start a return.</li>
<li>Pick a reason for each item and print the prepaid label.</li>
<li>Drop the parcel at any Parcelpoint shop within seven days.</li></ol>
<h3>Returning large items</h3>
<p>For sofas, parasols and anything over 30 kg we book a two-person collection instead of a label.</p>"""
RETURNS = modern_page("Returns and refunds", RETURNS_BODY)

SHIPPING = div_page("Delivery and shipping", """
<p>Tidewell delivers to every address in mainland Britain and to Northern Ireland.</p>
<h2>Delivery options</h2>
<table><tr><th>Service</th><th>Arrives</th><th>Cost</th></tr>
<tr><td>Standard</td><td>3 to 5 working days</td><td>£3.95</td></tr>
<tr><td>Next day</td><td>Next working day if ordered by 8pm</td><td>£6.95</td></tr></table>
<h2>Where we cannot deliver</h2>
<ul><li>Parcel lockers, for anything larger than a shoebox.</li>
<li>BFPO addresses, for garden furniture and barbecues.</li></ul>
<h3>Missed deliveries</h3>
<p>If nobody is in, the courier leaves a card and tries again the next working day.</p>""")

# Shorter than trafilatura's default minimum (250 characters), under which its fallback flattens lists.
GIFT_CARDS = modern_page("Gift cards", """
<p>Tidewell gift cards never expire and can be spent online or in any of our stores.</p>
<ul><li>Cards hold between £10 and £500.</li><li>You can use up to three cards on one order.</li></ul>""")

PAGES = {"returns": RETURNS, "shipping": SHIPPING, "gift-cards": GIFT_CARDS}
SENTENCES = {
    "returns": ["within 30 days of delivery, as long as they are unused.", "Pick a reason for each item and print the prepaid label.",
                "we book a two-person collection instead of a label."],
    "shipping": ["Tidewell delivers to every address in mainland Britain", "BFPO addresses, for garden furniture and barbecues.",
                 "tries again the next working day."],
    "gift-cards": ["Tidewell gift cards never expire", "You can use up to three cards on one order."],
}


def entry(name: str):
    return html_entry(PAGES[name], f"https://help.tidewell.example/hc/{name}", name, LoadOptions(), category="Orders")


@pytest.mark.parametrize("name", PAGES)
def test_no_chrome_reaches_any_passage_and_the_article_stays_whole(name):
    found = entry(name)
    for passage in found.passages:
        for phrase in CHROME:
            assert phrase not in passage.text and phrase not in passage.title, (name, phrase, passage)
    for sentence in SENTENCES[name]:
        assert sentence in found.answer


def test_an_entry_is_a_document_with_the_pages_url_id_and_category():
    found = entry("returns")
    assert (found.id, found.kind, found.category) == ("returns", "document", "Orders")
    assert found.url == "https://help.tidewell.example/hc/returns"
    assert found.title == "Returns and refunds"
    assert found.answer.startswith("You can return most items")


@pytest.mark.parametrize(("page", "title"), [(RETURNS, "Returns and refunds"), (SHIPPING, "Delivery and shipping")])
def test_the_title_is_the_articles_without_the_site_suffix(page, title):
    assert html_text(page)[0] == title


def test_headings_give_passage_titles():
    titles = [p.title for p in entry("returns").passages]
    assert titles == ["Returns and refunds", "Returns and refunds > Return windows by product",
                      "Returns and refunds > How to start a return",
                      "Returns and refunds > How to start a return > Returning large items"]
    assert "Delivery and shipping > Where we cannot deliver > Missed deliveries" in [p.title for p in entry("shipping").passages]


def test_tables_keep_their_rows_and_lists_their_items():
    returns, shipping = entry("returns").answer.splitlines(), entry("shipping").answer.splitlines()
    assert "| Tents and awnings | 60 days | Original payment |" in returns
    assert "| Next day | Next working day if ordered by 8pm | £6.95 |" in shipping
    assert "2. Pick a reason for each item and print the prepaid label." in returns
    assert "- Parcel lockers, for anything larger than a shoebox." in shipping


def test_a_short_article_keeps_its_list():
    assert entry("gift-cards").answer.splitlines()[-2:] == ["- Cards hold between £10 and £500.",
                                                            "- You can use up to three cards on one order."]


@pytest.mark.parametrize("page", ["", "  \n", "<html><head><script>trackPageView()</script><style>p {}</style></head><body></body></html>",
                                  modern_page("Empty article", "")])
def test_a_page_without_article_text_is_refused(page):
    with pytest.raises(IngestError, match="^no article text found$"):
        html_entry(page, "", "page", LoadOptions())


def test_text_that_is_not_html_is_refused():
    with pytest.raises(IngestError, match="^malformed HTML"):
        html_entry("Returns are free within 30 days.", "", "page", LoadOptions())


def test_the_articles_own_h1_names_it_over_the_page_title():
    title, body = html_text(modern_page("Help", "<h1>Returning an item</h1>" + RETURNS_BODY))
    assert title == "Returning an item"
    assert body.startswith("You can return most items")


def test_a_fragment_keeps_its_headings_table_and_list():
    lines = fragment_markdown(RETURNS_BODY).splitlines()
    assert {"## Return windows by product", "### Returning large items", "| Sale items | 14 days | Store credit |",
            "3. Drop the parcel at any Parcelpoint shop within seven days."} <= set(lines)


def test_a_fragment_is_all_content_even_a_list_of_links():
    markdown = fragment_markdown('<p>New to Tidewell? Start here.</p><h2>Popular</h2><ul><li><a href="/a/1">Delivery costs</a></li>'
                                 '<li><a href="/a/2">Returning an item</a></li></ul>')
    assert markdown.splitlines() == ["New to Tidewell? Start here.", "", "## Popular", "", "- Delivery costs", "- Returning an item"]


def test_the_fixture_help_centre_comes_through_clean(tmp_path):
    site = write_site(tmp_path, limit=12)
    for url, title in site.articles.items():
        found = html_entry((tmp_path / url.split("/", 3)[3]).read_text(encoding="utf-8"), url, "page", LoadOptions())
        assert found.title == title and not found.answer.startswith("#")
        for passage in found.passages:
            assert not [phrase for phrase in site.chrome if phrase in passage.text or phrase in passage.title], url
        paths = [f"{p.title} > " for p in found.passages]
        for section in [line[3:] for line in site.bodies[url].splitlines() if line.startswith("## ")]:
            assert any(path.startswith(f"{title} > {section} > ") for path in paths), (url, section)
