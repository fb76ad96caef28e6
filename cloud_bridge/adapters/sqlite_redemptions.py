"""Redemptions in the loyalty records (issue 11; cloud_bridge/core/redemptions.py has the rules).

Finds the offer a redemption names (by its pool code, by a campaign's shared code and the member, or
by its id), checks it, and records one `redemptions` row in one transaction: a refused redemption
writes nothing. The row links to the offer, and through offers.visit_id to the visit.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

from cloud_bridge.core.redemptions import (
    AlreadyRedeemed,
    InvalidRedemption,
    RedeemableOffer,
    Redemption,
    RedemptionClaim,
    UnknownCode,
    UnknownOffer,
    check_redemption,
)
from cloud_bridge.errors import RecordsError

_OFFER = (
    "SELECT o.event_id, o.campaign_id, o.member_id, o.visit_id, o.store_id, o.delivery, "
    "o.recorded_at, o.expires_at, o.code, r.redeemed_at, o.sent_at IS NOT NULL "
    "FROM offers o LEFT JOIN redemptions r ON r.offer_id = o.event_id"
)


def _offer(row: aiosqlite.Row | tuple[object, ...]) -> RedeemableOffer:
    r = tuple(row)
    return RedeemableOffer(
        offer_id=str(r[0]),
        campaign=str(r[1]),
        member=str(r[2]),
        visit_id=str(r[3]),
        store=str(r[4]),
        delivery=str(r[5]),
        issued_at=float(r[6]),
        valid_until=None if r[7] is None else float(r[7]),
        code=None if r[8] is None else str(r[8]),
        redeemed_at=None if r[9] is None else float(r[9]),
        sent=bool(r[10]),
    )


async def _one(db: aiosqlite.Connection, sql: str, *params: object) -> RedeemableOffer | None:
    async with db.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    return None if row is None else _offer(row)


async def find_offer(db: aiosqlite.Connection, claim: RedemptionClaim) -> RedeemableOffer:
    """The offer `claim` names; UnknownOffer / UnknownCode / InvalidRedemption if none is."""
    if claim.offer_id is not None:
        found = await _one(db, f"{_OFFER} WHERE o.event_id = ?", claim.offer_id)
        if found is None:
            raise UnknownOffer("offer_id", f"no offer {claim.offer_id!r} in the loyalty records")
        return found
    code = claim.code
    assert code is not None  # parse_redemption_request wants one of them
    async with db.execute("SELECT offer_id FROM campaign_codes WHERE code = ?", (code,)) as cursor:
        pooled = await cursor.fetchone()
    if pooled is not None:
        if pooled[0] is None:
            raise UnknownCode("code", f"code {code!r} has not been given to any shopper yet")
        found = await _one(db, f"{_OFFER} WHERE o.event_id = ?", pooled[0])
        if found is None:
            raise UnknownCode("code", f"code {code!r} names an offer no longer in the records")
        return found
    # A campaign's one code for every shopper: the campaign that has it now, else one whose
    # offers carry it (offers keep the code they were given when the campaign's changes).
    async with db.execute(
        "SELECT id FROM campaigns WHERE code = ? UNION ALL "
        "SELECT * FROM (SELECT campaign_id FROM offers WHERE code = ? LIMIT 1)",
        (code, code),
    ) as cursor:
        campaigns = [str(r[0]) async for r in cursor]
    if not campaigns:
        raise UnknownCode("code", f"no campaign or offer has code {code!r}")
    if claim.member is None:
        raise InvalidRedemption(
            "member",
            f"code {code!r} is campaign {campaigns[0]!r}'s code for every shopper: send the "
            "member too (their latest offer of it is redeemed)",
        )
    # The member's latest offer with that code not yet redeemed; else their latest one, to say
    # it was redeemed already.
    for unredeemed in ("AND r.offer_id IS NULL ", ""):
        found = await _one(
            db,
            f"{_OFFER} WHERE o.member_id = ? AND o.code = ? "
            f"{unredeemed}ORDER BY o.recorded_at DESC, o.event_id DESC LIMIT 1",
            claim.member,
            code,
        )
        if found is not None:
            return found
    raise UnknownOffer(
        "member", f"member {claim.member!r} was never given an offer with code {code!r}"
    )


async def record_redemption(
    db: aiosqlite.Connection, path: Path, claim: RedemptionClaim, now_s: float
) -> Redemption:
    """Record the redemption `claim` describes, or raise why not (RedemptionError) with nothing
    written; RecordsError if the database fails."""
    try:
        offer = await find_offer(db, claim)
        if claim.store is not None:
            async with db.execute("SELECT 1 FROM stores WHERE id = ?", (claim.store,)) as cursor:
                if await cursor.fetchone() is None:
                    raise InvalidRedemption(
                        "store", f"store {claim.store!r} is not in the loyalty records"
                    )
        check_redemption(offer, claim, now_s)
        redemption = Redemption(
            offer, claim.code or offer.code, claim.store, claim.source, claim.at(now_s), now_s
        )
        try:
            await db.execute(
                "INSERT INTO redemptions (offer_id, code, store_id, source, redeemed_at, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    offer.offer_id,
                    redemption.code,
                    redemption.store,
                    redemption.source,
                    redemption.redeemed_at,
                    now_s,
                ),
            )
        except sqlite3.IntegrityError:
            # Redeemed meanwhile (another instance of the API, another connection).
            await db.rollback()
            again = await _one(db, f"{_OFFER} WHERE o.event_id = ?", offer.offer_id)
            when = None if again is None else again.redeemed_at
            raise AlreadyRedeemed(
                "code" if claim.code is not None else "offer_id",
                f"offer {offer.offer_id} was already redeemed",
                redeemed_at=when,
                offer_id=offer.offer_id,
            ) from None
        await db.commit()
    except sqlite3.Error as exc:
        await db.rollback()
        raise RecordsError(f"cannot record the redemption in {path}: {exc}") from exc
    return redemption
