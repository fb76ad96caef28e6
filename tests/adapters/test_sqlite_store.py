"""SqliteGatewayStore on a real SQLite file in tmp_path: outbox, offer history, sync state, schema."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from edge.adapters.sqlite_store import SCHEMA_VERSION, SqliteGatewayStore, move_aside
from edge.core import wire
from edge.core.wire import MAX_OFFERS_PER_WEEK
from edge.errors import StorageError
from tests.factories import T0, make_offer_trigger, make_visit

GUARD_S = 10.0  # only a guard against hangs
STAMP = "20260921T141320Z"  # T0 in UTC, as a moved-aside database's name carries it


def pragma(path: Path, name: str) -> object:
    """Read a PRAGMA through a separate connection, as an operator's sqlite3 shell would."""
    with sqlite3.connect(path) as conn:
        value = conn.execute(f"PRAGMA {name}").fetchone()[0]
    conn.close()
    return value


# --- Outbox ---------------------------------------------------------------------------------------


async def test_appended_events_are_pending_oldest_first(store: SqliteGatewayStore) -> None:
    visit = make_visit()
    offer = make_offer_trigger(visit_id=visit.event_id, member=visit.member)
    later = make_visit()
    await store.append_events([visit, offer], now_s=T0)
    await store.append_events([later], now_s=T0 + 1)

    entries = await store.pending(limit=10)

    assert [(e.event_id, e.kind) for e in entries] == [
        (visit.event_id, "visit"),
        (offer.event_id, "offer"),
        (later.event_id, "visit"),
    ]
    assert [wire.decode(e.payload) for e in entries] == [visit, offer, later]
    assert await store.count() == 3


async def test_pending_honours_the_limit(store: SqliteGatewayStore) -> None:
    events = [make_visit() for _ in range(5)]
    await store.append_events(events, now_s=T0)

    entries = await store.pending(limit=2)

    assert [e.event_id for e in entries] == [events[0].event_id, events[1].event_id]


async def test_pending_skips_events_in_flight_and_still_fills_the_limit(
    store: SqliteGatewayStore,
) -> None:
    events = [make_visit() for _ in range(5)]
    await store.append_events(events, now_s=T0)
    in_flight = {events[0].event_id, events[2].event_id}

    entries = await store.pending(limit=3, skip=in_flight)

    assert [e.event_id for e in entries] == [e.event_id for e in (events[1], events[3], events[4])]


async def test_pending_ignores_skip_ids_that_are_no_longer_stored(
    store: SqliteGatewayStore,
) -> None:
    events = [make_visit() for _ in range(3)]
    await store.append_events(events, now_s=T0)

    entries = await store.pending(limit=2, skip={"ev-gone-1", "ev-gone-2", events[0].event_id})

    assert [e.event_id for e in entries] == [events[1].event_id, events[2].event_id]


async def test_remove_forgets_acknowledged_events_only(store: SqliteGatewayStore) -> None:
    events = [make_visit() for _ in range(3)]
    await store.append_events(events, now_s=T0)

    removed = await store.remove([events[0].event_id, events[2].event_id])

    assert removed == 2
    assert [e.event_id for e in await store.pending(limit=10)] == [events[1].event_id]
    assert await store.count() == 1


async def test_remove_of_unknown_or_already_removed_ids_counts_nothing(
    store: SqliteGatewayStore,
) -> None:
    event = make_visit()
    await store.append_events([event], now_s=T0)
    assert await store.remove([event.event_id]) == 1

    assert await store.remove([event.event_id, "ev-never-stored"]) == 0
    assert await store.remove([]) == 0
    assert await store.count() == 0


async def test_duplicate_event_id_keeps_its_place_and_first_payload(
    store: SqliteGatewayStore,
) -> None:
    first = make_visit(rssi_dbm=-60.0)
    other = make_visit()
    again = make_visit(event_id=first.event_id, rssi_dbm=-75.0)
    await store.append_events([first, other], now_s=T0)

    await store.append_events([again], now_s=T0 + 5)

    entries = await store.pending(limit=10)
    assert [wire.decode(e.payload) for e in entries] == [first, other]
    assert await store.count() == 2


async def test_duplicate_within_one_batch_is_stored_once(store: SqliteGatewayStore) -> None:
    first = make_visit(rssi_dbm=-60.0)
    again = make_visit(event_id=first.event_id, rssi_dbm=-75.0)

    await store.append_events([first, again], now_s=T0)

    assert [wire.decode(e.payload) for e in await store.pending(limit=10)] == [first]


async def test_outbox_survives_close_and_reopen(db_path: Path) -> None:
    visit = make_visit()
    offer = make_offer_trigger(visit_id=visit.event_id)
    acked = make_visit()
    store = await SqliteGatewayStore.open(db_path)
    await store.append_events([acked, visit, offer], now_s=T0)
    await store.remove([acked.event_id])
    await store.close()

    reopened = await SqliteGatewayStore.open(db_path)
    try:
        entries = await reopened.pending(limit=10)
    finally:
        await reopened.close()

    assert [wire.decode(e.payload) for e in entries] == [visit, offer]


async def test_events_appended_after_a_restart_queue_behind_the_old_ones(db_path: Path) -> None:
    before = make_visit()
    after = make_visit()
    store = await SqliteGatewayStore.open(db_path)
    await store.append_events([before], now_s=T0)
    await store.close()

    reopened = await SqliteGatewayStore.open(db_path)
    try:
        await reopened.append_events([after], now_s=T0 + 60)
        entries = await reopened.pending(limit=10)
    finally:
        await reopened.close()

    assert [e.event_id for e in entries] == [before.event_id, after.event_id]


# --- Offer history --------------------------------------------------------------------------------


async def test_offer_triggers_are_recorded_in_the_history(store: SqliteGatewayStore) -> None:
    visit = make_visit(member="m-00001")
    offer = make_offer_trigger(member="m-00001", campaign="bakery", ts=T0 + 10)
    await store.append_events([visit, offer], now_s=T0)

    history = await store.load_history()

    assert history.last_by_campaign == {("m-00001", "bakery"): T0 + 10}
    assert history.last_any == {"m-00001": T0 + 10}


async def test_history_keeps_the_latest_offer_per_member_and_campaign(
    store: SqliteGatewayStore,
) -> None:
    await store.append_events(
        [make_offer_trigger(member="m-00001", campaign="bakery", ts=T0 + 100)], now_s=T0
    )
    # An older trigger arriving later (e.g. replayed) must not shorten the cooldown.
    await store.append_events(
        [make_offer_trigger(member="m-00001", campaign="bakery", ts=T0 + 50)], now_s=T0
    )
    await store.append_events(
        [make_offer_trigger(member="m-00001", campaign="gold-points", ts=T0 + 200)], now_s=T0
    )

    history = await store.load_history()

    assert history.last_by_campaign == {
        ("m-00001", "bakery"): T0 + 100,
        ("m-00001", "gold-points"): T0 + 200,
    }
    assert history.last_any == {"m-00001": T0 + 200}


async def test_history_survives_restart_and_acks(db_path: Path) -> None:
    offer = make_offer_trigger(member="m-00007", campaign="bakery", ts=T0)
    store = await SqliteGatewayStore.open(db_path)
    await store.append_events([offer], now_s=T0)
    await store.remove([offer.event_id])  # the bridge acked it: the cooldown must still hold
    await store.close()

    reopened = await SqliteGatewayStore.open(db_path)
    try:
        history = await reopened.load_history()
    finally:
        await reopened.close()

    assert history.last_by_campaign == {("m-00007", "bakery"): T0}


async def test_every_offer_time_is_kept_for_the_caps_at_most_the_highest_cap(
    store: SqliteGatewayStore,
) -> None:
    """per_day / per_week count every offer, not only each campaign's last (issue 10)."""
    offers = [
        make_offer_trigger(member="m-00001", campaign=("bakery", "gold-points")[i % 2], ts=T0 + i)
        for i in range(MAX_OFFERS_PER_WEEK + 5)
    ]
    await store.append_events(offers[:3], now_s=T0)
    await store.append_events(offers[3:], now_s=T0)
    await store.append_events([offers[7]], now_s=T0)  # the same offer again: counted once
    await store.append_events([make_offer_trigger(member="m-00002", ts=T0)], now_s=T0)

    history = await store.load_history()

    assert list(history.recent("m-00001")) == [T0 + i for i in range(5, MAX_OFFERS_PER_WEEK + 5)]
    assert list(history.recent("m-00002")) == [T0]
    assert history.last_by_campaign[("m-00001", "bakery")] == T0 + MAX_OFFERS_PER_WEEK + 4


async def test_offer_times_and_campaign_history_are_purged_each_by_its_own_age(
    store: SqliteGatewayStore,
) -> None:
    week = 7 * 86_400.0
    await store.append_events(
        [
            make_offer_trigger(member="m-00001", campaign="bakery", ts=T0),
            make_offer_trigger(member="m-00001", campaign="gold-points", ts=T0 + week),
        ],
        now_s=T0,
    )
    now = T0 + week + 3600.0

    assert await store.purge_history(now - 30 * 86_400.0, now - week) == 0

    history = await store.load_history()
    assert list(history.recent("m-00001")) == [T0 + week]  # a week old: no cap counts it
    assert set(history.last_by_campaign) == {("m-00001", "bakery"), ("m-00001", "gold-points")}


async def test_visits_alone_leave_no_history(store: SqliteGatewayStore) -> None:
    await store.append_events([make_visit(), make_visit()], now_s=T0)

    history = await store.load_history()

    assert history.last_any == {} and history.last_by_campaign == {}


async def test_purge_history_drops_only_older_entries(store: SqliteGatewayStore) -> None:
    await store.append_events(
        [
            make_offer_trigger(member="m-00001", campaign="bakery", ts=T0),
            make_offer_trigger(member="m-00002", campaign="bakery", ts=T0 + 100),
            make_offer_trigger(member="m-00003", campaign="bakery", ts=T0 + 200),
        ],
        now_s=T0,
    )

    assert await store.purge_history(before_ts=T0 + 100) == 1

    history = await store.load_history()
    assert history.last_by_campaign == {
        ("m-00002", "bakery"): T0 + 100,
        ("m-00003", "bakery"): T0 + 200,
    }


def files_holding(directory: Path, needle: bytes) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file() and needle in p.read_bytes())


async def test_a_purged_member_is_gone_from_every_database_file(
    store: SqliteGatewayStore, db_path: Path
) -> None:
    gone, kept = b"m-forget-7f3a", b"m-keep-4c1b"
    old = make_offer_trigger(member=gone.decode(), campaign="bakery", ts=T0)
    recent = make_offer_trigger(member=kept.decode(), campaign="bakery", ts=T0 + 90_000)
    await store.append_events([old, recent], now_s=T0)
    await store.remove([old.event_id, recent.event_id])  # acknowledged by the bridge
    # Without this the test would prove nothing: the WAL holds the member's rows now.
    assert "gateway.sqlite-wal" in files_holding(db_path.parent, gone)

    assert await store.purge_history(before_ts=T0 + 90_000 - 86_400) == 1

    assert files_holding(db_path.parent, gone) == []  # zeroed in the database, WAL cut
    assert files_holding(db_path.parent, kept) == ["gateway.sqlite"]
    assert set((await store.load_history()).last_any) == {kept.decode()}


async def test_acknowledged_events_leave_the_wal_at_the_next_purge(
    store: SqliteGatewayStore, db_path: Path
) -> None:
    visit = make_visit(member="m-walked-in-91e2")
    await store.append_events([visit], now_s=T0)
    await store.remove([visit.event_id])
    assert files_holding(db_path.parent, b"m-walked-in-91e2") != []

    assert await store.purge_history(before_ts=T0) == 0  # no history to purge, the WAL is cut

    assert files_holding(db_path.parent, b"m-walked-in-91e2") == []


async def test_unacknowledged_events_are_never_purged(store: SqliteGatewayStore) -> None:
    """Events in the outbox are in transit, not history: a week offline loses none."""
    offer = make_offer_trigger(ts=T0)
    await store.append_events([offer], now_s=T0)

    await store.purge_history(before_ts=T0 + 7 * 86_400)

    assert [e.event_id for e in await store.pending(limit=10)] == [offer.event_id]


# --- Sync state -----------------------------------------------------------------------------------


async def test_save_and_load_sync_round_trip(store: SqliteGatewayStore) -> None:
    await store.save_sync("roster", 3, b'{"roster":3}')
    await store.save_sync("campaigns", 5, b'{"campaigns":5}')

    assert await store.load_sync("roster") == b'{"roster":3}'
    assert await store.load_sync("campaigns") == b'{"campaigns":5}'
    assert await store.load_sync("nothing-saved") is None


async def test_save_sync_replaces_the_previous_payload_and_survives_restart(
    db_path: Path,
) -> None:
    store = await SqliteGatewayStore.open(db_path)
    await store.save_sync("roster", 1, b"old")
    await store.save_sync("roster", 2, b"new")
    await store.close()

    reopened = await SqliteGatewayStore.open(db_path)
    try:
        loaded = await reopened.load_sync("roster")
    finally:
        await reopened.close()

    assert loaded == b"new"


# --- Schema and opening ---------------------------------------------------------------------------


async def test_new_database_is_in_wal_mode_with_the_current_schema_version(
    store: SqliteGatewayStore, db_path: Path
) -> None:
    assert pragma(db_path, "journal_mode") == "wal"
    assert pragma(db_path, "user_version") == SCHEMA_VERSION
    assert SCHEMA_VERSION >= 1


async def test_reopening_a_current_database_keeps_its_version_and_data(db_path: Path) -> None:
    event = make_visit()
    store = await SqliteGatewayStore.open(db_path)
    await store.append_events([event], now_s=T0)
    await store.close()

    reopened = await SqliteGatewayStore.open(db_path)
    try:
        assert await reopened.count() == 1
    finally:
        await reopened.close()
    assert pragma(db_path, "user_version") == SCHEMA_VERSION


async def open_expecting_failure(path: Path) -> None:
    """Open `path`; should it open after all, close it so the test fails without leaking a thread."""
    before = set(threading.enumerate())
    try:
        store = await SqliteGatewayStore.open(path)
        await store.close()
    finally:
        # After a failed connect aiosqlite stops its worker thread without waiting for it; the
        # thread then reports back to this loop, so keep the loop running until it has.
        async with asyncio.timeout(GUARD_S):
            # No event to wait on: the thread is aiosqlite's, so poll it.
            while any(t.is_alive() for t in threading.enumerate() if t not in before):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.sleep(0)


def make_newer_database(path: Path, version: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


async def test_database_from_newer_software_is_refused_with_what_to_do(db_path: Path) -> None:
    make_newer_database(db_path, SCHEMA_VERSION + 1)

    with pytest.raises(StorageError) as excinfo:
        await open_expecting_failure(db_path)

    message = str(excinfo.value)
    assert str(db_path) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert "upgrade Threshold or restore the previous database" in message
    # Refusing must not have touched the newer database.
    assert pragma(db_path, "user_version") == SCHEMA_VERSION + 1


async def test_path_under_a_regular_file_is_a_storage_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("not a directory")
    path = not_a_dir / "gateway.db"

    with pytest.raises(StorageError) as excinfo:
        await open_expecting_failure(path)

    assert str(path) in str(excinfo.value)


async def test_path_that_is_a_directory_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    path.mkdir()

    with pytest.raises(StorageError) as excinfo:
        await open_expecting_failure(path)

    assert str(path) in str(excinfo.value)


async def test_a_file_that_is_not_a_database_is_moved_aside_and_a_new_one_made(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gateway.sqlite"
    garbage = b"this is not an SQLite database, it is a text file" * 100
    path.write_bytes(garbage)

    store = await SqliteGatewayStore.open(path, wall_clock=lambda: T0)
    try:
        assert await store.count() == 0
        assert await store.load_sync("roster") is None  # roster version 0: the bridge resends
    finally:
        await store.close()

    aside = tmp_path / f"gateway.sqlite.corrupt-{STAMP}"
    assert aside.read_bytes() == garbage
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    assert str(path) in message and str(aside) in message and "\n" not in message
    assert "unacknowledged events in it are lost" in message
    assert "resynced from the bridge" in message


def test_a_database_is_moved_aside_with_its_wal_and_shm_never_over_an_earlier_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.sqlite"
    for round in (1, 2):
        for name in ("gateway.sqlite", "gateway.sqlite-wal", "gateway.sqlite-shm"):
            (tmp_path / name).write_text(f"{name} {round}")

        aside = move_aside(path, T0)

        suffix = "" if round == 1 else "-2"
        assert aside == tmp_path / f"gateway.sqlite.corrupt-{STAMP}{suffix}"
        for end in ("", "-wal", "-shm"):
            moved = tmp_path / f"gateway.sqlite.corrupt-{STAMP}{suffix}{end}"
            assert moved.read_text() == f"gateway.sqlite{end} {round}"
        assert not path.exists()


async def test_a_damaged_database_is_moved_aside_saying_how_many_events_were_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gateway.sqlite"
    store = await SqliteGatewayStore.open(path)
    await store.append_events([make_visit() for _ in range(400)], now_s=T0)
    await store.cut_wal()
    await store.close()
    with path.open("r+b") as f:  # scribble over the outbox's root page (page 2)
        f.seek(4096 + 12)
        f.write(b"\xff" * 300)

    store = await SqliteGatewayStore.open(path, wall_clock=lambda: T0)
    try:
        assert await store.count() == 0
    finally:
        await store.close()

    assert (tmp_path / f"gateway.sqlite.corrupt-{STAMP}").exists()
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "quick_check" in record.getMessage() or "malformed" in record.getMessage()
    assert "unacknowledged events in it are lost" in record.getMessage()


# --- Migration 2: no roster in clear ----------------------------------------------------------


def read_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def make_v1_database(path: Path, roster: bytes) -> None:
    """A gateway database as 0.1.0 before sealing left it: the roster as clear JSON."""
    from edge.adapters.sqlite_store import _MIGRATIONS

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(_MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO sync_state (kind, version, payload) VALUES ('roster', 7, ?)", (roster,)
    )
    conn.execute(
        "INSERT INTO sync_state (kind, version, payload) VALUES ('campaigns', 2, ?)",
        (b'{"campaigns":2}',),
    )
    conn.commit()
    conn.close()


async def test_migration_2_erases_the_clear_roster_of_a_v1_database_from_the_file(
    db_path: Path,
) -> None:
    key = bytes.fromhex("8e1f5c2a9b7d4e3f60718293a4b5c6d7")
    roster = wire.encode(
        wire.RosterSync("store-001", 7, (wire.RosterDevice("d-1", "m-1", "gold", key, 10),))
    )
    make_v1_database(db_path, roster)

    store = await SqliteGatewayStore.open(db_path)
    try:
        assert await store.load_sync("roster") is None
        assert await store.load_sync("campaigns") == b'{"campaigns":2}'  # kept: no secrets
        while_open = read_files(db_path.parent)  # the database, its WAL and shared memory
    finally:
        await store.close()

    assert pragma(db_path, "user_version") == SCHEMA_VERSION == 5
    for name, data in (while_open | read_files(db_path.parent)).items():
        assert key.hex().encode() not in data, f"the old roster's key is still in {name}"


async def test_migration_3_seeds_the_offer_times_from_a_v2_history(db_path: Path) -> None:
    """A gateway upgraded mid-week counts at least the offers its old history kept."""
    from edge.adapters.sqlite_store import _MIGRATIONS

    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path)
    for number, migration in enumerate(_MIGRATIONS[:2]):
        conn.executescript(f"BEGIN; {migration}; PRAGMA user_version = {number + 1}; COMMIT;")
    conn.executemany(
        "INSERT INTO offer_history (member, campaign, last_ts) VALUES (?,?,?)",
        [("m-1", "bakery", T0), ("m-1", "gold-points", T0 + 60), ("m-2", "bakery", T0)],
    )
    conn.commit()
    conn.close()

    store = await SqliteGatewayStore.open(db_path)
    try:
        history = await store.load_history()
    finally:
        await store.close()

    assert list(history.recent("m-1")) == [T0, T0 + 60] and list(history.recent("m-2")) == [T0]
    assert history.last_any == {"m-1": T0 + 60, "m-2": T0}
    assert pragma(db_path, "user_version") == SCHEMA_VERSION >= 3


# --- Checkpoints never race an open statement ------------------------------------------------------


async def test_wal_cuts_under_concurrent_reads_and_writes_never_find_the_table_locked(
    store: SqliteGatewayStore,
) -> None:
    # Before each read fetched in one hop under the store's lock, a purge's TRUNCATE checkpoint
    # landing between two fetches of `pending` failed with "database table is locked" (about
    # 3 in 4 purges here).
    await store.append_events([make_visit() for _ in range(500)], now_s=T0)
    appended = 0

    async def read() -> None:
        for _ in range(30):
            assert len(await store.pending(limit=400)) == 400
            await store.load_history()

    async def write() -> None:
        nonlocal appended
        for _ in range(30):
            await store.append_events([make_offer_trigger()], now_s=T0)
            appended += 1

    async def purge() -> None:
        for _ in range(100):
            await store.remove([make_visit().event_id])  # deletes nothing, but asks for a cut
            await store.purge_history(T0 - 10)
            await asyncio.sleep(0)

    async with asyncio.timeout(GUARD_S):
        await asyncio.gather(read(), write(), purge())

    assert await store.count() == 500 + appended
    assert await store.cut_wal()


async def test_the_database_and_its_directory_are_private_whatever_the_umask(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new" / "state" / "gateway.sqlite"
    umask = os.umask(0o022)
    try:
        opened = await SqliteGatewayStore.open(path)
        await opened.append_events([], 0.0)
        await opened.close()
        path.with_name("gateway.sqlite-wal").touch()
        (tmp_path / "new" / "state" / "gateway.sqlite-wal").chmod(0o644)
        path.chmod(0o644)  # an older release's file
        reopened = await SqliteGatewayStore.open(path)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
        await reopened.close()
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert modes["gateway.sqlite"] == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes


# --- Each campaign's offers: per-member caps and budgets across a restart (issue 11) ---------------


async def test_every_campaign_offer_survives_a_restart_for_caps_and_budgets(db_path: Path) -> None:
    """Not only each campaign's last offer: every one, by member and by campaign."""
    offers = [
        make_offer_trigger(member="m-00001", campaign="promo", ts=T0),
        make_offer_trigger(member="m-00001", campaign="promo", ts=T0 + 600),
        make_offer_trigger(member="m-00002", campaign="promo", ts=T0 + 60),
        make_offer_trigger(member="m-00002", campaign="bakery", ts=T0 + 120),
    ]
    store = await SqliteGatewayStore.open(db_path)
    await store.append_events(offers[:2], now_s=T0)
    await store.append_events(offers[2:], now_s=T0)
    await store.append_events(offers[1:2], now_s=T0)  # stored twice (a retried batch): once
    await store.remove([o.event_id for o in offers])  # acknowledged: the caps still count them
    await store.close()

    reopened = await SqliteGatewayStore.open(db_path)
    try:
        history = await reopened.load_history()
    finally:
        await reopened.close()

    assert history.campaign_times == {
        ("m-00001", "promo"): [T0, T0 + 600],
        ("m-00002", "promo"): [T0 + 60],
        ("m-00002", "bakery"): [T0 + 120],
    }
    assert history.budget_times == {"promo": [T0, T0 + 60, T0 + 600], "bakery": [T0 + 120]}


async def test_campaign_offers_are_kept_eight_days_and_purged_by_their_own_age(
    store: SqliteGatewayStore, db_path: Path
) -> None:
    day = 86_400.0
    old = make_offer_trigger(member="m-old-5d2c", campaign="promo", ts=T0)
    recent = make_offer_trigger(member="m-00002", campaign="promo", ts=T0 + 7 * day)
    await store.append_events([old, recent], now_s=T0)
    await store.remove([old.event_id, recent.event_id])
    now = T0 + 8 * day + 60

    await store.purge_history(now - 30 * day, now - 7 * day, now - 8 * day)

    history = await store.load_history()
    assert history.campaign_times == {("m-00002", "promo"): [T0 + 7 * day]}
    assert history.budget_times == {"promo": [T0 + 7 * day]}
    # The refresh memory (30 days) still knows the old offer; no cap counts it any more.
    assert set(history.last_by_campaign) == {("m-old-5d2c", "promo"), ("m-00002", "promo")}
    # Gone from the files too once the refresh memory lets it go.
    await store.purge_history(T0 + 1, now - 7 * day, now - 8 * day)
    assert files_holding(db_path.parent, b"m-old-5d2c") == []


async def test_a_retention_shorter_than_a_day_forgets_the_member_but_not_the_spent_budget(
    db_path: Path,
) -> None:
    # [privacy] retention_s = 1 hour, as edge/app.py purges with it: after a restart the day's
    # budget share must still be spent, and nobody's id may be left behind.
    hour = 3600.0
    offers = [
        make_offer_trigger(member="m-morning-6a1f", campaign="promo", ts=T0),
        make_offer_trigger(member="m-morning-6a1f", campaign="promo", ts=T0 + 60),
        make_offer_trigger(member="m-lunch-0c3d", campaign="promo", ts=T0 + 3 * hour),
    ]
    store = await SqliteGatewayStore.open(db_path)
    try:
        await store.append_events(offers, now_s=T0)
        await store.remove([o.event_id for o in offers])
        now = T0 + 3 * hour + 60
        await store.purge_history(now - hour, now - hour, now - hour, now - 8 * 86_400.0)
        await store.purge_history(now - hour, now - hour, now - hour, now - 8 * 86_400.0)
    finally:
        await store.close()

    reopened = await SqliteGatewayStore.open(db_path)
    try:
        history = await reopened.load_history()
    finally:
        await reopened.close()
    assert history.budget_times == {"promo": [T0, T0 + 60, T0 + 3 * hour]}
    assert history.campaign_times == {("m-lunch-0c3d", "promo"): [T0 + 3 * hour]}
    assert files_holding(db_path.parent, b"m-morning-6a1f") == []


async def test_migration_5_seeds_each_campaign_s_offers_from_a_v4_history(db_path: Path) -> None:
    """A gateway upgraded mid-day counts at least the offers its old history kept, so its budget
    and the members' campaign caps do not start again from zero."""
    from edge.adapters.sqlite_store import _MIGRATIONS

    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path)
    for number, migration in enumerate(_MIGRATIONS[:4]):
        conn.executescript(f"BEGIN; {migration}; PRAGMA user_version = {number + 1}; COMMIT;")
    conn.executemany(
        "INSERT INTO offer_history (member, campaign, last_ts) VALUES (?,?,?)",
        [("m-1", "promo", T0), ("m-1", "bakery", T0 + 60), ("m-2", "promo", T0 + 120)],
    )
    conn.commit()
    conn.close()

    store = await SqliteGatewayStore.open(db_path)
    try:
        history = await store.load_history()
    finally:
        await store.close()

    assert history.budget_times == {"promo": [T0, T0 + 120], "bakery": [T0 + 60]}
    assert history.campaign_times[("m-1", "bakery")] == [T0 + 60]
    assert pragma(db_path, "user_version") == SCHEMA_VERSION >= 5
