"""When a person can answer: `serve.business_hours` in `serve.time_zone`, less `serve.holidays`.

Hours are local wall-clock ranges, one or more per day spec, several specs allowed:

    "Mon-Fri 09:00-17:30"
    ["Mon-Fri 09:00-12:30 13:30-17:30", "Sat 10:00-14:00"]

Days are Mon Tue Wed Thu Fri Sat Sun (full names and any case too); a range of days may wrap (Fri-Mon). A time range
ends after it starts, 24:00 being the end of the day. Empty hours mean always open. Everything here is a pure
function of its arguments (the caller passes the clock), so that a Friday evening, a holiday or a change of
daylight-saving time is a plain unit test.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .config import ConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
SEARCH_DAYS = 400  # how far ahead an opening is looked for (a year of holidays, and then some)
_SPEC = re.compile(r"(?P<days>[A-Za-z]+(?:\s*-\s*[A-Za-z]+)?)\s+(?P<times>\d.*)")
_RANGE = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_AWAY_TAIL = re.compile(r"[;,.]?\s*[Aa] person will reply here shortly\.\s*$")

# A day's opening ranges as minutes since midnight: (start, end), end <= 1440.
Ranges = tuple[tuple[int, int], ...]


@functools.lru_cache(maxsize=32)
def _parse(items: tuple[str, ...]) -> tuple[Ranges, ...]:
    week: list[list[tuple[int, int]]] = [[] for _ in DAYS]
    for item in items:
        for spec in filter(None, (s.strip() for s in re.split(r"[;,]", item))):
            match = _SPEC.fullmatch(spec)
            if not match:
                raise ConfigError(f"serve.business_hours {spec!r}: expected days and times, e.g. \"Mon-Fri 09:00-17:30\"")
            days = _days(match["days"], spec)
            ranges = _ranges(match["times"], spec)
            for day in days:
                week[day].extend(ranges)
    return tuple(tuple(sorted(day)) for day in week)


def parse_hours(hours: str | Iterable[str]) -> tuple[Ranges, ...]:
    """Each weekday's opening ranges (Monday first), in minutes since midnight; a bad spec is a ConfigError."""
    return _parse((hours,) if isinstance(hours, str) else tuple(hours))


def _days(text: str, spec: str) -> list[int]:
    ends = [_day(part.strip(), spec) for part in text.split("-")]
    first, last = ends[0], ends[-1]
    return [(first + i) % 7 for i in range((last - first) % 7 + 1)]


def _day(name: str, spec: str) -> int:
    key = name[:3].lower()
    if key not in DAYS or not (len(name) == 3 or DAY_NAMES[DAYS.index(key)].lower().startswith(name.lower())):
        raise ConfigError(f"serve.business_hours {spec!r}: {name!r} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)")
    return DAYS.index(key)


def _ranges(text: str, spec: str) -> list[tuple[int, int]]:
    parts = text.split()
    joined = " ".join(parts)
    found = [m for m in _RANGE.finditer(joined)]
    if not found or "".join(m[0].replace(" ", "") for m in found) != joined.replace(" ", ""):
        raise ConfigError(f"serve.business_hours {spec!r}: expected time ranges as HH:MM-HH:MM")
    out = []
    for m in found:
        h1, m1, h2, m2 = map(int, m.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if h1 > 23 or m1 > 59 or m2 > 59 or end > 1440 or end <= start:
            raise ConfigError(f"serve.business_hours {spec!r}: {m[0]!r} is not a range within one day "
                              "(it ends after it starts, at 24:00 at the latest)")
        out.append((start, end))
    return out


@functools.lru_cache(maxsize=32)
def zone(name: str) -> ZoneInfo | timezone:
    """The IANA time zone `name` ("" or "UTC": UTC); an unknown one is a ConfigError."""
    if not name or name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"serve.time_zone {name!r}: expected an IANA time zone such as Europe/London") from None


def parse_holidays(holidays: Iterable[str | date]) -> frozenset[date]:
    out = set()
    for day in holidays:
        if isinstance(day, date):
            out.add(day)
            continue
        try:
            out.add(date.fromisoformat(str(day).strip()))
        except ValueError:
            raise ConfigError(f"serve.holidays {day!r}: expected a date as YYYY-MM-DD") from None
    return frozenset(out)


def _periods(hours, tz, holidays, start: date, days: int):
    """The opening periods (UTC start, UTC end) of `days` local dates from `start`, in order."""
    week, where, off = parse_hours(hours), zone(tz) if isinstance(tz, str) else tz, parse_holidays(holidays)
    for n in range(days):
        day = start + timedelta(days=n)
        if day in off:
            continue
        for begin, end in week[day.weekday()]:
            yield _at(day, begin, where), _at(day, end, where)


def _at(day: date, minutes: int, where) -> datetime:
    """A local wall-clock time as UTC (24:00 is the next day's midnight; a time skipped by DST falls after the gap)."""
    if minutes == 1440:
        day, minutes = day + timedelta(days=1), 0
    return datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=where).astimezone(timezone.utc)


def is_open(now: datetime, hours: str | Iterable[str], tz: str | ZoneInfo = "UTC", holidays: Iterable[str | date] = ()) -> bool:
    """Whether a person is in at `now` (an aware datetime); empty hours: always."""
    return next_opening(now, hours, tz, holidays) is None


def next_opening(now: datetime, hours: str | Iterable[str], tz: str | ZoneInfo = "UTC",
                 holidays: Iterable[str | date] = ()) -> datetime | None:
    """When the team is next in, as an aware datetime in `tz`; None when it is in at `now` (or `hours` is empty:
    always open). `now` must be aware."""
    if now.tzinfo is None:
        raise ValueError("next_opening needs an aware datetime (with its time zone)")
    if not any(parse_hours(hours)):
        return None
    where = zone(tz) if isinstance(tz, str) else tz
    moment = now.astimezone(timezone.utc)
    local = moment.astimezone(where).date() - timedelta(days=1)  # a range of yesterday may still run (24:00)
    for begin, end in _periods(hours, where, holidays, local, SEARCH_DAYS):
        if begin <= moment < end:
            return None
        if begin > moment:
            return begin.astimezone(where)
    raise ValueError(f"serve.business_hours: no opening in the next {SEARCH_DAYS} days (every day a holiday?)")


def when(opening: datetime, now: datetime, tz_name: str) -> str:
    """An opening as a customer reads it: "today at 09:00", "tomorrow at 09:00", "Monday at 09:00" or
    "Monday 5 January at 09:00", then the time zone: "(Europe/London)"."""
    local_now = now.astimezone(opening.tzinfo).date()
    days = (opening.date() - local_now).days
    day = ("today" if days == 0 else "tomorrow" if days == 1 else DAY_NAMES[opening.weekday()] if days < 7
           else f"{DAY_NAMES[opening.weekday()]} {opening.day} {opening.strftime('%B')}")
    return f"{day} at {opening:%H:%M} ({tz_name or 'UTC'})"


def away_text(reply: str, back: str) -> str:
    """A hand-off reply outside business hours: "a person will reply shortly" becomes when the team is back (`back`,
    from `when`), with the offer to leave an email address for the answer."""
    return (_AWAY_TAIL.sub(".", reply).rstrip() + f" Our team is back {back} and will answer here. "
            "If you like, leave your email address below and we'll also send the answer there.")


@dataclass(frozen=True)
class Schedule:
    """The configured hours, checked once (a bad setting stops the start)."""

    hours: tuple[str, ...] = ()
    tz: str = "UTC"
    holidays: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, serve) -> Schedule:
        schedule = cls(tuple(serve.business_hours), serve.time_zone or "UTC", tuple(serve.holidays))
        parse_hours(schedule.hours), zone(schedule.tz), parse_holidays(schedule.holidays)
        return schedule

    def next_opening(self, now: datetime) -> datetime | None:
        return next_opening(now, self.hours, self.tz, self.holidays)

    def when(self, opening: datetime, now: datetime) -> str:
        return when(opening.astimezone(zone(self.tz)), now, self.tz)
