"""`cloud-bridge add-store --lat --lon`, `set-store-location` and `clones` on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.cli import main
from cloud_bridge.core.clones import GeoPoint
from edge.core import wire
from tests.factories import T0, as_sent, make_visit


def location(path: Path, store: str) -> GeoPoint | None:
    async def read() -> GeoPoint | None:
        records = await SqliteLoyaltyRecords.open(path, "demo-chain")
        try:
            return await records.store_location(store)
        finally:
            await records.close()

    return asyncio.run(read())


def test_a_store_is_added_with_its_location_and_moved_then_cleared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "loyalty.db")
    assert main(["create-db", db]) == 0

    assert main(["add-store", db, "store-042", "--lat", "51.5152", "--lon", "-0.1419"]) == 0
    assert "store store-042: added, at 51.51520, -0.14190" in capsys.readouterr().out
    assert location(Path(db), "store-042") == GeoPoint(51.5152, -0.1419)

    assert main(["set-store-location", db, "store-042", "--lat", "53.48", "--lon", "-2.24"]) == 0
    assert location(Path(db), "store-042") == GeoPoint(53.48, -2.24)

    assert main(["add-store", db, "store-042"]) == 0  # already there: the location stays
    assert "already there, at 53.48000, -2.24000" in capsys.readouterr().out

    assert main(["set-store-location", db, "store-042", "--clear"]) == 0
    assert location(Path(db), "store-042") is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add-store", "{db}", "store-1", "--lat", "95", "--lon", "0"], "--lat: latitude must be"),
        (["add-store", "{db}", "store-1", "--lat", "1"], "--lon: longitude is missing"),
        (["add-store", "{db}", "store-1", "--lat", "0", "--lon", "nan"], "--lon: longitude must"),
        (["set-store-location", "{db}", "store-001"], "give --lat and --lon, or --clear"),
        (
            ["set-store-location", "{db}", "store-001", "--clear", "--lat", "1", "--lon", "1"],
            "give --lat and --lon, or --clear",
        ),
        (
            ["set-store-location", "{db}", "store-404", "--lat", "1", "--lon", "1"],
            "store 'store-404' is not in",
        ),
    ],
)
def test_bad_locations_are_refused_saying_which_option_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    db = tmp_path / "loyalty.db"
    assert main(["create-db", str(db)]) == 0
    assert main(["add-store", str(db), "store-001"]) == 0
    capsys.readouterr()

    assert main([a.replace("{db}", str(db)) for a in argv]) == 2

    assert message in capsys.readouterr().err
    assert location(db, "store-001") is None


def test_seeded_demo_stores_have_locations(tmp_path: Path) -> None:
    db = tmp_path / "loyalty.db"
    assert main(["seed", str(db), "--members", "3", "--store", "store-001", "--store", "x-2"]) == 0
    london, manchester = location(db, "store-001"), location(db, "x-2")
    assert london is not None and manchester is not None and london != manchester


def record_clone(path: Path, device: str = "d-00000", member: str = "m-00000") -> int:
    """The device at London then Manchester a minute later; returns the alert's id."""

    async def record() -> int:
        records = await SqliteLoyaltyRecords.open(path, "demo-chain")
        try:
            sent = []
            for store, dt in (("store-001", 0.0), ("store-002", 60.0)):
                sent += await as_sent(
                    records,
                    wire.GatewayAddress("demo-chain", store, "door-1"),
                    make_visit(ts=T0 + dt, detected_at=T0 + dt, member=member, device=device),
                )
            outcome = await records.record(sent, T0 + 120)
        finally:
            await records.close()
        (alert,) = outcome.clone_alerts
        return alert.alert_id

    return asyncio.run(record())


def device_active(path: Path, device: str) -> bool:
    conn = sqlite3.connect(path)
    try:
        (active,) = conn.execute("SELECT active FROM devices WHERE id = ?", (device,)).fetchone()
    finally:
        conn.close()
    return bool(active)


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    db = tmp_path / "loyalty.db"
    stores = ["--store", "store-001", "--store", "store-002"]
    assert main(["seed", str(db), "--members", "3", "--seed", "1", *stores]) == 0
    return db


def test_clones_lists_open_alerts_and_revoke_revokes_the_device(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    revoked = record_clone(seeded, "d-00000", "m-00000")
    dismissed = record_clone(seeded, "d-00001", "m-00001")
    capsys.readouterr()

    assert main(["clones", str(seeded)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split(" [")[0] for line in listed] == [
        f"clone alert {revoked}",
        f"clone alert {dismissed}",
    ]
    assert "device d-00000 (member m-00000) seen at store-001 then store-002" in listed[0]

    assert main(["clones", str(seeded), "--revoke", str(revoked)]) == 0
    assert "device revoked" in capsys.readouterr().out
    assert main(["clones", str(seeded), "--dismiss", str(dismissed)]) == 0
    assert device_active(seeded, "d-00000") is False
    assert device_active(seeded, "d-00001") is True

    capsys.readouterr()
    assert main(["clones", str(seeded)]) == 0
    assert capsys.readouterr().out == "no open clone alerts\n"
    assert main(["clones", str(seeded), "--all", "--json"]) == 0
    statuses = {a["alert_id"]: a["status"] for a in json.loads(capsys.readouterr().out)}
    assert statuses == {revoked: "revoked", dismissed: "dismissed"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--revoke", "99"], "no clone alert 99: list them with"),
        (["--dismiss", "{closed}"], "clone alert {closed} is already dismissed"),
    ],
)
def test_acting_on_a_missing_or_closed_alert_says_so(
    seeded: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    closed = record_clone(seeded)
    assert main(["clones", str(seeded), "--dismiss", str(closed)]) == 0
    capsys.readouterr()

    assert main(["clones", str(seeded), *(a.format(closed=closed) for a in argv)]) == 2

    assert message.format(closed=closed) in capsys.readouterr().err
    assert device_active(seeded, "d-00000") is True


def test_clones_on_a_missing_database_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["clones", str(tmp_path / "nope.db")]) == 2
    assert "no loyalty database there" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()
