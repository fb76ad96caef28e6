"""The demo's marketer: before the doors open, sets up the store and its campaigns through the
bridge's HTTPS API alone, as docs/campaigns.md shows (`PATCH /v1/stores/{id}`, `POST` and `PATCH
/v1/campaigns`, `POST /v1/campaigns/{id}/codes`).

Three campaigns of different promotion types are measured:
- the seeded `welcome-bakery` (a discount) holds back `HOLDOUT_PCT` of its members as a control group;
- the seeded `gift-with-purchase` (a free gift) gets a pool of one code per offer, for the tills;
- a new `happy-hour-points` (points) runs on a schedule in the store's local time around the
  simulated hour, with a daily budget and a cap per member.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from edge.demo.api_client import ApiReply, EnrollmentApiClient
from edge.errors import EdgeError

TIMEZONE = "Europe/London"
STORE_TAGS = ("high-street", "region-south")
HOLDOUT_CAMPAIGN = "welcome-bakery"
HOLDOUT_PCT = 30.0
POOL_CAMPAIGN = "gift-with-purchase"
POOL_CODES = 400  # more than the demo can give out: every offer of it carries a code
SCHEDULED_CAMPAIGN = "happy-hour-points"
DAILY_BUDGET = 12
#: The scheduled campaign's window opens at the simulated start's hour and lasts this long.
WINDOW_HOURS = 2


class MarketerError(EdgeError):
    """The bridge's API refused what the demo's marketer asked for."""


@dataclass(frozen=True, slots=True)
class CampaignPlan:
    """What the marketer set up: the campaigns measured, and the lines to show."""

    holdout: tuple[str, float]  # (campaign, pct)
    pool: tuple[str, int]  # (campaign, codes)
    scheduled: tuple[str, int]  # (campaign, daily budget)
    lines: tuple[str, ...]


def pool_codes(count: int) -> list[str]:
    """The code pool the marketer uploads (printed on the gift vouchers)."""
    return [f"GIFT-{n:04d}" for n in range(1, count + 1)]


def local_schedule(start_unix_s: float, timezone: str) -> dict[str, Any]:
    """A schedule (local dates, days and hours of `timezone`) that runs from the start's hour for
    WINDOW_HOURS: from that local day for two days, on those weekdays, in that window (split at
    midnight when it crosses it)."""
    local = dt.datetime.fromtimestamp(start_unix_s, ZoneInfo(timezone))
    day = local.date()
    end_hour = local.hour + WINDOW_HOURS
    if end_hour <= 24:
        hours = [[f"{local.hour:02d}:00", f"{end_hour:02d}:00"]]
    else:
        hours = [["00:00", f"{end_hour - 24:02d}:00"], [f"{local.hour:02d}:00", "24:00"]]
    next_day = day + dt.timedelta(days=1)
    return {
        "start": day.isoformat(),
        "end": (day + dt.timedelta(days=2)).isoformat(),
        "days": sorted({day.isoweekday(), next_day.isoweekday()}),
        "hours": hours,
    }


async def set_up_campaigns(
    api: EnrollmentApiClient, store: str, start_unix_s: float
) -> CampaignPlan:
    """Set the store's zone and tags, then the three measured campaigns; MarketerError if the API
    refuses any of it."""
    lines: list[str] = []

    async def call(method: str, path: str, body: dict[str, Any], ok: int = 200) -> ApiReply:
        reply = await api.request(method, path, body)
        if reply.status != ok:
            raise MarketerError(
                f"{method} {path}: refused with {reply.status} {reply.body.get('error')}: "
                f"{reply.body.get('message')}"
            )
        return reply

    await call("PATCH", f"/v1/stores/{store}", {"timezone": TIMEZONE, "tags": list(STORE_TAGS)})
    lines.append(f"{store}: time zone {TIMEZONE}, tags {', '.join(STORE_TAGS)}")
    await call("PATCH", f"/v1/campaigns/{HOLDOUT_CAMPAIGN}", {"holdout_pct": HOLDOUT_PCT})
    lines.append(f"{HOLDOUT_CAMPAIGN} (discount): {HOLDOUT_PCT:g} % of members held out")
    codes = await call(
        "POST", f"/v1/campaigns/{POOL_CAMPAIGN}/codes", {"codes": pool_codes(POOL_CODES)}
    )
    await call(
        "PATCH",
        f"/v1/campaigns/{POOL_CAMPAIGN}",
        # Ahead of the seeded events and sales (behind the bakery): more codes at the tills.
        {"deep_link": f"shop://offers/{POOL_CAMPAIGN}", "validity_s": 7200, "priority": 9},
    )
    lines.append(
        f"{POOL_CAMPAIGN} (free gift): {codes.body.get('free', POOL_CODES)} codes uploaded, "
        "one per offer"
    )
    schedule = local_schedule(start_unix_s, TIMEZONE)
    await call(
        "POST",
        "/v1/campaigns",
        {
            "id": SCHEDULED_CAMPAIGN,
            "title": "Happy hour: triple points",
            "body": "Triple points on everything you buy in the next hour.",
            "tiers": ["bronze", "silver", "gold"],
            "promotion_type": "points_multiplier",
            "store_tags": ["high-street"],
            "image_url": "https://cdn.example.com/offers/happy-hour.png",
            "deep_link": f"shop://offers/{SCHEDULED_CAMPAIGN}",
            "priority": 12,
            "validity_s": 3600,
            "schedule": schedule,
            "per_member_day": 1,
            "daily_budget": DAILY_BUDGET,
        },
        ok=201,
    )
    windows = ", ".join("-".join(window) for window in schedule["hours"])
    lines.append(
        f"{SCHEDULED_CAMPAIGN} (points) created: {schedule['start']} to {schedule['end']}, "
        f"{windows} local, {DAILY_BUDGET} a day, 1 per member a day"
    )
    return CampaignPlan(
        (HOLDOUT_CAMPAIGN, HOLDOUT_PCT),
        (POOL_CAMPAIGN, POOL_CODES),
        (SCHEDULED_CAMPAIGN, DAILY_BUDGET),
        tuple(lines),
    )
