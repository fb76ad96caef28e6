"""What the bridge re-checks of a campaign when it records an offer (issue 11), beyond admission.py.

- **Caps per member across stores** (`over_campaign_cap`): a gateway counts only its own offers, so a
  member walking from store to store could collect a campaign's offer at each. The bridge counts the
  member's offers of the campaign at every store: at most `per_member_day` in the local day of the
  store that triggered it (its time zone, midnight to midnight: "once a day" as the shopper reads
  it), at most `per_member_week` in any 7 days (rolling, either side of the trigger: a gateway may
  upload late). An offer over either is recorded suppressed, `campaign_cap`.
- **A campaign paused or archived after the gateway decided** (`decided_while_active`): the gateway
  decided offline, by its last campaigns set. A trigger whose radio time is before the campaign's
  last change (`updated_at`, which pausing or archiving sets) was decided while it was active, and
  is honoured; one decided after is not (`campaign_inactive`), even from a gateway that had not
  heard of the pause yet. An unknown (deleted) campaign's trigger is recorded suppressed
  `unknown_campaign`, as before.
- **Codes** (`CampaignRefusal.CODES_EXHAUSTED`): a campaign with a pool of codes whose codes are all
  given out cannot make a redeemable offer; it is recorded suppressed rather than sent without one.

No clock, no I/O: the time zone comes in as a `tzinfo` the adapter resolved.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum

from edge.core.preferences import WEEK_S, busiest_window


class CampaignRefusal(StrEnum):
    """Why an offer the member may have is still not sent (recorded suppressed with the reason)."""

    CAMPAIGN_CAP = "campaign_cap"  # over the campaign's per_member_day or per_member_week
    CODES_EXHAUSTED = "codes_exhausted"  # a pool of codes, none left to give
    INVALID_CODE = "invalid_code"  # the stored code is not one a till can read (edited by hand)


@dataclass(frozen=True, slots=True)
class CampaignCaps:
    """A campaign's caps per member (None: no cap; 0: the campaign is never sent)."""

    per_member_day: int | None = None
    per_member_week: int | None = None


def local_day_bounds(ts: float, zone: tzinfo) -> tuple[float, float]:
    """The Unix times of the local midnight that starts the day holding `ts` in `zone` and of the
    next one (23 or 25 hours later across a DST change)."""
    day = datetime.fromtimestamp(ts, zone).date()
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return start.timestamp(), end.timestamp()


def over_campaign_cap(
    caps: CampaignCaps, ts: float, day: tuple[float, float], other_ts: Collection[float]
) -> bool:
    """Whether one more offer of the campaign at radio time `ts` breaks its caps, given the radio
    times of the member's other offers of it (every store) and the local day [start, end) of `ts`."""
    if caps.per_member_day is not None:
        start, end = day
        if sum(1 for t in other_ts if start <= t < end) >= caps.per_member_day:
            return True
    if caps.per_member_week is not None:
        return busiest_window(other_ts, ts, WEEK_S) >= caps.per_member_week
    return False


def decided_while_active(
    active_now: bool, changed_at: float | None, inactive: bool, ts: float
) -> bool:
    """Whether a trigger at radio time `ts` is of a campaign that was active when decided: active
    now, or made inactive (paused, archived) at `changed_at`, after `ts`."""
    if active_now:
        return True
    return inactive and changed_at is not None and ts < changed_at
