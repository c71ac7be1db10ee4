"""The version registry in the app's database, on SQLite and on PostgreSQL: cards, the serving pointer with the
history rollback walks back through, pointer changes from several processes at once, and the one-time import of
the files an older version kept (`serving.json`, each folder's `card.json`)."""

from __future__ import annotations

import json
import threading

import pytest

from chatbot.log import open_database
from chatbot.versions import LEGACY_POINTER, Card, Versions, VersionError


@pytest.fixture
def versions(database, tmp_path):
    db = open_database(database)
    yield Versions(tmp_path / "models", db)
    db.close()


def test_cards_and_the_pointer_round_trip_and_rollback_walks_back(versions):
    versions.save_card(Card("base", "lm", method="base", created="2026-12-01T00:00:00+00:00"))
    versions.save_card(Card("sft-1", "adapter", parent="base", base="base", settings={"lr": 1e-4}, created="2026-12-02T00:00:00+00:00"))
    versions.update_metrics("sft-1", {"gate": {"grounding": 0.91}})
    assert [c.version for c in versions.cards()] == ["base", "sft-1"]
    assert versions.card("sft-1").settings == {"lr": 1e-4} and versions.card("sft-1").metrics == {"gate": {"grounding": 0.91}}
    with pytest.raises(VersionError, match="no version 'missing'"):
        versions.card("missing")

    versions.set_serving("lm", "base")
    versions.set_serving("retriever", "emb-1")
    versions.set_serving("lm", "sft-1")
    versions.set_serving("lm", "sft-1")  # no change: no history
    assert versions.serving_version("lm") == "sft-1" and len(versions.serving()["history"]) == 3
    assert [r["serving"] for r in versions.listing()] == [False, True]
    assert versions.rollback_target("lm") == "base" and versions.rollback("lm") == "base"
    assert versions.serving_version("lm") == "base" and versions.serving_version("retriever") == "emb-1"
    assert versions.rollback("retriever") == ""  # before any promotion: the configured retriever
    with pytest.raises(VersionError, match="no lm served before this one"):
        versions.rollback("lm")


def test_pointer_changes_from_several_connections_at_once_each_keep_their_history(database, tmp_path):
    dbs = [open_database(database) for _ in range(4)]
    try:
        def promote(i: int) -> None:
            for n in range(5):
                Versions(tmp_path, dbs[i]).set_serving("lm", f"v{i}-{n}")

        threads = [threading.Thread(target=promote, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        serving = Versions(tmp_path, dbs[0]).serving()
        history = serving["history"]
        assert len(history) == 20  # every change recorded once
        # each entry holds the pointer just before its change: read in order they name every version once (two
        # changes that both read the same pointer, a race, would name one twice and lose another)
        chain = [h.get("lm", "") for h in history[1:]] + [serving["lm"]]
        assert sorted(chain) == sorted(f"v{i}-{n}" for i in range(4) for n in range(5))
    finally:
        for db in dbs:
            db.close()


def test_an_older_homes_files_are_imported_once(database, tmp_path):
    root = tmp_path / "models"
    for name, kind in (("base", "lm"), ("sft-1", "adapter")):
        (root / "versions" / name).mkdir(parents=True)
        (root / "versions" / name / "card.json").write_text(json.dumps({"version": name, "kind": kind, "created": name}))
    (root / "versions" / "sft-2.partial").mkdir()  # an unfinished run: never registered
    (root / "versions" / "sft-2.partial" / "card.json").write_text(json.dumps({"version": "sft-2", "kind": "adapter"}))
    pointer = {"lm": "sft-1", "history": [{"changed": "lm", "at": "2026-11-01"}, {"lm": "base", "changed": "lm", "at": "2026-11-02"}]}
    (root / LEGACY_POINTER).write_text(json.dumps(pointer))
    db = open_database(database)
    try:
        versions = Versions(root, db)
        assert versions.serving() == pointer and [c.version for c in versions.cards()] == ["base", "sft-1"]
        assert not (root / LEGACY_POINTER).exists() and (root / (LEGACY_POINTER + ".imported")).exists()
        (root / LEGACY_POINTER).write_text(json.dumps({"lm": "base", "history": []}))  # a stale copy put back: ignored
        assert Versions(root, db).serving() == pointer
        assert versions.rollback("lm") == "base"
    finally:
        db.close()


def test_a_broken_file_of_an_older_home_stops_with_its_name(database, tmp_path):
    root = tmp_path / "models"
    (root / "versions" / "base").mkdir(parents=True)
    (root / "versions" / "base" / "card.json").write_text("{not json")
    (root / LEGACY_POINTER).write_text(json.dumps({"lm": "base", "history": []}))
    db = open_database(database)
    try:
        with pytest.raises(VersionError, match=r"versions/base/card.json: unreadable .*; fix or remove it"):
            Versions(root, db)
        assert (root / LEGACY_POINTER).exists()  # nothing imported, nothing set aside
        assert not db.rows("SELECT * FROM model_versions") and not db.rows("SELECT * FROM serving")
    finally:
        db.close()
