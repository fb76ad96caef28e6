"""Enrollment on the loyalty records' SQLite schema (see sqlite_records.py), one transaction per request.

Every change here is picked up by the schema's triggers, which bump each store's roster version, so a
revoked device or a withdrawn consent reaches every gateway at the next sync. A revoked device's
identity key is erased (overwritten with zeros): nothing needs it again, and a key kept is a key that can
leak. Use a connection of its own (`SqliteEnrollment.open`): SqliteLoyaltyRecords commits and rolls back
on its connection, which would cut through a transaction here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiosqlite

from cloud_bridge.adapters.data_key import DataKey
from cloud_bridge.adapters.sqlite_records import (
    ALERT_SELECT,
    SqliteLoyaltyRecords,
    alert_from_row,
    read_member_prefs,
    read_vocabulary,
    suppress_unwanted_offers,
)
from cloud_bridge.core.enrollment import (
    IDENTITY_KEY_BYTES,
    AlreadyEnrolled,
    DeviceStatus,
    EnrollRequest,
    EnrollResult,
    MemberStatus,
    NoConsent,
    RandomBytes,
    RecordsUnavailable,
    RevokeResult,
    TierConflict,
    UnknownDevice,
    UnknownMember,
    check_device_id,
    check_member_id,
    enroll_result,
    new_device,
)
from cloud_bridge.core.preferences import (
    MemberPreferences,
    PreferencesRequest,
    check_request_terms,
    join_terms,
)
from cloud_bridge.errors import RecordsError
from edge.core import wire

_LOGGER = logging.getLogger(__name__)
SHOPPER_TOKEN_BYTES = 12  # the member's opaque offer delivery token: 24 hex digits
_T = TypeVar("_T")


def new_shopper_token() -> str:
    """A fresh, unguessable offer delivery token from the CSPRNG."""
    return secrets.token_hex(SHOPPER_TOKEN_BYTES)


class SqliteEnrollment:
    """Enroll, revoke, withdraw consent and report status on the loyalty records in SQLite."""

    def __init__(
        self,
        connection: aiosqlite.Connection,
        *,
        chain: str,
        random_bytes: RandomBytes = secrets.token_bytes,
        shopper_token: Callable[[], str] = new_shopper_token,
        wall_clock: Callable[[], float] = time.time,
        owner: SqliteLoyaltyRecords | None = None,
    ) -> None:
        self._db = connection
        self.chain = chain
        self._random_bytes = random_bytes
        self._shopper_token = shopper_token
        self._wall = wall_clock
        self._owner = owner
        # One transaction at a time on this connection: API requests arrive concurrently.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: Path, chain: str, *, data_key: DataKey | None = None
    ) -> SqliteEnrollment:
        """Open the loyalty records at `path` (migrating them) on a connection of its own; enrolling
        needs `data_key`, to seal the new identity keys."""
        records = await SqliteLoyaltyRecords.open(path, chain, data_key=data_key)
        return cls(records.connection, chain=chain, owner=records)

    async def close(self) -> None:
        """Close the connection if `open` made it; a connection passed in belongs to the caller."""
        if self._owner is not None:
            await self._owner.close()

    async def enroll(self, request: EnrollRequest) -> EnrollResult:
        async def enroll(db: aiosqlite.Connection) -> EnrollResult:
            now_s = self._wall()
            member = request.member
            async with db.execute(
                "SELECT tier, shopper_token, consent FROM members WHERE id = ?", (member,)
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                if request.tier is None:
                    raise UnknownMember(member, "send 'tier' to create a new member")
                tier, token, created = request.tier, self._shopper_token(), True
                # No name: the bridge does not need one to recognise a member (data minimisation).
                await db.execute(
                    "INSERT INTO members (id, name, tier, shopper_token, consent, joined_at) "
                    "VALUES (?, '', ?, ?, 1, ?)",
                    (member, tier, token, now_s),
                )
            else:
                tier, token, consent, created = str(row[0]), str(row[1]), bool(row[2]), False
                if request.tier is not None and request.tier != tier:
                    raise TierConflict(member, tier, request.tier)
                if not consent:  # consent given again with this enrollment
                    await db.execute("UPDATE members SET consent = 1 WHERE id = ?", (member,))
            async with db.execute(
                "SELECT id FROM devices WHERE member_id = ? AND kind = ? AND active "
                "ORDER BY enrolled_at LIMIT 1",
                (member, request.kind),
            ) as cursor:
                existing = await cursor.fetchone()
            if existing is not None:
                raise AlreadyEnrolled(member, request.kind, str(existing[0]))
            device = new_device(request, self._random_bytes)
            if self._owner is None:
                raise RecordsUnavailable("cannot enroll: this connection cannot seal identity keys")
            try:
                sealed = self._owner.seal_identity_key(device.id, device.identity_key)
            except RecordsError as exc:
                raise RecordsUnavailable(f"cannot enroll: {exc}") from None
            # The key itself never reaches the file: zeros in identity_key, the sealed key beside.
            await db.execute(
                "INSERT INTO devices (id, member_id, kind, identity_key, sealed_key, exponent, "
                "active, enrolled_at) VALUES (?, ?, ?, zeroblob(16), ?, ?, 1, ?)",
                (device.id, member, request.kind, sealed, device.exponent, now_s),
            )
            return enroll_result(
                request,
                device,
                chain=self.chain,
                tier=tier,
                shopper_token=token,
                enrolled_at=now_s,
                member_created=created,
            )

        result = await self._transaction("enroll a device", enroll)
        _LOGGER.info(
            "enrolled %s device %s for member %s%s",
            result.kind,
            result.device,
            result.member,
            " (new member)" if result.member_created else "",
        )
        return result

    async def revoke(self, device: str) -> RevokeResult:
        check_device_id(device)

        async def revoke(db: aiosqlite.Connection) -> RevokeResult:
            async with db.execute(
                "SELECT member_id, active FROM devices WHERE id = ?", (device,)
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                raise UnknownDevice(device)
            await _deactivate(db, "id = ?", device)
            return RevokeResult(device, str(row[0]), bool(row[1]))

        result = await self._transaction("revoke a device", revoke)
        if result.was_active:
            _LOGGER.info("revoked device %s of member %s", device, result.member)
        return result

    async def withdraw_consent(self, member: str) -> MemberStatus:
        check_member_id(member)

        async def withdraw(db: aiosqlite.Connection) -> MemberStatus:
            await _member_row(db, member)
            # `AND consent`: an unchanged row would still fire the trigger and bump the version.
            await db.execute("UPDATE members SET consent = 0 WHERE id = ? AND consent", (member,))
            await _deactivate(db, "member_id = ?", member)
            # Offers not yet confirmed by the app are not sent (again) to a member who opted out.
            await db.execute(
                "UPDATE offers SET delivery = 'suppressed' "
                "WHERE member_id = ? AND delivery IN ('pending', 'sent')",
                (member,),
            )
            return await _member_status(db, member)

        status = await self._transaction("withdraw consent", withdraw)
        _LOGGER.info("member %s withdrew consent; every device deactivated", member)
        return status

    async def member_status(self, member: str) -> MemberStatus:
        check_member_id(member)
        return await self._transaction(
            "read member status", lambda db: _member_status(db, member), write=False
        )

    async def set_preferences(self, request: PreferencesRequest) -> MemberPreferences:
        async def store(db: aiosqlite.Connection) -> MemberPreferences:
            vocabulary = await read_vocabulary(db)
            check_request_terms(request, vocabulary)
            member = request.member
            _, consent, _ = await _member_row(db, member)
            if not consent:
                raise NoConsent(member)
            values = (
                join_terms(request.interests),
                join_terms(request.promotion_types),
                request.per_day,
                request.per_week,
            )
            # An unchanged statement changes nothing: no roster version moves, and updated_at
            # stays when they last changed.
            await db.execute(
                "INSERT INTO member_prefs (member_id, interests, promotions, per_day, per_week, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (member_id) DO UPDATE SET "
                "interests = excluded.interests, promotions = excluded.promotions, "
                "per_day = excluded.per_day, per_week = excluded.per_week, "
                "updated_at = excluded.updated_at WHERE (interests, promotions, per_day, per_week) "
                "IS NOT (excluded.interests, excluded.promotions, excluded.per_day, "
                "excluded.per_week)",
                (member, *values, self._wall()),
            )
            stored = await read_member_prefs(db, member)
            assert stored is not None  # just written, in this transaction
            # Offers admitted under what they said before and not yet confirmed by the app.
            await suppress_unwanted_offers(db, stored, vocabulary)
            return stored

        stored = await self._transaction("store preferences", store)
        _LOGGER.info("member %s stated preferences", request.member)
        return stored

    async def preferences(self, member: str) -> MemberPreferences | None:
        check_member_id(member)

        async def read(db: aiosqlite.Connection) -> MemberPreferences | None:
            await _member_row(db, member)
            return await read_member_prefs(db, member)

        return await self._transaction("read preferences", read, write=False)

    async def forget_preferences(self, member: str) -> bool:
        check_member_id(member)

        async def forget(db: aiosqlite.Connection) -> bool:
            await _member_row(db, member)
            cursor = await db.execute("DELETE FROM member_prefs WHERE member_id = ?", (member,))
            return cursor.rowcount == 1

        forgotten = await self._transaction("forget preferences", forget)
        if forgotten:
            _LOGGER.info("member %s: preferences forgotten", member)
        return forgotten

    async def clone_alerts(self) -> list[wire.CloneAlert]:
        async def read(db: aiosqlite.Connection) -> list[wire.CloneAlert]:
            async with db.execute(f"{ALERT_SELECT} WHERE status = 'open' ORDER BY id") as cursor:
                return [alert_from_row(r) async for r in cursor]

        return await self._transaction("read clone alerts", read, write=False)

    async def _transaction(
        self,
        what: str,
        work: Callable[[aiosqlite.Connection], Awaitable[_T]],
        *,
        write: bool = True,
    ) -> _T:
        """Run `work` in one transaction; roll back on any error, map SQLite's errors."""
        db = self._db
        async with self._lock:
            try:
                # IMMEDIATE: take the write lock now, so what `work` reads cannot change under it;
                # a read-only one is a snapshot that does not hold up the bridge's writes.
                await db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    value = await work(db)
                    await db.commit()
                except BaseException:
                    await db.rollback()
                    raise
            except sqlite3.Error as exc:
                _LOGGER.error("cannot %s in the loyalty records: %s", what, exc)
                raise RecordsUnavailable(
                    f"cannot {what}: the loyalty records are busy or unavailable ({exc}); "
                    "retry in a few seconds"
                ) from exc
        return value


async def _deactivate(db: aiosqlite.Connection, where: str, value: str) -> None:
    """Deactivate the matching devices and erase their keys (only rows that change: see triggers)."""
    await db.execute(
        f"UPDATE devices SET active = 0, identity_key = zeroblob({IDENTITY_KEY_BYTES}), "
        f"sealed_key = NULL WHERE {where} AND (active OR sealed_key IS NOT NULL OR "
        f"identity_key != zeroblob({IDENTITY_KEY_BYTES}))",
        (value,),
    )


async def _member_row(db: aiosqlite.Connection, member: str) -> tuple[str, bool, float]:
    """The member's tier, consent and joined_at; raise UnknownMember."""
    async with db.execute(
        "SELECT tier, consent, joined_at FROM members WHERE id = ?", (member,)
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise UnknownMember(member)
    return str(row[0]), bool(row[1]), float(row[2])


async def _member_status(db: aiosqlite.Connection, member: str) -> MemberStatus:
    tier, consent, joined_at = await _member_row(db, member)
    async with db.execute(
        "SELECT id, kind, active, enrolled_at FROM devices WHERE member_id = ? "
        "ORDER BY enrolled_at, id",
        (member,),
    ) as cursor:
        devices = tuple(
            [DeviceStatus(str(r[0]), str(r[1]), bool(r[2]), float(r[3])) async for r in cursor]
        )
    return MemberStatus(member, tier, consent, joined_at, devices)
