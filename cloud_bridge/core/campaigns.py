"""Campaign management (issue 11): a campaign's definition, its checks and its status, without I/O.

A marketer creates, changes, pauses, resumes and archives campaigns (`cloud-bridge campaign ...`
or the HTTP API); the loyalty records store what these functions accept, and every change moves
the `campaigns_version` of the stores whose sync it changes, so their gateways get a newly signed
campaign sync. Only an active campaign is in a sync. Archiving is final: an archived campaign is
kept (its offers refer to it) but never resumes or changes again.

A schedule is written in LOCAL dates and times: each store reads it in its own time zone
(`wire_schedule`), so "09:00-12:00" is nine to noon at every store, across DST changes. A daily
budget is the whole campaign's, split between the gateways of every store it targets
(`split_budget`), so that no gateway can overspend the chain's budget however it is cut off.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, replace
from dataclasses import fields as dataclass_fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud_bridge.core.clones import GeoPoint
from cloud_bridge.errors import BridgeError
from edge.core import wire

CampaignStatus = Literal["active", "paused", "archived"]
STATUSES: tuple[CampaignStatus, ...] = ("active", "paused", "archived")
CampaignAction = Literal["pause", "resume", "archive"]
#: What a revision of a campaign did (its history), and through what it came.
ChangeKind = Literal["create", "update", "pause", "resume", "archive", "codes"]
CHANGE_KINDS: tuple[ChangeKind, ...] = ("create", "update", "pause", "resume", "archive", "codes")
ChangeSource = Literal["cli", "api"]
CHANGE_SOURCES: tuple[ChangeSource, ...] = ("cli", "api")

#: wire.py's Title and Text bounds: a longer title or body would make every gateway refuse the sync.
MAX_TITLE_CHARS = 500
MAX_BODY_CHARS = 4000
MAX_TIERS = 64
MAX_SECONDS = 1e11  # wire.Seconds
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1  # wire.Priority
MAX_URL_CHARS = 2000  # wire.Url
MAX_COUNT = 1_000_000_000  # wire.OfferCount
MAX_STORE_TAGS = 64
MAX_HOUR_WINDOWS = 24  # wire.Schedule.hours
#: The latest UTC offset of any zone (UTC-12): a local time is past everywhere once it is past there.
_LATEST_OFFSET = timedelta(hours=12)
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # wire.RedemptionCode
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # RFC 3986 section 3.1
# [0-9], not \d: \d takes any script's digits ("٠٩:٠٠"), which int() reads but nobody else does.
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_DATETIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}$")
_HHMM = re.compile(r"^[0-9]{2}:[0-9]{2}$")
_FIRST_YEAR, _LAST_YEAR = 1971, 4000  # inside wire.UnixTime in every time zone
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class InvalidCampaign(BridgeError):
    """A campaign definition or change the bridge refuses; `field` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class CampaignSchedule:
    """When a campaign runs, in each store's LOCAL time: from `start` to `end` (end exclusive;
    "YYYY-MM-DD" is that day's midnight, or "YYYY-MM-DDTHH:MM"; None: no bound), on `days` (ISO
    weekdays, Monday 1; empty: every day), within `hours` ((start, end) "HH:MM" windows, end
    exclusive, "24:00" for midnight; empty: all day)."""

    start: str | None = None
    end: str | None = None
    days: tuple[int, ...] = ()
    hours: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "days": list(self.days),
            "hours": [list(h) for h in self.hours],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> CampaignSchedule:
        """As stored (`to_json`); InvalidCampaign naming the field if it is not that shape.
        Types only: `check_schedule` checks the values."""
        unknown = sorted(set(value) - {"start", "end", "days", "hours"})
        if unknown:
            raise InvalidCampaign(f"schedule.{unknown[0]}", "is not a schedule field")
        start, end = value.get("start"), value.get("end")
        for name, bound in (("start", start), ("end", end)):
            if bound is not None and not isinstance(bound, str):
                raise InvalidCampaign(f"schedule.{name}", "must be a date string or null")
        days = value.get("days", [])
        if not isinstance(days, list) or not all(_is_int(d) for d in days):
            raise InvalidCampaign("schedule.days", "must be a list of ISO weekdays (1..7)")
        hours = value.get("hours", [])
        if not isinstance(hours, list):
            raise InvalidCampaign("schedule.hours", 'must be a list of ["HH:MM", "HH:MM"]')
        windows = []
        for i, window in enumerate(hours):
            if (
                not isinstance(window, list)
                or len(window) != 2
                or not all(isinstance(t, str) for t in window)
            ):
                raise InvalidCampaign(f"schedule.hours[{i}]", 'must be ["HH:MM", "HH:MM"]')
            windows.append((window[0], window[1]))
        return cls(start, end, tuple(days), tuple(windows))


@dataclass(frozen=True, slots=True)
class CampaignDefinition:
    """What a marketer says about a campaign. `stores` and `store_tags` both empty: every store
    of the chain; otherwise the stores named and every store with one of the tags."""

    id: str
    title: str
    body: str
    tiers: tuple[str, ...]
    cooldown_s: float
    priority: int
    validity_s: float
    promotion_type: str | None = None
    interests: tuple[str, ...] = ()
    stores: tuple[str, ...] = ()
    # Issue 11. Content: an image (https), where the app opens, one code for every offer (a pool
    # of codes, one per offer, is rows the records keep: `add_campaign_codes`).
    image_url: str | None = None
    deep_link: str | None = None
    code: str | None = None
    store_tags: tuple[str, ...] = ()
    # Audience: the members in ANY of these segments (empty: all); visits in the last 365 days,
    # bounds inclusive (None: no bound).
    segments: tuple[str, ...] = ()
    min_visits: int | None = None
    max_visits: int | None = None
    schedule: CampaignSchedule | None = None
    # Caps: offers of it to one member in a local day, in 7 days; offers of it in a local day at
    # all its stores together; the share of members held out as the control group (0..100).
    per_member_day: int | None = None
    per_member_week: int | None = None
    daily_budget: int | None = None
    holdout_pct: float = 0.0


@dataclass(frozen=True, slots=True)
class Campaign:
    """A stored campaign: its definition, its status, when it last changed and when it was
    created (None: never recorded, a campaign from before issue 11), and its revision (1 when
    created, one more at each change: what an HTTP If-Match names)."""

    definition: CampaignDefinition
    status: CampaignStatus
    updated_at: float | None
    created_at: float | None = None
    revision: int = 1

    def to_json(self) -> dict[str, Any]:
        d = self.definition
        return {
            "id": d.id,
            "status": self.status,
            "title": d.title,
            "body": d.body,
            "tiers": list(d.tiers),
            "promotion_type": d.promotion_type,
            "interests": list(d.interests),
            "cooldown_s": d.cooldown_s,
            "priority": d.priority,
            "validity_s": d.validity_s,
            "stores": list(d.stores),
            "store_tags": list(d.store_tags),
            "image_url": d.image_url,
            "deep_link": d.deep_link,
            "code": d.code,
            "segments": list(d.segments),
            "min_visits": d.min_visits,
            "max_visits": d.max_visits,
            "schedule": None if d.schedule is None else d.schedule.to_json(),
            "per_member_day": d.per_member_day,
            "per_member_week": d.per_member_week,
            "daily_budget": d.daily_budget,
            "holdout_pct": d.holdout_pct,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "revision": self.revision,
        }


#: The fields a change can clear (back to none / no limit / 0 %).
CLEARABLE: tuple[str, ...] = (
    "promotion_type",
    "image_url",
    "deep_link",
    "code",
    "min_visits",
    "max_visits",
    "schedule",
    "per_member_day",
    "per_member_week",
    "daily_budget",
    "holdout_pct",
)


@dataclass(frozen=True, slots=True)
class CampaignChange:
    """An update: each field given replaces the stored one; None keeps it; the fields named in
    `clear` go back to none (no limit, 0 % for the holdout). For the text fields, "" also removes
    the value; for `interests`, `stores`, `store_tags` and `segments`, an empty tuple means any
    interest / no store named / no tag / every member."""

    title: str | None = None
    body: str | None = None
    tiers: tuple[str, ...] | None = None
    cooldown_s: float | None = None
    priority: int | None = None
    validity_s: float | None = None
    promotion_type: str | None = None
    interests: tuple[str, ...] | None = None
    stores: tuple[str, ...] | None = None
    image_url: str | None = None
    deep_link: str | None = None
    code: str | None = None
    store_tags: tuple[str, ...] | None = None
    segments: tuple[str, ...] | None = None
    min_visits: int | None = None
    max_visits: int | None = None
    schedule: CampaignSchedule | None = None
    per_member_day: int | None = None
    per_member_week: int | None = None
    daily_budget: int | None = None
    holdout_pct: float | None = None
    clear: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.clear and all(
            getattr(self, f) is None for f in self.__slots__ if f != "clear"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(value: str, field: str) -> None:
    try:
        wire.check_id(value, field)
    except wire.WireError as exc:
        raise InvalidCampaign(field, exc.reason) from None


def _check_ids(values: tuple[str, ...], field: str, most: int) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        _check_id(value, f"{field}[{i}]")
        if value in seen:
            raise InvalidCampaign(f"{field}[{i}]", f"{value!r} is named twice")
        seen.add(value)
    if len(values) > most:
        raise InvalidCampaign(field, f"names {len(values)}; at most {most}")


def _check_utf8(value: str, field: str) -> None:
    """JSON's \\ud800 escapes and argv's undecodable bytes give lone surrogates: no store, sync
    or app can encode them, so they are refused here, not found by SQLite's encoder."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidCampaign(
            field, f"has a lone surrogate at character {exc.start}; send valid UTF-8 text"
        ) from None


def _check_text(value: str, field: str, most: int) -> None:
    _check_utf8(value, field)
    if not value.strip():
        raise InvalidCampaign(field, "is empty")
    if len(value) > most:
        raise InvalidCampaign(field, f"is {len(value)} characters long; at most {most}")
    for i, c in enumerate(value):
        # A control character (ESC, NUL, ...) is no text: shown raw by `campaign show` or the
        # report, ESC sequences rewrite the IT person's terminal. Line breaks and tabs are text.
        if c not in "\n\r\t" and unicodedata.category(c) == "Cc":
            raise InvalidCampaign(
                field, f"has control character U+{ord(c):04X} at character {i}; remove it"
            )


def _check_seconds(value: float, field: str, *, zero_ok: bool) -> None:
    low = "0 or more" if zero_ok else "more than 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise InvalidCampaign(field, f"must be a number of seconds, {low}; got {value}")
    if value > MAX_SECONDS:
        raise InvalidCampaign(field, f"must be at most {MAX_SECONDS:.0f} s; got {value}")


def _check_count(value: int | None, field: str, most: int = MAX_COUNT) -> None:
    if value is None:
        return
    if not _is_int(value):
        raise InvalidCampaign(field, f"must be a whole number; got {value!r}")
    if not 0 <= value <= most:
        raise InvalidCampaign(field, f"must be 0..{most}; got {value}")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url_text(value: str, field: str) -> None:
    if not value or len(value) > MAX_URL_CHARS:
        raise InvalidCampaign(field, f"must be 1..{MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidCampaign(field, "has a space or control character; percent-encode it")
    _check_utf8(value, field)


def check_image_url(value: str, field: str = "image_url") -> str:
    """`value` if it is an https URL (http only on a loopback host: a test or demo server)."""
    _check_url_text(value, field)
    try:
        parts = urllib.parse.urlsplit(value)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise InvalidCampaign(field, f"is not a URL ({exc})") from None
    if not host:
        raise InvalidCampaign(field, "names no host; give https://host/path")
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host)):
        return value
    raise InvalidCampaign(
        field,
        f"must be an https URL (http only on a loopback host); got scheme {parts.scheme!r}",
    )


def check_deep_link(value: str, field: str = "deep_link") -> str:
    """`value` if it is a URI with a scheme (`myapp://offers/1`, `https://shop.example/x`)."""
    _check_url_text(value, field)
    if not _SCHEME.match(value) or value.endswith(":"):
        raise InvalidCampaign(
            field, "must be a URI with a scheme, e.g. myapp://offers/spring or https://..."
        )
    return value


def check_code(value: str, field: str = "code") -> str:
    """`value` if it is a redemption code (wire.RedemptionCode: letters, digits, '-', '_')."""
    if not isinstance(value, str) or not _CODE.match(value):
        raise InvalidCampaign(
            field,
            f"{str(value)[:70]!r} is not a redemption code: 1..64 letters, digits, '-' or '_', "
            "starting with a letter or digit",
        )
    return value


def _local_bound(value: str, field: str) -> datetime:
    """ "YYYY-MM-DD" (its midnight) or "YYYY-MM-DDTHH:MM" as a naive local datetime."""
    found = None
    try:
        if _DATE.match(value):
            found = datetime.combine(date.fromisoformat(value), time())
        elif _DATETIME.match(value):
            found = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidCampaign(field, f"{value!r} is not a date: {exc}") from None
    if found is None:
        raise InvalidCampaign(field, f"{value[:40]!r} must be YYYY-MM-DD or YYYY-MM-DDTHH:MM")
    if not _FIRST_YEAR <= found.year <= _LAST_YEAR:
        raise InvalidCampaign(field, f"{value!r}: the year must be {_FIRST_YEAR}..{_LAST_YEAR}")
    return found


def day_minute(value: str, field: str) -> int:
    """ "HH:MM" as minutes of the day, 0 .. 1440 ("24:00" is the end of the day)."""
    if not isinstance(value, str) or not _HHMM.match(value):
        raise InvalidCampaign(field, f"{str(value)[:20]!r} must be HH:MM (00:00 .. 24:00)")
    hh, mm = int(value[:2]), int(value[3:])
    if mm > 59 or hh > 24 or (hh == 24 and mm):
        raise InvalidCampaign(field, f"{value!r} is not a time of day (00:00 .. 24:00)")
    return hh * 60 + mm


def check_schedule(
    schedule: CampaignSchedule, now_s: float | None = None, field: str = "schedule"
) -> CampaignSchedule:
    """`schedule` if it can run: bounds as dates, end after start (and, given `now_s`, not
    already past in every time zone), days 1..7 once each, hour windows HH:MM with start < end
    that do not overlap. InvalidCampaign naming the field (`schedule.hours[1]`) otherwise."""
    start = None if schedule.start is None else _local_bound(schedule.start, f"{field}.start")
    end = None if schedule.end is None else _local_bound(schedule.end, f"{field}.end")
    if start is not None and end is not None and end <= start:
        raise InvalidCampaign(
            f"{field}.end", f"{schedule.end} is not after the start {schedule.start}"
        )
    if end is not None and now_s is not None:
        latest = end.replace(tzinfo=UTC) + _LATEST_OFFSET  # where it ends last (UTC-12)
        if latest.timestamp() <= now_s:
            raise InvalidCampaign(f"{field}.end", f"{schedule.end} is already past")
    seen: set[int] = set()
    for i, day in enumerate(schedule.days):
        if not _is_int(day) or not 1 <= day <= 7:
            raise InvalidCampaign(
                f"{field}.days[{i}]", f"{day!r} is not an ISO weekday (1 Monday .. 7 Sunday)"
            )
        if day in seen:
            raise InvalidCampaign(f"{field}.days[{i}]", f"{_WEEKDAYS[day - 1]} is named twice")
        seen.add(day)
    if len(schedule.hours) > MAX_HOUR_WINDOWS:
        raise InvalidCampaign(f"{field}.hours", f"at most {MAX_HOUR_WINDOWS} windows")
    windows: list[tuple[int, int, str]] = []
    for i, (begin, finish) in enumerate(schedule.hours):
        where = f"{field}.hours[{i}]"
        a, b = day_minute(begin, where), day_minute(finish, where)
        if a >= b:
            raise InvalidCampaign(where, f"{begin}-{finish} ends before it starts")
        for c, d, text in windows:
            if a < d and c < b:
                raise InvalidCampaign(where, f"overlaps {text}")
        windows.append((a, b, f"{begin}-{finish}"))
    if start is not None and end is not None:
        spans = [(a, b) for a, b, _ in windows]
        if not _opens_between(start, end, schedule.days, []):
            names = ", ".join(_WEEKDAYS[d - 1] for d in schedule.days)
            raise InvalidCampaign(
                f"{field}.days",
                f"never runs: no {names} from {schedule.start} to {schedule.end}",
            )
        if not _opens_between(start, end, schedule.days, spans):
            raise InvalidCampaign(
                f"{field}.hours",
                f"never runs: no hour window is open from {schedule.start} to {schedule.end}",
            )
    return schedule


def _opens_between(
    start: datetime, end: datetime, days: Sequence[int], spans: Sequence[tuple[int, int]]
) -> bool:
    """Whether a listed day (`days`, empty: any) has a window of `spans` (minutes of the day;
    empty: all day) open for a minute in [start, end), local times."""
    day, last = start.date(), (end - timedelta(minutes=1)).date()
    for _ in range(8):  # past 8 days the range holds every weekday whole
        if day > last:
            return False
        if not days or day.isoweekday() in days:
            midnight = datetime.combine(day, time())
            for a, b in spans or [(0, 1440)]:
                opens, closes = midnight + timedelta(minutes=a), midnight + timedelta(minutes=b)
                if opens < end and start < closes:
                    return True
        day += timedelta(days=1)
    return True


def parse_days(value: str, field: str = "schedule.days") -> tuple[int, ...]:
    """ "mon,tue" or "1,2" (mixed too) as ISO weekdays, in the order given."""
    days = []
    for i, part in enumerate(p.strip().lower() for p in value.split(",") if p.strip()):
        if part in _WEEKDAYS:
            days.append(_WEEKDAYS.index(part) + 1)
        elif part.isdigit() and len(part) == 1:
            days.append(int(part))
        else:
            raise InvalidCampaign(
                f"{field}[{i}]", f"{part[:20]!r} is not a weekday (mon..sun or 1..7)"
            )
    return tuple(days)


def parse_hours(value: str, field: str = "schedule.hours") -> tuple[tuple[str, str], ...]:
    """ "09:00-12:00,17:00-21:00" as (start, end) windows (checked by `check_schedule`)."""
    windows = []
    for i, part in enumerate(p.strip() for p in value.split(",") if p.strip()):
        begin, dash, finish = part.partition("-")
        if not dash:
            raise InvalidCampaign(f"{field}[{i}]", f"{part[:20]!r} must be HH:MM-HH:MM")
        windows.append((begin.strip(), finish.strip()))
    return tuple(windows)


def check_campaign(
    definition: CampaignDefinition,
    interests: tuple[str, ...],
    promotion_types: tuple[str, ...],
    now_s: float | None = None,
) -> CampaignDefinition:
    """`definition` if it can be synced to gateways; else InvalidCampaign naming the field.

    `interests` and `promotion_types` are the chain's accepted terms (preferences.Vocabulary);
    with `now_s`, a schedule that has already ended is refused (give it when the schedule is set).
    Whether the stores exist, and whether a code is another campaign's, is the records' to check.
    """
    d = definition
    _check_id(d.id, "id")
    _check_text(d.title, "title", MAX_TITLE_CHARS)
    _check_text(d.body, "body", MAX_BODY_CHARS)
    if not d.tiers:
        raise InvalidCampaign("tiers", "names no tier; give at least one (e.g. gold,silver)")
    _check_ids(d.tiers, "tiers", MAX_TIERS)
    if d.promotion_type is not None:
        _check_id(d.promotion_type, "promotion_type")
        if d.promotion_type not in promotion_types:
            raise InvalidCampaign(
                "promotion_type",
                f"{d.promotion_type!r} is not one of the chain's promotion types "
                f"({', '.join(promotion_types) or 'none'})",
            )
    _check_ids(d.interests, "interests", wire.MAX_PREFERENCE_TERMS)
    for i, term in enumerate(d.interests):
        if term not in interests:
            raise InvalidCampaign(
                f"interests[{i}]",
                f"{term!r} is not one of the chain's interests ({', '.join(interests) or 'none'})",
            )
    _check_seconds(d.cooldown_s, "cooldown_s", zero_ok=True)
    _check_seconds(d.validity_s, "validity_s", zero_ok=False)
    if isinstance(d.priority, bool) or not isinstance(d.priority, int):
        raise InvalidCampaign("priority", f"must be an integer; got {d.priority!r}")
    if not MIN_PRIORITY <= d.priority <= MAX_PRIORITY:
        raise InvalidCampaign("priority", f"must be {MIN_PRIORITY}..{MAX_PRIORITY}")
    _check_ids(d.stores, "stores", 10_000)
    _check_ids(d.store_tags, "store_tags", MAX_STORE_TAGS)
    if d.image_url is not None:
        check_image_url(d.image_url)
    if d.deep_link is not None:
        check_deep_link(d.deep_link)
    if d.code is not None:
        check_code(d.code)
    for i, segment in enumerate(d.segments):
        if segment not in wire.SEGMENTS:
            raise InvalidCampaign(
                f"segments[{i}]",
                f"{str(segment)[:40]!r} is not a segment ({', '.join(wire.SEGMENTS)})",
            )
        if segment in d.segments[:i]:
            raise InvalidCampaign(f"segments[{i}]", f"{segment!r} is named twice")
    _check_count(d.min_visits, "min_visits", wire.MAX_COUNTED_VISITS)
    _check_count(d.max_visits, "max_visits")
    if d.min_visits is not None and d.max_visits is not None and d.min_visits > d.max_visits:
        raise InvalidCampaign(
            "min_visits", f"{d.min_visits} is more than max_visits {d.max_visits}: nobody matches"
        )
    if d.schedule is not None:
        check_schedule(d.schedule, now_s)
    _check_count(d.per_member_day, "per_member_day")
    _check_count(d.per_member_week, "per_member_week")
    _check_count(d.daily_budget, "daily_budget")
    pct = d.holdout_pct
    if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 <= pct <= 100:
        raise InvalidCampaign("holdout_pct", f"must be a percentage, 0..100; got {pct!r}")
    return d


def changed(current: Campaign, change: CampaignChange) -> CampaignDefinition:
    """The definition after `change` (not yet checked: `check_campaign`); InvalidCampaign if
    nothing changes or the campaign is archived."""
    if current.status == "archived":
        raise InvalidCampaign("status", f"campaign {current.definition.id!r} is archived: final")
    if change.empty:
        raise InvalidCampaign("update", "give at least one field to change")
    for name in sorted(change.clear):
        if name not in CLEARABLE:
            raise InvalidCampaign(name, f"cannot be cleared (only {', '.join(CLEARABLE)})")
        if getattr(change, name) is not None:
            raise InvalidCampaign(name, "is both given and cleared; do one")
    fields: dict[str, Any] = {
        f: getattr(change, f)
        for f in change.__slots__
        if f != "clear" and getattr(change, f) is not None
    }
    for text in ("promotion_type", "image_url", "deep_link", "code"):
        if fields.get(text) == "":
            fields[text] = None
    for name in change.clear:
        fields[name] = 0.0 if name == "holdout_pct" else None
    return replace(current.definition, **fields)


def next_status(current: Campaign, action: CampaignAction) -> CampaignStatus:
    """The status after `action`; InvalidCampaign for an archived campaign (archiving is final)."""
    if current.status == "archived":
        raise InvalidCampaign(
            "status",
            f"campaign {current.definition.id!r} is archived: it cannot be "
            f"{'archived again' if action == 'archive' else action + 'd'}; create a new one",
        )
    return _AFTER[action]


_AFTER: dict[CampaignAction, CampaignStatus] = {
    "pause": "paused",
    "resume": "active",
    "archive": "archived",
}


# --- where and when a campaign runs -------------------------------------------------------------


def targeted_stores(
    definition: CampaignDefinition, store_tags: Mapping[str, Iterable[str]]
) -> tuple[str, ...]:
    """The stores (of `store_tags`: every store and its tags) a campaign runs at, sorted: those it
    names and those with any of its tags; every store if it names neither."""
    if not definition.stores and not definition.store_tags:
        return tuple(sorted(store_tags))
    wanted = set(definition.store_tags)
    return tuple(
        sorted(
            store
            for store, tags in store_tags.items()
            if store in definition.stores or wanted.intersection(tags)
        )
    )


def split_budget(budget: int, gateways: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """A daily budget split evenly over (store, gateway)s: in sorted order, the first
    `budget % n` get one more. The shares add up to `budget`; none if there is no gateway.

    Each gateway decides offline and stays within its share, so the chain never spends more
    than the budget; a share a quiet gateway leaves unspent is the price of that."""
    ordered = sorted(set(gateways))
    if not ordered:
        return {}
    each, extra = divmod(budget, len(ordered))
    return {gw: each + (1 if i < extra else 0) for i, gw in enumerate(ordered)}


def time_zone(name: str, field: str = "timezone") -> ZoneInfo:
    """The IANA time zone `name` ("Europe/Paris"); InvalidCampaign if there is none by that name."""
    if not isinstance(name, str) or not re.fullmatch(
        r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}", name
    ):
        raise InvalidCampaign(field, f"{str(name)[:64]!r} is not an IANA time zone name")
    if name in ("localtime", "posixrules") or name.startswith("right/"):
        # The tz database holds these but they name no place's civil time (the host's own
        # setting, leap-second clocks): every gateway refuses a sync naming one
        # (edge/core/schedule.py), so the store would lose all its campaigns.
        raise InvalidCampaign(
            field, f"{name!r} is not a place's civil time; use an IANA name like Europe/Paris"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidCampaign(
            field, f"{name!r} is not a known IANA time zone (e.g. Europe/Paris, America/New_York)"
        ) from None


def local_instant(local: datetime, zone: ZoneInfo) -> float:
    """A naive local datetime in `zone` as Unix seconds.

    As java.time's `ZonedDateTime.of` (and PEP 495's fold=0): a time that a DST change skips
    (02:30 on a spring-forward night) moves later by the gap (03:30, so a campaign never starts
    before the wall clock says so); a time that occurs twice (autumn) is its first occurrence."""
    return local.replace(tzinfo=zone, fold=0).timestamp()


def wire_schedule(schedule: CampaignSchedule, zone: ZoneInfo) -> wire.Schedule:
    """A checked schedule for a store in `zone`: start and end become instants (`local_instant`),
    days and hours stay local (the gateway reads them in the sync's time zone)."""
    start = None if schedule.start is None else _local_bound(schedule.start, "schedule.start")
    end = None if schedule.end is None else _local_bound(schedule.end, "schedule.end")
    return wire.Schedule(
        starts_at=None if start is None else max(0.0, local_instant(start, zone)),
        ends_at=None if end is None else max(0.0, local_instant(end, zone)),
        days=tuple(schedule.days),
        hours=tuple(
            (day_minute(a, "schedule.hours"), day_minute(b, "schedule.hours"))
            for a, b in schedule.hours
        ),
    )


def gateway_shares(
    budget: int | None,
    gateways: Sequence[tuple[str, str]],
    store: str,
) -> tuple[tuple[str, int], ...] | None:
    """The `store`'s gateways' shares of a campaign's daily budget (`split_budget` over every
    gateway of every store it targets), as wire.CampaignSpec.gateway_budgets; None: no budget."""
    if budget is None:
        return None
    shares = split_budget(budget, gateways)
    return tuple((gw, n) for (s, gw), n in sorted(shares.items()) if s == store)


class UnknownCampaign(InvalidCampaign):
    """No campaign by that id (an API answers 404)."""


class ArchivedCampaign(InvalidCampaign):
    """The campaign is archived: it never changes again (an API answers 409)."""


class CampaignExists(InvalidCampaign):
    """A campaign with that id exists already (an API answers 409)."""


class StaleRevision(InvalidCampaign):
    """The change was made against an older revision than the stored one (an API answers 412):
    someone else changed the campaign since; `current` is the stored revision."""

    def __init__(self, campaign_id: str, expected: int, current: int) -> None:
        super().__init__(
            "revision",
            f"campaign {campaign_id!r} is at revision {current}, not {expected}: it changed "
            "since you read it; read it again and redo your change on that",
        )
        self.current = current


class UnknownStore(InvalidCampaign):
    """No store by that id, where one is changed (an API answers 404)."""


def check_store_tags(tags: Sequence[str], field: str = "tags") -> tuple[str, ...]:
    """A store's tags if each is an id (a-z, 0-9, '-', '_') named once; InvalidCampaign."""
    _check_ids(tuple(tags), field, MAX_STORE_TAGS)
    return tuple(tags)


@dataclass(frozen=True, slots=True)
class StoreFacts:
    """A store as campaigns see it: its IANA time zone, its tags, where it is (None: unknown)
    and how many gateways it has registered."""

    id: str
    name: str
    timezone: str
    tags: tuple[str, ...]
    location: GeoPoint | None = None
    gateways: int = 0

    def to_json(self) -> dict[str, Any]:
        where = self.location
        return {
            "id": self.id,
            "name": self.name,
            "timezone": self.timezone,
            "tags": list(self.tags),
            "location": None if where is None else {"lat": where.lat, "lon": where.lon},
            "gateways": self.gateways,
        }


@dataclass(frozen=True, slots=True)
class CodeCounts:
    """A campaign's code pool: how many codes, how many given out with an offer, how many left."""

    campaign: str
    total: int
    given_out: int

    @property
    def free(self) -> int:
        return self.total - self.given_out

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "total": self.total,
            "given_out": self.given_out,
            "free": self.free,
        }


@dataclass(frozen=True, slots=True)
class CampaignRevision:
    """One line of a campaign's history: revision `revision` did `action` at `changed_at` (Unix
    seconds), changing `fields` (the definition's field names; "status" for a pause, resume or
    archive, "codes" for codes added to its pool), through `source` (the CLI or the API)."""

    campaign: str
    revision: int
    changed_at: float
    action: ChangeKind
    fields: tuple[str, ...]
    source: ChangeSource

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "revision": self.revision,
            "changed_at": self.changed_at,
            "action": self.action,
            "fields": list(self.fields),
            "source": self.source,
        }


def changed_fields(before: CampaignDefinition | None, after: CampaignDefinition) -> tuple[str, ...]:
    """The definition's fields `after` sets differently from `before`, in declaration order; for a
    new campaign (`before` None) the fields every campaign has and those it sets apart from their
    defaults."""
    if before is None:
        return tuple(
            f.name
            for f in dataclass_fields(after)
            if f.default is MISSING or getattr(after, f.name) != f.default
        )
    return tuple(
        f.name for f in dataclass_fields(after) if getattr(after, f.name) != getattr(before, f.name)
    )
