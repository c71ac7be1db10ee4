"""Model versions on disk and the pointer to the ones being served.

Every trained model is a folder `home/versions/<version>/` holding the weights in the standard Hugging Face
layout and a `card.json` (parent, training data hash, settings, metrics, time). `home/serving.json` names
the serving version of each kind with the history that rollback walks back through. Both are replaced
atomically (write to a temporary name, then rename), so a crash leaves the previous state.

Kinds: `lm` (a whole causal LM), `adapter` (a LoRA adapter over the lm version named in `base`), `reward`
(a reward model) and `retriever` (an embedder). The training package writes versions; this module only
reads them, resolves what to load and moves the pointer, which the running app re-reads on every turn.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .model import BUNDLED_NAME, Progress, is_model_folder, provision_bundled

KINDS = ("lm", "adapter", "reward", "retriever")
# The fine-tuned adapter committed with the project (`supportbot train sft` on data/ reproduces it).
DEMO_ADAPTER = Path(__file__).resolve().parents[1] / "data" / "models" / "tidewell-sft"


WRITER = "writer.pid"  # in an unfinished version folder: the process writing it


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
    """The versions folder and the serving pointer of one home."""

    def __init__(self, home: Path):
        self.home = home
        self.root = home / "versions"
        self.pointer = home / "serving.json"

    # --- cards ------------------------------------------------------------------------------------

    def folder(self, version: str) -> Path:
        """The version's folder; a name that is not a plain folder name (`..`, `a/b`) is refused, so that
        a version named by a caller never reaches outside the versions folder."""
        if not is_plain_name(version):
            raise VersionError(f"no version {version[:100]!r}: a version is a plain name (see `supportbot models list`)")
        return self.root / version

    def card(self, version: str) -> Card:
        path = self.folder(version) / "card.json"
        if not path.exists():
            raise VersionError(f"no version {version!r} (see `supportbot models list`)")
        return Card(**json.loads(path.read_text(encoding="utf-8")))

    def cards(self) -> list[Card]:
        """All complete versions, oldest first (a folder without its card is an unfinished run)."""
        if not self.root.exists():
            return []
        cards = [self.card(p.name) for p in self.root.iterdir() if (p / "card.json").exists() and not p.name.endswith(".partial")]
        return sorted(cards, key=lambda c: (c.created, c.version))

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

    def finish_partial(self, version: str) -> None:
        """Make the run's folder the version, at once (its card must be in)."""
        partial = self.folder(version + ".partial")
        (partial / WRITER).unlink(missing_ok=True)
        os.replace(partial, self.folder(version))

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
        write_json(self.folder(card.version) / "card.json", card.to_json())

    def update_metrics(self, version: str, metrics: dict) -> None:
        card = self.card(version)
        card.metrics.update(metrics)
        self.save_card(card)

    # --- the pointer ------------------------------------------------------------------------------

    def serving(self) -> dict:
        """{kind: version} for each kind with a serving version, plus "history": earlier pointers."""
        if not self.pointer.exists():
            return {"history": []}
        return json.loads(self.pointer.read_text(encoding="utf-8"))

    def serving_version(self, kind: str) -> str:
        """The serving version for generation ("lm" covers adapters too), or ""."""
        return self.serving().get(kind, "")

    def set_serving(self, role: str, version: str) -> None:
        """Point `role` ("lm", "reward" or "retriever") at `version`, keeping the old pointer for rollback."""
        state = self.serving()
        history = state.pop("history", [])
        if state.get(role) == version:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.pointer, {**state, role: version, "history": [*history, {**state, "changed": role, "at": now()}]})

    def rollback(self, role: str = "lm") -> str:
        """Serve the version of `role` that served before the last change of it; returns that version."""
        state = self.serving()
        history = state.pop("history", [])
        i, previous = self._previous(role, history)
        write_json(self.pointer, {**state, role: previous, "history": history[:i]})
        return previous

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
        if not (self.folder(name) / "card.json").exists():
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
        version = json.loads((DEMO_ADAPTER / "card.json").read_text(encoding="utf-8"))["version"]
        target = self.folder(version)
        if not (target / "card.json").exists():
            tmp = target.with_name(target.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(DEMO_ADAPTER, tmp)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        return version


def serving_weights(home: Path, model_path: str = "", progress: Progress | None = None) -> tuple[str, Path, Path | None]:
    """(version, model folder, adapter folder) of the serving language model of this home."""
    versions = Versions(home)
    versions.ensure_base(model_path, progress)
    version = versions.serving_version("lm")
    path, adapter = versions.weights(version)
    if not is_model_folder(path):
        raise VersionError(f"version {version!r}: model folder {path} is missing")
    return version, path, adapter
