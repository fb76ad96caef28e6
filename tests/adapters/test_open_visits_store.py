"""Open visits in the gateway's SQLite: written with their visit, refreshed, forgotten with their end,
read back after a real close and reopen, and a tampered table never stops a start."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from edge.adapters import sqlite_store
from edge.adapters.sqlite_store import SqliteGatewayStore
from edge.core import wire
from edge.core.visits import OpenVisit
from tests.factories import T0, make_visit


def open_visit(visit: wire.Visit, last_heard_s: float = T0 + 100) -> OpenVisit:
    return OpenVisit(
        visit.event_id, visit.member, visit.device, "tag", T0, last_heard_s - 5, last_heard_s
    )


def visit_end(visit: wire.Visit, ts: float = T0 + 95) -> wire.VisitEnd:
    return wire.VisitEnd(
        f"end-{visit.event_id}",
        visit.event_id,
        ts,
        ts + 300,
        visit.member,
        visit.device,
        T0,
        ts - T0,
        "timeout",
        "tag",
    )


def raw_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT * FROM open_visits ORDER BY visit_id").fetchall()
    conn.close()
    return rows


async def test_an_open_visit_outlives_a_restart_and_leaves_with_its_end(db_path: Path) -> None:
    visit, other = make_visit(), make_visit()
    store = await SqliteGatewayStore.open(db_path)
    try:
        await store.append_events([visit, other], T0, [open_visit(visit), open_visit(other)])
        await store.save_open_visits([], [open_visit(visit, T0 + 250)])  # heard since
    finally:
        await store.close()

    store = await SqliteGatewayStore.open(db_path)
    try:
        visits, dropped = await store.load_open_visits()
        assert dropped == 0
        assert sorted(visits, key=lambda v: v.visit_id) == sorted(
            [open_visit(visit, T0 + 250), open_visit(other)], key=lambda v: v.visit_id
        )
        # The end is stored, and the open visit forgotten, in one transaction.
        await store.append_events([visit_end(visit)], T0 + 600)
        assert [e.event_id for e in await store.pending(10)] == [
            visit.event_id,
            other.event_id,
            f"end-{visit.event_id}",
        ]
    finally:
        await store.close()
    assert [r[0] for r in raw_rows(db_path)] == [other.event_id]


async def test_a_refresh_does_not_bring_back_a_visit_that_has_ended(
    store: SqliteGatewayStore, db_path: Path
) -> None:
    visit = make_visit()
    await store.append_events([visit], T0, [open_visit(visit)])
    stale = open_visit(visit, T0 + 200)  # handed out to save before the end was stored
    await store.append_events([visit_end(visit)], T0 + 500)
    await store.save_open_visits([], [stale])
    assert raw_rows(db_path) == []
    assert await store.load_open_visits() == ([], 0)


def tamper(path: Path, rows: list[tuple[object, ...]]) -> None:
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO open_visits VALUES (?,?,?,?,?,?,?)", rows)
    conn.close()


async def test_rows_that_do_not_decode_are_dropped_named_and_counted(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = open_visit(make_visit())
    store = await SqliteGatewayStore.open(db_path)
    await store.append_events([], T0, [good])
    await store.close()
    tamper(
        db_path,
        [
            ("bad-time", "m-1", "d-1", "ios", "yesterday", T0, T0),
            ("bad-order", "m-2", "d-2", None, T0 + 9, T0, T0 + 10),
            ("bad-platform", "m-3", "d-3", "windows", T0, T0, T0),
            ("BAD ID", "m-4", "d-4", "tag", T0, T0, T0),
            ("bad-member", b"\x00" * 40, "d-5", "tag", T0, T0, T0),
            ("huge", "m-6", "d-6", "tag", T0, T0, 1e300),
        ],
    )

    store = await SqliteGatewayStore.open(db_path)
    try:
        visits, dropped = await store.load_open_visits()
        assert (visits, dropped) == ([good], 6)
        assert await store.load_open_visits() == ([good], 0)  # deleted: not read again
    finally:
        await store.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    named = [w for w in warnings if "open visit (row" in w]
    assert len(named) == 5  # the first few, one by one; then the count
    assert any("last_heard: 1e+300 is not a time" in w for w in named)
    assert any("entered_at: not a number (str 'yesterday')" in w for w in named)
    assert any(str(db_path) in w and "6 open visit(s) dropped" in w for w in warnings)


async def test_beyond_the_cap_the_latest_heard_are_kept(
    store: SqliteGatewayStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "MAX_OPEN_VISITS", 3)
    saved = [open_visit(make_visit(), T0 + 100 + i) for i in range(5)]
    await store.append_events([], T0, saved)
    visits, dropped = await store.load_open_visits()
    assert dropped == 2
    assert {v.visit_id for v in visits} == {v.visit_id for v in saved[2:]}
    assert await store.load_open_visits() == (visits, 0)


async def test_a_version_2_database_gains_open_visits_and_keeps_its_outbox(db_path: Path) -> None:
    from edge.adapters.sqlite_store import _MIGRATIONS

    visit = make_visit()
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.executescript(_MIGRATIONS[0])
    conn.executescript(_MIGRATIONS[1])
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        "INSERT INTO outbox (event_id, kind, payload, created_at) VALUES (?,?,?,?)",
        (visit.event_id, "visit", wire.encode(visit), T0),
    )
    conn.commit()
    conn.close()

    store = await SqliteGatewayStore.open(db_path)
    try:
        assert [e.event_id for e in await store.pending(10)] == [visit.event_id]
        assert await store.load_open_visits() == ([], 0)
        await store.append_events([], T0, [open_visit(visit)])
        assert await store.load_open_visits() == ([open_visit(visit)], 0)
    finally:
        await store.close()
