"""`cloud-bridge campaign ...` on a real SQLite file: each change reaches the targeted stores'
campaign syncs with a new version; bad input exits 2 naming the field and writes nothing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.adapters.sqlite_records import SCHEMA_VERSION, SqliteLoyaltyRecords
from cloud_bridge.cli import main
from edge.core import wire

S1, S2 = "store-001", "store-002"
SEEDED = 9  # campaigns cloud_bridge/seed.py adds, every one for every store


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "loyalty.db"
    argv = ["seed", str(path), "--members", "5", "--seed", "1", "--store", S1, "--store", S2]
    assert main(argv) == 0
    return path


def syncs(path: Path) -> dict[str, wire.CampaignSync]:
    async def read() -> dict[str, wire.CampaignSync]:
        records = await SqliteLoyaltyRecords.open(path, "demo-chain")
        try:
            return {store: await records.campaigns(store) for store in (S1, S2)}
        finally:
            await records.close()

    return asyncio.run(read())


def ids(sync: wire.CampaignSync) -> set[str]:
    return {c.id for c in sync.campaigns}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv) if argv[0] == "store" else ["campaign", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def create(db: Path, *extra: str) -> list[str]:
    return [
        "create",
        str(db),
        "--id",
        "spring",
        "--title",
        "Spring sale",
        "--body",
        "20% off home",
        "--tiers",
        "gold,silver",
        "--promotion-type",
        "discount",
        "--interests",
        "home,beauty",
        "--cooldown-s",
        "7200",
        "--priority",
        "5",
        "--validity-s",
        "900",
        *extra,
    ]


def test_create_reaches_only_the_targeted_store_with_a_new_version(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = syncs(database)
    assert len(before[S1].campaigns) == SEEDED and "spring" not in ids(before[S1])

    code, out, _ = run(capsys, *create(database, "--store", S2))

    assert code == 0 and "spring" in out
    after = syncs(database)
    (spec,) = [c for c in after[S2].campaigns if c.id == "spring"]
    assert (spec.title, spec.body, spec.tiers, spec.cooldown_s, spec.priority) == (
        "Spring sale",
        "20% off home",
        ("gold", "silver"),
        7200.0,
        5,
    )
    assert (spec.promotion_type, spec.interests) == ("discount", ("home", "beauty"))
    assert after[S2].version > before[S2].version
    assert "spring" not in ids(after[S1])


def test_show_and_list_print_what_was_stored(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *create(database, "--store", S1, "--store", S2))[0] == 0

    code, out, _ = run(capsys, "show", str(database), "spring", "--json")
    shown = json.loads(out)
    listed = json.loads(run(capsys, "list", str(database), "--json")[1])

    assert code == 0
    assert {k: v for k, v in shown.items() if k not in ("updated_at", "created_at")} == {
        "id": "spring",
        "status": "active",
        "title": "Spring sale",
        "body": "20% off home",
        "tiers": ["gold", "silver"],
        "promotion_type": "discount",
        "interests": ["home", "beauty"],
        "cooldown_s": 7200.0,
        "priority": 5,
        "validity_s": 900.0,
        "stores": [S1, S2],
        "store_tags": [],
        "image_url": None,
        "deep_link": None,
        "code": None,
        "segments": [],
        "min_visits": None,
        "max_visits": None,
        "schedule": None,
        "per_member_day": None,
        "per_member_week": None,
        "daily_budget": None,
        "holdout_pct": 0.0,
        "revision": 1,
    }
    assert isinstance(shown["updated_at"], float) and shown["created_at"] == shown["updated_at"]
    assert len(listed) == SEEDED + 1 and shown in listed
    assert all(s.version and "spring" in ids(s) for s in syncs(database).values())
    code, out, _ = run(capsys, "list", str(database))
    assert code == 0 and "campaign spring (active, store-001, store-002): Spring sale" in out


def test_pause_resume_archive_move_it_in_and_out_of_the_sync(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *create(database))[0] == 0  # every store
    versions = [s.version for s in syncs(database).values()]

    steps: list[tuple[str, bool]] = [("pause", False), ("resume", True), ("archive", False)]
    for action, synced in steps:
        assert run(capsys, action, str(database), "spring")[0] == 0
        now = syncs(database)
        assert all(("spring" in ids(s)) == synced for s in now.values()), action
        assert all(s.version > v for s, v in zip(now.values(), versions, strict=True)), action
        versions = [s.version for s in now.values()]

    code, _, err = run(capsys, "resume", str(database), "spring")
    assert code == 2 and err.count("\n") == 1 and "status: " in err and "archived" in err
    assert "spring" not in ids(syncs(database)[S1])
    status = json.loads(run(capsys, "show", str(database), "spring", "--json")[1])["status"]
    assert status == "archived"


def test_update_changes_only_what_is_given(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *create(database, "--store", S1))[0] == 0
    before = syncs(database)

    code, _, _ = run(
        capsys, "update", str(database), "spring", "--title", "Summer sale", "--store", S2
    )

    assert code == 0
    after = syncs(database)
    (spec,) = [c for c in after[S2].campaigns if c.id == "spring"]
    assert (spec.title, spec.body, spec.priority) == ("Summer sale", "20% off home", 5)
    assert "spring" not in ids(after[S1])
    assert after[S1].version > before[S1].version and after[S2].version > before[S2].version

    assert run(capsys, "update", str(database), "spring", "--every-store")[0] == 0
    assert all("spring" in ids(s) for s in syncs(database).values())
    assert run(capsys, "update", str(database), "spring", "--promotion-type", "")[0] == 0
    (spec,) = [c for c in syncs(database)[S1].campaigns if c.id == "spring"]
    assert spec.promotion_type is None and spec.interests == ("home", "beauty")


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--title", ""], "title"),
        (["--tiers", "Gold"], "tiers[0]"),
        (["--promotion-type", "bogof"], "promotion_type"),
        (["--interests", "home,garden"], "interests[1]"),
        (["--cooldown-s", "-5"], "cooldown_s"),
        (["--validity-s", "0"], "validity_s"),
        (["--store", S1, "--store", "store-999"], "stores[1]"),
        (["--id", "Not An Id"], "id"),
        (["--hours", "09:00-12:00,11:00-13:00"], "schedule.hours[1]"),
        (["--hours", "09:00"], "schedule.hours[0]"),
        (["--days", "mon,mon"], "schedule.days[1]"),
        (["--days", "mon,8"], "schedule.days[1]"),
        (["--start", "2027-01-10", "--end", "2027-01-01"], "schedule.end"),
        (["--end", "2020-01-01"], "schedule.end"),
        (["--per-member-day", "-1"], "per_member_day"),
        (["--per-member-week", "-1"], "per_member_week"),
        (["--daily-budget", "-3"], "daily_budget"),
        (["--holdout-pct", "101"], "holdout_pct"),
        (["--holdout-pct", "nan"], "holdout_pct"),
        (["--min-visits", "5", "--max-visits", "2"], "min_visits"),
        (["--image-url", "http://cdn.example/a.png"], "image_url"),
        (["--deep-link", "offers/1"], "deep_link"),
        (["--code", "no spaces"], "code"),
        (["--segments", "new,vip"], "segments[1]"),
        (["--store-tag", "North"], "store_tags[0]"),
    ],
)
def test_bad_input_exits_2_naming_the_field_and_writes_nothing(
    database: Path, capsys: pytest.CaptureFixture[str], argv: list[str], field: str
) -> None:
    assert run(capsys, *create(database, "--id", "autumn"))[0] == 0
    before = syncs(database)
    listed = run(capsys, "list", str(database), "--json")[1]

    outcomes = [run(capsys, *create(database, *argv))]
    if argv[0] != "--id":  # update names the campaign as an argument, and it exists
        outcomes.append(run(capsys, "update", str(database), "autumn", *argv))

    for code, _, err in outcomes:
        assert code == 2
        assert err.count("\n") == 1 and f": {field}: " in err
    assert syncs(database) == before
    assert run(capsys, "list", str(database), "--json")[1] == listed


def test_unknown_and_duplicate_ids_exit_2(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *create(database))[0] == 0
    before = syncs(database)
    for argv in (
        create(database),
        ["show", str(database), "nope"],
        ["pause", str(database), "nope"],
        ["update", str(database), "nope", "--title", "x"],
        ["update", str(database), "spring"],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2 and err.count("\n") == 1, argv
        assert ": id: " in err or ": update: " in err, err
    assert syncs(database) == before


def test_a_version_9_database_gains_campaign_status_and_keeps_its_campaigns(
    tmp_path: Path,
) -> None:
    from cloud_bridge.adapters.sqlite_records import _MIGRATIONS

    path = tmp_path / "v9.db"
    conn = sqlite3.connect(path)
    for migration in _MIGRATIONS[:9]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 9")
    conn.execute("INSERT INTO stores (id, name) VALUES (?, ''), (?, '')", (S1, S2))
    conn.executemany(
        "INSERT INTO campaigns (id, store_id, title, body, tiers, cooldown_s, active) "
        "VALUES (?, ?, 't', 'b', 'gold', 60, ?)",
        [("everywhere", None, 1), ("only-s1", S1, 1), ("off", None, 0)],
    )
    conn.commit()
    conn.close()

    async def migrate() -> tuple[Any, ...]:
        records = await SqliteLoyaltyRecords.open(path, "demo-chain")
        try:
            (version,) = await records.connection.execute_fetchall("PRAGMA user_version")
            listed = {c.definition.id: c for c in await records.campaign_list()}
            synced = {s: ids(await records.campaigns(s)) for s in (S1, S2)}
            resumed = await records.set_campaign_status("off", "resume", 1.0)
            after = ids(await records.campaigns(S2))
        finally:
            await records.close()
        return version[0], listed, synced, resumed, after

    version, listed, synced, resumed, after = asyncio.run(migrate())

    assert version == SCHEMA_VERSION >= 10
    assert {i: (c.status, c.definition.stores) for i, c in listed.items()} == {
        "everywhere": ("active", ()),
        "only-s1": ("active", (S1,)),
        "off": ("paused", ()),
    }
    assert synced == {S1: {"everywhere", "only-s1"}, S2: {"everywhere"}}
    assert resumed.status == "active" and "off" in after


def test_every_new_field_reaches_the_targeted_stores_in_their_time_zone(
    database: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    before = syncs(database)
    code, out, _ = run(capsys, "store", "set", str(database), S2, "--timezone", "Europe/Paris")
    assert code == 0 and "Europe/Paris" in out
    code, out, _ = run(capsys, "store", "set", str(database), S2, "--tag", "north", "--tag", "mall")
    assert code == 0 and "mall, north" in out  # tags are kept sorted
    moved = syncs(database)
    assert moved[S1] == before[S1] and moved[S2].version > before[S2].version

    argv = create(
        database,
        "--store-tag",
        "north",
        "--image-url",
        "https://cdn.example/spring.png",
        "--deep-link",
        "acme://offers/spring",
        "--code",
        "SPRING-20",
        "--segments",
        "lapsed,new",
        "--min-visits",
        "1",
        "--max-visits",
        "9",
        "--start",
        "2027-03-01",
        "--end",
        "2027-04-01T20:00",
        "--days",
        "sat,7",
        "--hours",
        "10:00-13:00,15:00-24:00",
        "--per-member-day",
        "1",
        "--per-member-week",
        "2",
        "--daily-budget",
        "40",
        "--holdout-pct",
        "10",
    )
    assert run(capsys, *argv)[0] == 0
    after = syncs(database)
    assert "spring" not in ids(after[S1]) and after[S1].version == moved[S1].version
    paris = after[S2]
    spec = next(c for c in paris.campaigns if c.id == "spring")
    assert paris.timezone == "Europe/Paris"
    assert spec.schedule == wire.Schedule(
        datetime(2027, 2, 28, 23, 0, tzinfo=UTC).timestamp(),  # 2027-03-01T00:00+01:00
        datetime(2027, 4, 1, 18, 0, tzinfo=UTC).timestamp(),  # 20:00+02:00, after the DST change
        (6, 7),
        ((600, 780), (900, 1440)),
    )
    assert (spec.per_member_day, spec.per_member_week) == (1, 2)
    assert spec.gateway_budgets == () and spec.segments == ("new", "lapsed")

    shown = json.loads(run(capsys, "show", str(database), "spring", "--json")[1])
    assert shown["schedule"] == {
        "start": "2027-03-01",
        "end": "2027-04-01T20:00",
        "days": [6, 7],
        "hours": [["10:00", "13:00"], ["15:00", "24:00"]],
    }
    assert (shown["code"], shown["holdout_pct"], shown["daily_budget"]) == ("SPRING-20", 10.0, 40)
    text = run(capsys, "show", str(database), "spring")[1]
    assert "schedule: from 2027-03-01 to 2027-04-01T20:00, sat,sun, 10:00-13:00,15:00-24:00" in text
    listed = run(capsys, "list", str(database))[1]
    assert "campaign spring (active, tag north): Spring sale" in listed

    code, _, _ = run(
        capsys,
        "update",
        str(database),
        "spring",
        "--hours",
        "",
        "--end",
        "",
        "--clear",
        "daily-budget",
        "--clear",
        "code",
        "--clear",
        "segments",
    )
    assert code == 0
    shown = json.loads(run(capsys, "show", str(database), "spring", "--json")[1])
    assert shown["schedule"] == {"start": "2027-03-01", "end": None, "days": [6, 7], "hours": []}
    assert (shown["daily_budget"], shown["code"], shown["segments"]) == (None, None, [])
    assert shown["image_url"] == "https://cdn.example/spring.png"
    assert run(capsys, "update", str(database), "spring", "--clear", "schedule")[0] == 0
    assert json.loads(run(capsys, "show", str(database), "spring", "--json")[1])["schedule"] is None


def test_code_pools_from_a_file_all_or_none(
    database: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, *create(database))[0] == 0
    first = tmp_path / "codes.txt"
    first.write_text("# spring batch 1\nSPR-0001\n\n  SPR-0002  \nSPR-0003\n")
    code, out, _ = run(capsys, "codes", "add", str(database), "spring", str(first))
    assert code == 0 and "3 codes added; 3 codes, 0 given out, 3 free" in out

    clash = tmp_path / "clash.txt"
    clash.write_text("SPR-0004\nSPR-0005\nSPR-0002\n")
    code, _, err = run(capsys, "codes", "add", str(database), "spring", str(clash))
    assert code == 2 and err.count("\n") == 1
    assert (
        f"{clash} line 3: code 'SPR-0002' is already used by campaign 'spring'; codes are unique"
        in err
    )
    code, out, _ = run(capsys, "codes", str(database), "spring", "--json")
    assert code == 0 and json.loads(out) == {
        "campaign": "spring",
        "total": 3,
        "given_out": 0,
        "free": 3,
    }
    assert run(capsys, "codes", str(database), "autumn")[0] == 2
    assert run(capsys, "codes", "add", str(database), "spring")[0] == 2


def test_store_set_refuses_an_unknown_zone_or_store_and_changes_nothing(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = syncs(database)
    code, _, err = run(capsys, "store", "set", str(database), S1, "--timezone", "Europe/Lyon")
    assert code == 2 and err.startswith("cloud-bridge store set: timezone: ")
    code, _, err = run(capsys, "store", "set", str(database), "store-404", "--timezone", "UTC")
    assert code == 2 and "store-404" in err
    code, _, err = run(capsys, "store", "set", str(database), S1)
    assert code == 2
    assert syncs(database) == before
    code, out, _ = run(capsys, "store", "list", str(database), "--json")
    assert code == 0 and [s["timezone"] for s in json.loads(out)] == ["UTC", "UTC"]
