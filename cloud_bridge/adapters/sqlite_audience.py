"""Members' audience (segments, visits) in the loyalty records (issue 11; cloud_bridge/core/segments.py).

Kept per member in `member_audience` as last computed, so the rosters change only when a member's
audience does: its triggers move every store's roster_version then (migration 12). Recomputed for the
members of each batch of recorded visits, and for every member by `refresh`: one query over the
visits, grouped by member.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import aiosqlite

from cloud_bridge.core.segments import (
    NO_VISITS,
    Audience,
    SegmentPolicy,
    VisitSummary,
    audience_of,
)

#: Write a member's audience only when it changed (the triggers move the rosters' version then).
_UPSERT = (
    "INSERT INTO member_audience (member_id, segments, visits, computed_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (member_id) DO UPDATE SET segments = excluded.segments, "
    "visits = excluded.visits, computed_at = excluded.computed_at "
    "WHERE segments != excluded.segments OR visits != excluded.visits"
)
#: Members per query of `update_members` (within SQLite's host parameter limit).
_MEMBERS_PER_QUERY = 500
_SUMMARY = "min(ts), max(ts), coalesce(sum(ts > ?), 0), coalesce(sum(ts > ?), 0)"


def _summary(row: Sequence[Any]) -> VisitSummary:
    """(min(ts), max(ts), recent, in_year) as `_SUMMARY` selects them."""
    first, last, recent, in_year = row[0], row[1], row[2], row[3]
    if first is None or last is None:
        return VisitSummary()
    return VisitSummary(float(first), float(last), int(recent), int(in_year))


async def update_members(
    db: aiosqlite.Connection, members: Collection[str], now_s: float, policy: SegmentPolicy
) -> None:
    """Recompute these members' audience from their visits (in the caller's transaction): one
    query and one write per batch of recorded events, not per visit."""
    ordered = sorted(set(members))
    for start in range(0, len(ordered), _MEMBERS_PER_QUERY):
        chunk = ordered[start : start + _MEMBERS_PER_QUERY]
        found = dict.fromkeys(chunk, NO_VISITS)
        async with db.execute(
            f"SELECT member_id, {_SUMMARY} FROM visits "
            f"WHERE member_id IN ({','.join('?' * len(chunk))}) GROUP BY member_id",
            (policy.regular_since(now_s), policy.year_since(now_s), *chunk),
        ) as cursor:
            async for row in cursor:
                found[str(row[0])] = audience_of(_summary(tuple(row)[1:]), now_s, policy)
        await db.executemany(
            _UPSERT, [(member, a.segments, a.visits, now_s) for member, a in found.items()]
        )


async def refresh(db: aiosqlite.Connection, now_s: float, policy: SegmentPolicy) -> int:
    """Recompute every member's audience as of `now_s` (time alone moves segments: a regular
    lapses); store the changed ones and commit. How many changed."""
    computed: dict[str, Audience] = {}
    async with db.execute(
        f"SELECT member_id, {_SUMMARY} FROM visits GROUP BY member_id",
        (policy.regular_since(now_s), policy.year_since(now_s)),
    ) as cursor:
        async for row in cursor:
            computed[str(row[0])] = audience_of(_summary(tuple(row)[1:]), now_s, policy)
    async with db.execute("SELECT member_id, segments, visits FROM member_audience") as cursor:
        stored = {str(r[0]): Audience(int(r[1]), int(r[2])) async for r in cursor}
    changed = [
        (member, found.segments, found.visits, now_s)
        for member, found in (
            *computed.items(),
            # Stored, but no visits any more (deleted by hand): back to never heard.
            *((m, NO_VISITS) for m in stored.keys() - computed.keys()),
        )
        if stored.get(member) != found
    ]
    try:
        await db.executemany(_UPSERT, changed)
        await db.commit()
    except BaseException:
        await db.rollback()
        raise
    return len(changed)
