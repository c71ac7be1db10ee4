"""Fixtures for the browser tests (Debian's chromium driven by Playwright): the whole app served on a free
loopback port, on the real embedder, the demo knowledge base and the tiny random LM; one browser per module.
Test modules import them (`from browser import app, browser`). Screenshots go under test-artifacts/."""

from __future__ import annotations

import shutil

import pytest
from conftest import REPO
from helpers import start_server

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_kb_into, tiny_lm_path):
    from chatbot import load_config, save_settings

    config = load_config(tmp_path_factory.mktemp("browser") / "home", env={})
    # In config.toml, so that the training and gate jobs the ops console starts use them too.
    save_settings(config, {"model.path": str(tiny_lm_path), "serve.poll_seconds": 1, "gate.questions": 4, "crawl.delay": 0})
    demo_kb_into(config.kb_dir())
    url, stop = start_server(config)
    yield url, config
    stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def pages_closed(browser):
    """The pages a test opens are closed after it (autouse where imported). An open Gradio page keeps polling the app
    (the agents' queue, the jobs table): the pages earlier tests left open took most of a core from the niced jobs a
    later test waits for (the ops training test: 106 s in its module against 63 s alone)."""
    before = set(browser.contexts)
    yield
    for context in browser.contexts:
        if context not in before:
            context.close()


def signed_in(browser, url: str, user: str, viewport: dict):
    """A new page signed in with the demo account `user` (password = name)."""
    page = browser.new_context(viewport=viewport).new_page()
    page.goto(url + "/staff/")
    page.get_by_role("tab", name="Staff sign-in").click()
    page.fill("#login-user textarea", user)
    page.fill("#login-password input", user)
    page.click("#login-button")
    page.get_by_text("Signed in as").wait_for(timeout=30_000)
    return page


