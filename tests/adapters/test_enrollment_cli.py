"""`cloud-bridge enroll / member / revoke / withdraw-consent / api-token` on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.adapters.data_key import default_data_key_file, load_data_key
from cloud_bridge.adapters.http_api import TokenFile
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.cli import main
from edge.core import wire

STORE = "store-001"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "loyalty.db"
    assert main(["seed", str(path), "--members", "10", "--seed", "1", "--store", STORE]) == 0
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def roster(path: Path) -> wire.RosterSync:
    async def read() -> wire.RosterSync:
        # The data key `seed` made beside the database.
        key = load_data_key(default_data_key_file(path), {})
        records = await SqliteLoyaltyRecords.open(path, "demo-chain", data_key=key)
        try:
            return await records.roster(STORE)
        finally:
            await records.close()

    return asyncio.run(read())


def test_enroll_then_member_then_revoke(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--database", str(database)]

    enrolled = run_json(
        capsys, "enroll", *db, "m-walk-in", "--kind", "tag", "--tier", "gold", "--consent"
    )

    assert enrolled["member"] == "m-walk-in" and enrolled["member_created"] is True
    assert len(bytes.fromhex(enrolled["identity_key"])) == 16
    assert enrolled["eid_counter"] == "unix_time_s_mod_2^32"
    assert enrolled["offer_topic"] == wire.shopper_offer_topic(
        "demo-chain", enrolled["shopper_token"]
    )
    (device,) = [d for d in roster(database).devices if d.member == "m-walk-in"]
    assert device.identity_key.hex() == enrolled["identity_key"]

    capsys.readouterr()
    assert main(["member", *db, "m-walk-in"]) == 0
    out = capsys.readouterr().out
    status = json.loads(out)
    assert status["tier"] == "gold" and status["consent"] is True
    assert status["devices"] == [
        {
            "device": enrolled["device"],
            "kind": "tag",
            "active": True,
            "enrolled_at": enrolled["enrolled_at"],
        }
    ]
    assert enrolled["identity_key"] not in out

    revoked = run_json(capsys, "revoke", *db, enrolled["device"])

    assert revoked["was_active"] is True
    assert all(d.member != "m-walk-in" for d in roster(database).devices)
    assert run_json(capsys, "member", *db, "m-walk-in")["devices"][0]["active"] is False


def test_withdraw_consent(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = run_json(capsys, "withdraw-consent", "--database", str(database), "m-00003")

    assert status["consent"] is False
    assert all(d.member != "m-00003" for d in roster(database).devices)


def test_enroll_refuses_without_consent(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = roster(database)

    assert (
        main(["enroll", "--database", str(database), "m-x", "--kind", "app", "--tier", "gold"]) == 2
    )

    assert "--consent is required" in capsys.readouterr().err
    assert roster(database) == before


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["member", "m-nobody"], "member 'm-nobody' is not in the loyalty records"),
        (["revoke", "d-nothing"], "device 'd-nothing' is not in the loyalty records"),
        (["enroll", "m-00000", "--kind", "app", "--consent"], "revoke it"),
        (["enroll", "m-new", "--kind", "app", "--consent"], "send 'tier'"),
        (["enroll", "m-new", "--kind", "app", "--tier", "Gold", "--consent"], "'tier'"),
        (["preferences", "show", "m-nobody"], "member 'm-nobody' is not in the loyalty records"),
        (["preferences", "set", "m-00000", "--interest", "garden", "--no-offers"], "'garden'"),
        (["preferences", "set", "m-00000", "--per-day", "1"], "'max_offers_per_week' is missing"),
        (["preferences", "set", "m-00000", "--per-day", "99", "--per-week", "1"], "0..24"),
    ],
)
def test_errors_say_what_to_do(
    database: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    command, *rest = argv

    assert main([command, "--database", str(database), *rest]) == 2

    assert says in capsys.readouterr().err


def test_preferences_are_set_shown_and_forgotten_and_reach_the_roster(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database", str(database)]
    assert run_json(capsys, "preferences", *db, "show", "m-00000") == {
        "member": "m-00000",
        "stated": False,
    }

    stated = run_json(
        capsys,
        "preferences",
        *db,
        "set",
        "m-00000",
        "--interest",
        "beauty",
        "--interest",
        "home",
        "--promotion-type",
        "event",
        "--per-day",
        "1",
        "--per-week",
        "3",
    )

    assert (stated["interests"], stated["promotion_types"]) == (["beauty", "home"], ["event"])
    assert (stated["max_offers_per_day"], stated["max_offers_per_week"]) == (1, 3)
    assert run_json(capsys, "preferences", *db, "show", "m-00000") == stated
    (device,) = [d for d in roster(database).devices if d.member == "m-00000"]
    assert device.prefs is not None and device.prefs.per_week == 3
    none = run_json(capsys, "preferences", *db, "set", "m-00000", "--no-offers")
    assert none["no_offers"] is True and none["interests"] == []
    forgotten = run_json(capsys, "preferences", *db, "forget", "m-00000")
    assert forgotten == {"member": "m-00000", "stated": False, "forgotten": True}


def test_commands_do_not_create_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.db"

    assert main(["member", "--database", str(missing), "m-00000"]) == 2

    assert "no loyalty database there" in capsys.readouterr().err
    assert not missing.exists()


def test_api_token_prints_a_token_once_and_stores_only_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens_file = tmp_path / "secrets" / "api-tokens"

    assert main(["api-token", "--tokens-file", str(tokens_file)]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["api-token", "--tokens-file", str(tokens_file)]) == 0
    second = capsys.readouterr().out.strip()

    assert first != second
    assert tokens_file.stat().st_mode & 0o777 == 0o600
    stored = tokens_file.read_text()
    assert first not in stored and second not in stored
    assert len(stored.splitlines()) == 2
    tokens = TokenFile(tokens_file)
    assert tokens.load() == 2
    assert tokens.verify(first) and tokens.verify(second)
    assert not tokens.verify(first + "x")


def test_add_store_creates_a_store_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cloud_bridge.cli import main as bridge_main

    database = tmp_path / "loyalty.sqlite"
    assert bridge_main(["create-db", str(database)]) == 0
    assert bridge_main(["add-store", str(database), "store-042"]) == 0
    assert bridge_main(["add-store", str(database), "store-042"]) == 0
    assert bridge_main(["add-store", str(database), "Store 42"]) == 2
    out = capsys.readouterr()
    assert "store store-042: added" in out.out and "already there" in out.out
    assert "not a valid id" in out.err
