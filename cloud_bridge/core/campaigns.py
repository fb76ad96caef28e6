"""Campaign management (issue 11): a campaign's definition, its checks and its status, without I/O.

A marketer creates, changes, pauses, resumes and archives campaigns (`cloud-bridge campaign ...`);
the loyalty records store what these functions accept, and every change moves the affected stores'
`campaigns_version` so their gateways get a newly signed campaign sync. Only an active campaign is in
a sync. Archiving is final: an archived campaign is kept (its offers refer to it) but never resumes
or changes again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

from cloud_bridge.errors import BridgeError
from edge.core import wire

CampaignStatus = Literal["active", "paused", "archived"]
STATUSES: tuple[CampaignStatus, ...] = ("active", "paused", "archived")
CampaignAction = Literal["pause", "resume", "archive"]

#: wire.py's Title and Text bounds: a longer title or body would make every gateway refuse the sync.
MAX_TITLE_CHARS = 500
MAX_BODY_CHARS = 4000
MAX_TIERS = 64
MAX_SECONDS = 1e11  # wire.Seconds
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1  # wire.Priority


class InvalidCampaign(BridgeError):
    """A campaign definition or change the bridge refuses; `field` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class CampaignDefinition:
    """What a marketer says about a campaign. `stores` empty: every store of the chain."""

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


@dataclass(frozen=True, slots=True)
class Campaign:
    """A stored campaign: its definition, its status and when it last changed (None: never)."""

    definition: CampaignDefinition
    status: CampaignStatus
    updated_at: float | None

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
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class CampaignChange:
    """An update: each field given replaces the stored one; None keeps it. For `promotion_type`,
    "" removes it; for `interests` and `stores`, an empty tuple means any interest / every store."""

    title: str | None = None
    body: str | None = None
    tiers: tuple[str, ...] | None = None
    cooldown_s: float | None = None
    priority: int | None = None
    validity_s: float | None = None
    promotion_type: str | None = None
    interests: tuple[str, ...] | None = None
    stores: tuple[str, ...] | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.__slots__)


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


def _check_text(value: str, field: str, most: int) -> None:
    if not value.strip():
        raise InvalidCampaign(field, "is empty")
    if len(value) > most:
        raise InvalidCampaign(field, f"is {len(value)} characters long; at most {most}")


def _check_seconds(value: float, field: str, *, zero_ok: bool) -> None:
    low = "0 or more" if zero_ok else "more than 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise InvalidCampaign(field, f"must be a number of seconds, {low}; got {value}")
    if value > MAX_SECONDS:
        raise InvalidCampaign(field, f"must be at most {MAX_SECONDS:.0f} s; got {value}")


def check_campaign(
    definition: CampaignDefinition,
    interests: tuple[str, ...],
    promotion_types: tuple[str, ...],
) -> CampaignDefinition:
    """`definition` if it can be synced to gateways; else InvalidCampaign naming the field.

    `interests` and `promotion_types` are the chain's accepted terms (preferences.Vocabulary).
    Whether the stores exist is the records' to check."""
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
    return d


def changed(current: Campaign, change: CampaignChange) -> CampaignDefinition:
    """The definition after `change` (not yet checked: `check_campaign`); InvalidCampaign if
    nothing changes or the campaign is archived."""
    if current.status == "archived":
        raise InvalidCampaign("status", f"campaign {current.definition.id!r} is archived: final")
    if change.empty:
        raise InvalidCampaign("update", "give at least one field to change")
    fields = {f: getattr(change, f) for f in change.__slots__ if getattr(change, f) is not None}
    if fields.get("promotion_type") == "":
        fields["promotion_type"] = None
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
