"""`cloud-bridge add-store --lat --lon`, `set-store-location` and `clones` on a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.cli import main
from cloud_bridge.core.clones import GeoPoint


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
