"""Daily jobs: with `learn.daily_at` or `serve.sync_daily_at` set ("HH:MM", the server's local time), the app
starts `supportbot learn` or `supportbot kb sync --all` as a background job once a day, as the ops console's
*Learn now* and *Sync all* do. With `serve.idle_close_minutes` set, idle customer conversations are closed every
minute (`start_idle_closing`)."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from chatbot import ConfigError
from retrieval.database import Database

from .service import SupportService

CHECK_SECONDS = 30.0
IDLE_CHECK_SECONDS = 60.0


def daily_time(value: str, setting: str = "learn.daily_at") -> tuple[int, int] | None:
    """(hour, minute) of a daily setting; None when it is empty (no daily run)."""
    if not value:
        return None
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
    if not match:
        raise ConfigError(f"{setting} {value!r}: expected a time of day as HH:MM, e.g. 02:30")
    return int(match[1]), int(match[2])


def due(now: datetime, at: tuple[int, int], last_run: datetime | None) -> bool:
    """Whether today's run time has passed and no run started since it."""
    today = now.replace(hour=at[0], minute=at[1], second=0, microsecond=0)
    return now >= today and (last_run is None or last_run < today)


def last_learning(home: Path) -> datetime | None:
    """When the latest `learn` run (daily or not) finished, in local time, from its state file."""
    state = home / "learn" / "state.json"
    if not state.exists():
        return None
    return _local(json.loads(state.read_text(encoding="utf-8")).get("finished", ""))


def last_sync(service: SupportService) -> datetime | None:
    """When a source was last synced (daily or not), in local time."""
    return max((t for t in (_local(s.synced_at) for s in service.bot.kb.sources()) if t), default=None)


def _local(stamp: str) -> datetime | None:
    return datetime.fromisoformat(stamp).astimezone().replace(tzinfo=None) if stamp else None


def start_daily_jobs(service: SupportService) -> list[threading.Thread]:
    """The daily learning run and the daily sync, each where its setting asks for it."""
    config = service.config
    db = service.bot.log.db
    threads = [_daily("learning", daily_time(config.learn.daily_at), lambda: last_learning(config.home),
                      lambda: service.start_learning(title="learn (daily)"), db),
               _daily("sync", daily_time(config.serve.sync_daily_at, "serve.sync_daily_at"), lambda: last_sync(service),
                      lambda: service.start_sync([], title="sync (daily)"), db)]
    return [t for t in threads if t is not None]


def claim(db: Database, name: str) -> bool:
    """Take the lease `name` for this process, once and for all: True for the first replica to ask, False for
    every later one (the lease is a row of the shared database)."""
    return db.execute("INSERT INTO leases(name, holder, taken_at) VALUES (:name, :holder, :at) ON CONFLICT(name) DO NOTHING",
                      name=name, holder=f"{socket.gethostname()}:{os.getpid()}", at=datetime.now().isoformat()) == 1


def _daily(name: str, at: tuple[int, int] | None, finished: Callable[[], datetime | None],
           start: Callable[[], object], db: Database) -> threading.Thread | None:
    """A daemon thread that starts the day's job when it is due, on the one replica that claims the day; None when
    there is no time for it. (A replica that claims the day and dies before starting leaves that day without.)"""
    if at is None:
        return None
    started: list[datetime] = []  # this process's own starts, so a job still going is not started twice

    def watch() -> None:
        while True:
            time.sleep(CHECK_SECONDS)
            previous = max([t for t in [finished(), *started[-1:]] if t is not None], default=None)
            lease = f"daily-{name}:{datetime.now().date().isoformat()}"
            if due(datetime.now(), at, previous) and claim(db, lease):
                started.append(datetime.now())
                try:
                    start()
                except ValueError:  # another job is running: give the day back and try again at the next check
                    started.pop()
                    db.execute("DELETE FROM leases WHERE name = :name", name=lease)

    thread = threading.Thread(target=watch, name=f"daily-{name}", daemon=True)
    thread.start()
    return thread


def start_idle_closing(service: SupportService, every: float = IDLE_CHECK_SECONDS,
                       stop: threading.Event | None = None) -> threading.Thread | None:
    """A daemon thread that closes the conversations idle for serve.idle_close_minutes (SupportService.close_idle) every
    `every` seconds until `stop` is set; None when the setting is 0 (never). A failed round (the database busy) is
    tried again at the next."""
    if service.config.serve.idle_close_minutes <= 0:
        return None
    stop = stop or threading.Event()

    def watch() -> None:
        while not stop.wait(every):
            try:
                service.close_idle()
            except Exception:  # noqa: BLE001 - the thread must outlive one bad round
                logging.getLogger("supportbot.daily").exception("closing idle conversations failed")

    thread = threading.Thread(target=watch, name="idle-close", daemon=True)
    thread.start()
    return thread
