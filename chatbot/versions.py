"""Model versions: their weights on disk, their cards and the serving pointer in the app's database.

Every trained model is a folder `<models root>/versions/<version>/` holding the weights in the standard Hugging
Face layout; its card (parent, training data hash, settings, metrics, time) is a row of the app's database (the
home's SQLite file, or PostgreSQL shared by replicas), as is the pointer naming the serving version of each role
with the history that rollback walks back through. A run writes its folder under a temporary name, renames it
whole and then registers the card, so a crash leaves the previous state; homes from before the registry moved
into the database are imported once (`serving.json` and each folder's `card.json`).

Kinds: `lm` (a whole causal LM), `adapter` (a LoRA adapter over the lm version named in `base`), `reward`
(a reward model) and `retriever` (an embedder). The training package writes versions; this module only
reads them, resolves what to load and moves the pointer, which the running app re-reads on every turn.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from retrieval.database import Database

from .log import open_database
from .model import BUNDLED_NAME, Progress, is_model_folder, provision_bundled

if TYPE_CHECKING:
    from .config import Config

KINDS = ("lm", "adapter", "reward", "retriever")
# The fine-tuned adapter committed with the project (`supportbot train sft` on data/ reproduces it).
DEMO_ADAPTER = Path(__file__).resolve().parents[1] / "data" / "models" / "tidewell-sft"


WRITER = "writer.pid"  # in an unfinished version folder: the process writing it
LEGACY_POINTER = "serving.json"  # where the pointer lived before the registry moved into the database
_LOCK = "supportbot serving"  # changes to the pointer take turns under this lock


class VersionError(ValueError):
    """An unknown version, a wrong kind, or nothing to roll back to; one line."""


@dataclass
class Card:
    version: str
    kind: str
    parent: str = ""  # the version it was trained from
    base: str = ""  # for adapters: the lm version the adapter applies to
    method: str = ""  # sft, kto, dpo, reward, grpo; "bundled" for what ships with the product
    data_hash: str = ""
    settings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    created: str = ""
    path: str = ""  # weights kept outside the version folder (the converted bundled model)

    def to_json(self) -> dict:
        return asdict(self)


def role_of(kind: str) -> str:
    """The serving pointer a version of this kind occupies: adapters and whole LMs share "lm"."""
    return "lm" if kind in ("lm", "adapter") else kind


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _writer_alive(partial: Path) -> bool:
    """Whether the process that started this unfinished version is still running (a folder younger than a
    minute without its pid file yet counts as alive)."""
    try:
        pid = int((partial / WRITER).read_text())
    except (OSError, ValueError):
        return partial.exists() and time.time() - partial.stat().st_mtime < 60
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def is_plain_name(name: str) -> bool:
    """A name that is one file or folder name on any system: not empty, not `.` or `..`, no `/` or `\\`,
    no control characters, at most 255 bytes."""
    return (name.strip(" .") != "" and not any(c in name for c in "/\\") and name.isprintable()
            and len(name.encode()) <= 255)


def write_json(path: Path, payload: dict | list) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


class Versions:
    """The versions folder of one models root and the registry of it in the app's database."""

    def __init__(self, root: Path, db: Database):
        self.home = root
        self.root = root / "versions"
        self.db = db
        if (root / LEGACY_POINTER).exists():
            self._import_files(root / LEGACY_POINTER)

    # --- cards ------------------------------------------------------------------------------------

    def folder(self, version: str) -> Path:
        """The version's folder; a name that is not a plain folder name (`..`, `a/b`) is refused, so that
        a version named by a caller never reaches outside the versions folder."""
        if not is_plain_name(version):
            raise VersionError(f"no version {version[:100]!r}: a version is a plain name (see `supportbot models list`)")
        return self.root / version

    def card(self, version: str) -> Card:
        self.folder(version)
        rows = self.db.rows("SELECT * FROM model_versions WHERE version = :v", v=version)
        if not rows:
            raise VersionError(f"no version {version!r} (see `supportbot models list`)")
        return _card(rows[0])

    def has(self, version: str) -> bool:
        return bool(self.db.rows("SELECT 1 FROM model_versions WHERE version = :v", v=version))

    def cards(self) -> list[Card]:
        """All registered versions, oldest first."""
        return [_card(row) for row in self.db.rows("SELECT * FROM model_versions ORDER BY created, version")]

    def start_partial(self, version: str) -> Path:
        """The folder a run writes `version` into before renaming it whole (`finish_partial`). Folders
        left by runs whose process is gone (killed, crashed) are removed first: they can hold gigabytes."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("*.partial"):
            if not _writer_alive(stale):
                shutil.rmtree(stale, ignore_errors=True)
        folder = self.folder(version + ".partial")
        folder.mkdir()
        (folder / WRITER).write_text(str(os.getpid()))
        return folder

    def finish_partial(self, card: Card) -> None:
        """Make the run's folder the version, at once, then register its card: a folder without a card is an
        unfinished run, never served."""
        partial = self.folder(card.version + ".partial")
        (partial / WRITER).unlink(missing_ok=True)
        os.replace(partial, self.folder(card.version))
        self.save_card(card)

    def resolve(self, version: str) -> str:
        """A version name, or "latest": the newest version."""
        if version != "latest":
            self.card(version)
            return version
        cards = self.cards()
        if not cards:
            raise VersionError("no versions yet: train one with `supportbot train sft`")
        return cards[-1].version

    def save_card(self, card: Card) -> None:
        self.db.upsert("model_versions", "version", **_row(card))

    def update_metrics(self, version: str, metrics: dict) -> None:
        with self.db.transaction(_LOCK):
            card = self.card(version)
            card.metrics.update(metrics)
            self.save_card(card)

    # --- the pointer ------------------------------------------------------------------------------

    def serving(self) -> dict:
        """{role: version} for each role with a serving version, plus "history": earlier pointers, oldest first,
        each with the role it "changed" and when ("at")."""
        with self.db.snapshot():
            state = {row["role"]: row["version"] for row in self.db.rows("SELECT role, version FROM serving")}
            return {**state, "history": [h for _, h in self._history()]}

    def serving_version(self, kind: str) -> str:
        """The serving version for generation ("lm" covers adapters too), or ""."""
        rows = self.db.tuples("SELECT version FROM serving WHERE role = :r", r=kind)
        return rows[0][0] if rows else ""

    def set_serving(self, role: str, version: str) -> None:
        """Point `role` ("lm", "reward" or "retriever") at `version`, keeping the old pointer for rollback."""
        with self.db.transaction(_LOCK):
            state = self.serving()
            state.pop("history")
            if state.get(role) == version:
                return
            self._record(role, state, now())
            self.db.upsert("serving", "role", role=role, version=version)

    def rollback(self, role: str = "lm") -> str:
        """Serve the version of `role` that served before the last change of it; returns that version."""
        with self.db.transaction(_LOCK):
            history = self._history()
            i, previous = self._previous(role, [h for _, h in history])
            self.db.execute("DELETE FROM serving_history WHERE id >= :id", id=history[i][0])
            self.db.upsert("serving", "role", role=role, version=previous)
        return previous

    def _record(self, changed: str, state: dict, at: str) -> None:
        """Keep the pointer as it was before `changed` changed, for rollback."""
        self.db.execute("INSERT INTO serving_history(changed, state, at) VALUES (:c, :s, :a)", c=changed, s=json.dumps(state), a=at)

    def _history(self) -> list[tuple[int, dict]]:
        rows = self.db.rows("SELECT id, changed, state, at FROM serving_history ORDER BY id")
        return [(r["id"], {**json.loads(r["state"]), "changed": r["changed"], "at": r["at"]}) for r in rows]

    def _import_files(self, pointer: Path) -> None:
        """Register the cards and the pointer an older version kept in files (once; several processes at once
        import once), then set the pointer file aside."""
        with self.db.transaction(_LOCK):
            for path in sorted(self.root.glob("*/card.json")):
                if not path.parent.name.endswith(".partial") and not self.has(path.parent.name):
                    self.save_card(Card(**_read_legacy(path)))
            if pointer.exists() and not self.db.rows("SELECT 1 FROM serving UNION SELECT 1 FROM serving_history"):
                state = _read_legacy(pointer)
                for h in state.pop("history", []):
                    changed, at = h.pop("changed", ""), h.pop("at", "")
                    self._record(changed, h, at)
                for role, version in state.items():
                    self.db.upsert("serving", "role", role=role, version=version)
        try:
            os.replace(pointer, pointer.with_name(LEGACY_POINTER + ".imported"))
        except FileNotFoundError:  # another process imported it first
            pass

    def rollback_target(self, role: str) -> str:
        """The version `rollback(role)` would serve ("" for the configured retriever)."""
        return self._previous(role, self.serving().get("history", []))[1]

    def _previous(self, role: str, history: list[dict]) -> tuple[int, str]:
        for i in range(len(history) - 1, -1, -1):
            if history[i].get("changed") == role:
                previous = history[i].get(role, "")
                if not previous and role != "retriever":  # a retriever before any promotion is the configured one
                    raise VersionError(f"nothing to roll back to: no {role} served before this one")
                return i, previous
        raise VersionError(f"nothing to roll back to: the {role} version has never changed")

    def listing(self) -> list[dict]:
        """The `supportbot models list --json` rows, oldest first."""
        serving = self.serving()
        return [{"version": c.version, "kind": c.kind, "parent": c.parent, "base": c.base, "method": c.method,
                 "serving": serving.get(role_of(c.kind)) == c.version, "metrics": c.metrics, "created": c.created}
                for c in self.cards()]

    def export(self, version: str, target: Path, name: str | None = None) -> Card:
        """Copy a version's weights and card (renamed to `name`) to `target`, leaving its TensorBoard logs."""
        version = self.resolve(version)
        card = self.card(version)
        card.version = name or version
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.folder(version), tmp, ignore=shutil.ignore_patterns("runs", "gate", "card.json"))
        write_json(tmp / "card.json", card.to_json())
        if (tmp / "adapter_config.json").exists():  # name the base version, not this machine's folder
            adapter = json.loads((tmp / "adapter_config.json").read_text(encoding="utf-8"))
            write_json(tmp / "adapter_config.json", {**adapter, "base_model_name_or_path": card.base})
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        return card

    # --- what to load -----------------------------------------------------------------------------

    def weights(self, version: str) -> tuple[Path, Path | None]:
        """(model folder, adapter folder or None) for an lm or adapter version."""
        card = self.card(version)
        if card.kind == "adapter":
            base, _ = self.weights(card.base)
            return base, self.folder(version)
        if card.kind == "lm":
            return (Path(card.path) if card.path else self.folder(version)), None
        raise VersionError(f"version {version!r} is a {card.kind}, not a language model")

    def root_of(self, version: str) -> str:
        """The lm version at the bottom of an adapter chain."""
        card = self.card(version)
        return self.root_of(card.base) if card.base else version

    def ensure_base(self, model_path: str = "", progress: Progress | None = None) -> str:
        """Register the home's base model on first use and return its version: `model.path` when set, else
        the bundled model, with the committed fine-tuned demo adapter over it, which then serves until ops
        promote something else. Pointing `model.path` at another model makes it serve."""
        path = Path(model_path).expanduser() if model_path else None
        name = path.name if path else BUNDLED_NAME
        if not self.has(name):
            path = path or provision_bundled(self.home / "models", progress)
            self.folder(name).mkdir(parents=True, exist_ok=True)
            self.save_card(Card(name, "lm", method="base", created=now(), path=str(path)))
        serving = self.serving_version("lm")
        if not serving or self.root_of(serving) != name:
            self.set_serving("lm", self._install_demo() if not model_path else name)
        return name

    def _install_demo(self) -> str:
        """Copy the committed demo adapter in as a version (once); its name, or the bundled base's if absent."""
        if not (DEMO_ADAPTER / "adapter_config.json").exists():
            return BUNDLED_NAME
        card = Card(**json.loads((DEMO_ADAPTER / "card.json").read_text(encoding="utf-8")))
        if not self.has(card.version):
            target = self.folder(card.version)
            tmp = target.with_name(target.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(DEMO_ADAPTER, tmp, ignore=shutil.ignore_patterns("card.json"))
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
            self.save_card(card)
        return card.version


def _read_legacy(path: Path) -> dict:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(payload, dict) and (path.name != "card.json" or set(payload) <= set(Card.__dataclass_fields__)):
            return payload
    except (OSError, ValueError) as err:
        raise VersionError(f"{path}: unreadable ({err}); fix or remove it") from None
    raise VersionError(f"{path}: not what an older version wrote there; fix or remove it")


def _row(card: Card) -> dict:
    return {**card.to_json(), "settings": json.dumps(card.settings), "metrics": json.dumps(card.metrics)}


def _card(row: dict) -> Card:
    return Card(**{**row, "settings": json.loads(row["settings"]), "metrics": json.loads(row["metrics"])})


@contextmanager
def open_versions(config: Config) -> Iterator[Versions]:
    """The versions of a configured home, on a connection of their own to its database (closed after)."""
    db = open_database(config.log_database)
    try:
        yield Versions(config.models_root, db)
    finally:
        db.close()


def serving_weights(versions: Versions, model_path: str = "", progress: Progress | None = None) -> tuple[str, Path, Path | None]:
    """(version, model folder, adapter folder) of the serving language model."""
    versions.ensure_base(model_path, progress)
    version = versions.serving_version("lm")
    path, adapter = versions.weights(version)
    if not is_model_folder(path):
        raise VersionError(f"version {version!r}: model folder {path} is missing")
    return version, path, adapter
