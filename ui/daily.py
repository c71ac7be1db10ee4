"""The daily learning run: with `learn.daily_at` set ("HH:MM", the server's local time), the app starts
`supportbot learn` as a background job once a day, like *Learn now* in the ops console."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime
from pathlib import Path

from chatbot import ConfigError

from .service import SupportService

CHECK_SECONDS = 30.0


def daily_time(value: str) -> tuple[int, int] | None:
    """(hour, minute) of `learn.daily_at`; None when it is empty (no daily run)."""
    if not value:
        return None
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
    if not match:
        raise ConfigError(f"learn.daily_at {value!r}: expected a time of day as HH:MM, e.g. 02:30")
    return int(match[1]), int(match[2])


def due(now: datetime, at: tuple[int, int], last_run: datetime | None) -> bool:
    """Whether today's run time has passed and no run started since it."""
    today = now.replace(hour=at[0], minute=at[1], second=0, microsecond=0)
    return now >= today and (last_run is None or last_run < today)


def last_run(home: Path) -> datetime | None:
    """When the latest `learn` run (daily or not) finished, in local time, from its state file."""
    state = home / "learn" / "state.json"
    if not state.exists():
        return None
    stamp = json.loads(state.read_text(encoding="utf-8")).get("finished", "")
    return datetime.fromisoformat(stamp).astimezone().replace(tzinfo=None) if stamp else None


def start_daily_learning(service: SupportService) -> threading.Thread | None:
    """A daemon thread that starts the day's run when it is due; None without `learn.daily_at`."""
    at = daily_time(service.config.learn.daily_at)
    if at is None:
        return None
    started: list[datetime] = []  # this process's own starts, so a run still going is not started twice

    def watch() -> None:
        while True:
            time.sleep(CHECK_SECONDS)
            previous = max([t for t in [last_run(service.config.home), *started[-1:]] if t is not None], default=None)
            if due(datetime.now(), at, previous):
                started.append(datetime.now())
                service.start_learning(title="learn (daily)")

    thread = threading.Thread(target=watch, name="daily-learning", daemon=True)
    thread.start()
    return thread
