"""`supportbot backup` / `restore`: a consistent copy taken while the app writes, restored into a fresh home
that serves the same knowledge base, conversations and model version."""

from __future__ import annotations

import threading

import pytest
from helpers import write

from chatbot import SupportBot, load_config
from chatbot.backup import BackupError, backup, restore
from retrieval import KnowledgeBase
from ui.cli import main

FAQ = """id,question,answer,title
gift,Do gift cards expire?,Gift cards never expire.,Gift cards
ship,How long does shipping take?,Orders arrive in 3-5 business days.,Shipping
"""


def overrides(tiny_embedder_path, tiny_lm_path) -> list[str]:
    return [f"retrieval.embedder={tiny_embedder_path}", f"model.path={tiny_lm_path}", "model.max_new_tokens=4",
            "answer.handoff_confidence=0.0", "answer.mode=generate", "answer.grounding_min=0.0"]


@pytest.fixture
def home(tmp_path, tiny_embedder_path, tiny_lm_path):
    config = load_config(tmp_path / "home", overrides(tiny_embedder_path, tiny_lm_path), env={})
    kb = KnowledgeBase(config.kb_dir(), config.retrieval)
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    kb.close()
    return config


def test_backup_while_writing_restores_into_a_fresh_home_that_serves(home, tmp_path, tiny_embedder_path, tiny_lm_path, registry):
    bot = SupportBot(home)
    first = bot.ask("Do gift cards expire?")
    stop = threading.Event()

    def keep_writing():
        while not stop.is_set():
            bot.log.add_message(first.conversation_id, "customer", "still there?")

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        manifest = backup(home.home, tmp_path / "backup")
    finally:
        stop.set()
        writer.join()
    assert "conversations.sqlite" in manifest["databases"] and "kb/default/kb.sqlite" in manifest["databases"]

    restored = load_config(tmp_path / "restored", overrides(tiny_embedder_path, tiny_lm_path), env={})
    restore(tmp_path / "backup", restored.home)
    again = SupportBot(restored)
    assert [m.text for m in again.log.history(first.conversation_id)][:2] == ["Do gift cards expire?", first.text]
    assert again.kb.stats()["entries"] == 2 and again.kb.search("gift card expiry", k=1)[0].entry_id == "gift"
    assert registry(restored.home).serving_version("lm") == tiny_lm_path.name
    reply = again.ask("How long does shipping take?")
    assert reply.message_id and reply.model == tiny_lm_path.name
    bot.log.close()
    again.log.close()


def test_restore_refuses_a_non_empty_home_and_a_folder_that_is_not_a_backup(home, tmp_path):
    backup(home.home, tmp_path / "backup")
    with pytest.raises(BackupError, match="not empty"):
        restore(tmp_path / "backup", home.home)
    with pytest.raises(BackupError, match="not a supportbot backup"):
        restore(write(tmp_path / "junk" / "file.txt", "x").parent, tmp_path / "new")
    with pytest.raises(BackupError, match="not empty"):
        backup(home.home, tmp_path / "backup")


def test_cli_backup_and_restore(home, tmp_path, capsys):
    assert main(["backup", str(tmp_path / "b"), "--home", str(home.home), "--json"]) == 0
    assert main(["restore", str(tmp_path / "b"), "--home", str(tmp_path / "fresh"), "-q"]) == 0
    assert (tmp_path / "fresh" / "kb" / "default" / "kb.sqlite").exists()
    capsys.readouterr()
    assert main(["restore", str(tmp_path / "b"), "--home", str(tmp_path / "fresh")]) == 1
    assert "not empty" in capsys.readouterr().err
