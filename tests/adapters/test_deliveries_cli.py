"""`cloud-bridge deliveries` (pending offers and dead letters) and `deliveries retry` on a real
SQLite file."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from cloud_bridge.cli import main

NOW = time.time()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "loyalty.db"
    assert main(["seed", str(path), "--members", "2", "--store", "store-001"]) == 0
    rows = [
        # offer id, channel, delivery, expires_at, attempts, last_error
        ("ev-dead-valid", "webhook", "dead", NOW + 3600, 1, "permanent: HTTP 400: bad token"),
        ("ev-dead-over", "webhook", "dead", NOW - 10, 7, "validity ran out after 7 attempts"),
        ("ev-waiting", "webhook", "pending", NOW + 3600, 2, "HTTP 503"),
        ("ev-mqtt", "mqtt", "pending", NOW + 3600, 0, None),
        ("ev-done", "webhook", "sent", NOW + 3600, 1, None),
    ]
    with sqlite3.connect(path) as conn:
        for i, (offer_id, channel, delivery, expires_at, attempts, error) in enumerate(rows):
            conn.execute(
                "INSERT INTO events (event_id, kind, store_id, gateway, received_at) "
                "VALUES (?, 'offer', 'store-001', 'door-1', ?)",
                (offer_id, NOW),
            )
            conn.execute(
                "INSERT INTO offers (event_id, visit_id, member_id, campaign_id, store_id, "
                "gateway, ts, detected_at, recorded_at, delivery, shopper_token, expires_at, "
                "channel, attempts, last_error, next_attempt_at) "
                "VALUES (?, 'ev-v', 'm-00000', 'welcome-bakery', 'store-001', 'door-1', ?, ?, ?, "
                "?, 'tok', ?, ?, ?, ?, ?)",
                (offer_id, NOW, NOW, NOW + i, delivery, expires_at, channel, attempts, error, None),
            )
    return path


def state(db: Path, offer_id: str) -> tuple[str, float | None]:
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT delivery, next_attempt_at FROM offers WHERE event_id = ?", (offer_id,)
        ).fetchone()
    assert found is not None
    return found[0], found[1]


def test_deliveries_lists_pending_offers_and_dead_letters_with_the_last_error(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["deliveries", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 dead offer(s)")
    listed = [line.split(" ")[0] for line in out.splitlines() if line.startswith("ev-")]
    assert listed == ["ev-mqtt", "ev-waiting", "ev-dead-over", "ev-dead-valid"]  # newest first
    assert "last error: permanent: HTTP 400: bad token" in out
    assert "cloud-bridge deliveries retry DATABASE OFFER_ID" in out

    assert main(["deliveries", str(db), "--dead", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["dead"] == 2
    assert [o["offer_id"] for o in listing["offers"]] == ["ev-dead-over", "ev-dead-valid"]
    assert listing["offers"][1]["last_error"] == "permanent: HTTP 400: bad token"
    assert listing["offers"][1]["channel"] == "webhook"


def test_retry_puts_a_dead_offer_that_is_still_valid_back_in_the_queue(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = time.time()
    assert main(["deliveries", "retry", str(db), "ev-dead-valid"]) == 0
    assert "pending again" in capsys.readouterr().out
    delivery, due = state(db, "ev-dead-valid")
    assert delivery == "pending" and due is not None and due >= before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["retry", "{db}", "ev-dead-over"], "OFFER_ID: ev-dead-over: its validity has ended"),
        (["retry", "{db}", "ev-waiting"], "ev-waiting: is not dead"),
        (["retry", "{db}", "ev-nothing"], "ev-nothing: no such offer"),
        (["retry", "{db}", "Not An Id"], "OFFER_ID: "),
        (["retry", "{db}"], "retry: give DATABASE and OFFER_ID"),
        (["{db}", "extra"], "give one DATABASE"),
        (["{db}", "--limit", "0"], "--limit: must be >= 1"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_it(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    capsys.readouterr()
    assert main(["deliveries", *(a.replace("{db}", str(db)) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cloud-bridge deliveries: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert state(db, "ev-dead-over")[0] == "dead"


def test_a_missing_database_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deliveries", str(tmp_path / "nope.db")]) == 2
    assert "nope.db: no loyalty database there" in capsys.readouterr().err
