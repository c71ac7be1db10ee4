"""Backup and restore of a whole home while the app runs.

SQLite files are copied with SQLite's online backup API (a consistent snapshot even while the app
writes); everything else is copied as files. The order makes the copy consistent: the databases, which hold
the version registry and the serving pointer, are copied before the versions folder (a version's files exist
before its card is registered, and never change once written), and each knowledge base's FAISS file is the one its copied store names (a missing one is
rebuilt from the store's cached vectors on first use). A backup appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from .versions import LEGACY_POINTER, write_json

Progress = Callable[[str, int, int], None]
MANIFEST = "supportbot-backup.json"


class BackupError(ValueError):
    """A backup or restore refused (target not empty, not a backup); one line."""


def backup(home: Path, target: Path, progress: Progress | None = None) -> dict:
    """Copy `home` to the new folder `target`; returns counts for the report."""
    progress = progress or (lambda *a: None)
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target}: not empty; back up into a new folder")
    if not home.exists():
        raise BackupError(f"{home}: no such home")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    files = [p for p in ("config.toml", LEGACY_POINTER) if (home / p).exists()]  # an older home's pointer: imported on restore
    for name in files:
        shutil.copy2(home / name, partial / name)
    databases = sorted(home.rglob("*.sqlite"))
    for i, path in enumerate(databases):
        copy = partial / path.relative_to(home)
        copy.parent.mkdir(parents=True, exist_ok=True)
        _copy_database(path, copy)
        _copy_index(path.parent, copy)
        progress("backup", i + 1, len(databases))
    # After the databases: every version their registry names (the serving one too) is in the folders copied.
    for folder in ("versions", "models"):
        if (home / folder).exists():
            shutil.copytree(home / folder, partial / folder, ignore=shutil.ignore_patterns("*.partial", "*.tmp"))
    manifest = {"databases": [str(p.relative_to(home)) for p in databases], "files": files}
    write_json(partial / MANIFEST, manifest)
    if target.exists():
        target.rmdir()
    os.replace(partial, target)
    return manifest


def restore(source: Path, home: Path, progress: Progress | None = None) -> dict:
    """Copy a backup into an empty (or new) home."""
    if not (source / MANIFEST).exists():
        raise BackupError(f"{source}: not a supportbot backup (no {MANIFEST})")
    if home.exists() and any(home.iterdir()):
        raise BackupError(f"{home}: not empty; restore into a new home")
    partial = home.with_name(home.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns(MANIFEST))
    manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    for i, name in enumerate(manifest["databases"]):
        with closing(sqlite3.connect(partial / name)) as db:
            if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise BackupError(f"{source / name}: damaged database")
        if progress:
            progress("restore", i + 1, len(manifest["databases"]))
    if home.exists():
        home.rmdir()
    os.replace(partial, home)
    return manifest


def _copy_database(path: Path, copy: Path) -> None:
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _copy_index(folder: Path, copy: Path) -> None:
    """The FAISS file the copied store names, if the store has one (knowledge bases do)."""
    with closing(sqlite3.connect(copy)) as db:
        has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
        row = db.execute("SELECT value FROM meta WHERE key = 'index_token'").fetchone() if has_meta else None
    if row and (folder / f"dense-{row[0]}.faiss").exists():
        try:
            shutil.copy2(folder / f"dense-{row[0]}.faiss", copy.parent / f"dense-{row[0]}.faiss")
        except FileNotFoundError:  # replaced by a newer ingest meanwhile: rebuilt from the vectors on first use
            pass
