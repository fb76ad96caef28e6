"""`edge-gateway demo` as an installer runs it: exits 0 and writes the summary JSON.

Run with -v: its DEBUG log (every library's too, through the CLI's logging setup and its redaction
filter) must hold no identity key and no MAC address.

The default 8 minutes of shoppers (about 35 iPhone users and as many Android users walk in), at 60x,
then the default 14 for their visits to end.

Issue 11: the marketer's campaigns (a holdout, a code pool, a schedule with a budget), offers to
iPhones by webhook through the demo's push service and the rest over MQTT, receipts, redemptions at
the till and the HTML report, each checked against the bridge's own database.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from cloud_bridge.adapters.data_key import DATA_KEY_FILE_NAME, load_data_key
from cloud_bridge.core.keyseal import IdentityKeySealer
from tests.integration.secrets_scan import Needles, find_secrets

MAC_RE = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{2}([:_-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}")


def test_demo_runs_end_to_end_and_writes_its_summary(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
            "-v",
            "demo",
            "--speed",
            "60",
            "--summary-json",
            str(summary_path),
            "--workdir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ENTRY" in result.stdout and "Summary" in result.stdout
    summary = json.loads(summary_path.read_text())
    assert summary["members_recognised"] > 0
    # Every offer arrived but the holdout's, which the bridge recorded and never sent.
    assert summary["offers_delivered"] == summary["offers_triggered"] - summary["offers_holdout"]
    assert summary["offers_delivered"] > 0
    assert summary["non_members_recognised"] == 0
    assert summary["passers_by_entered"] == 0
    # The broker refused the intruders (no certificate, plain TCP, a foreign CA's certificate).
    assert (summary["intruders_refused"], summary["intruders_admitted"]) == (3, 0)
    assert result.stdout.count("REFUSED") == 3 and "ADMITTED" not in result.stdout
    assert summary["latency_ms_p50"] <= summary["latency_ms_p99"]

    # iPhones check in: recognised through the verifier, at least 90 % of the Android rate.
    by_platform = summary["by_platform"]
    assert set(by_platform) == {"android", "ios", "tag"}
    rate = {p: c["recognised"] / c["entered"] for p, c in by_platform.items()}
    assert by_platform["ios"]["entered"] > 20 and by_platform["android"]["entered"] > 20
    assert rate["ios"] >= 0.9 * rate["android"]
    assert summary["checkins"]["accepted"] > 1000
    # The only refusals: writes with a challenge that expired while the app slept (then redone).
    assert set(summary["checkins"]["refused"]) == {"bad_tag"}
    assert re.search(r"ENTRY .* ios ", result.stdout) and re.search(
        r"ENTRY .* android ", result.stdout
    )
    # Every stated preference honoured, as the shoppers' apps judge the offers they got.
    assert summary["members_stating_preferences"] > 150
    assert summary["offers_against_preferences"] == 0
    assert summary["offers_over_frequency_cap"] == 0
    # The whole visit: ends reported, the median time in store within 10 % of the truth's.
    assert summary["visits_ended"] > 0.5 * summary["members_recognised"]
    measured, truth = summary["time_in_store_s_p50"], summary["time_in_store_s_p50_truth"]
    assert abs(measured - truth) <= 0.1 * truth
    assert re.search(r"EXIT .* in store \d+ min \d\d s, left at", result.stdout)

    check_campaigns_and_channels(summary, result.stdout, tmp_path / "demo")

    assert "DEBUG aiosqlite" in result.stderr  # the libraries' DEBUG lines are in it
    needles = Needles()
    sealer = IdentityKeySealer(
        load_data_key(tmp_path / "demo" / DATA_KEY_FILE_NAME, {}).key, os.urandom
    )
    with contextlib.closing(sqlite3.connect(tmp_path / "demo" / "loyalty.sqlite")) as db:
        for ref, sealed in db.execute("SELECT id, sealed_key FROM devices"):
            needles.identity_key(sealer.open(ref, bytes(sealed)), ref)
    assert len(needles.binary) > 100
    assert find_secrets(result.stderr.encode(), needles) == set()
    assert MAC_RE.search(result.stderr) is None


def check_campaigns_and_channels(summary: dict[str, Any], stdout: str, workdir: Path) -> None:
    """Issue 11, the summary against the loyalty database the bridge wrote."""
    with contextlib.closing(sqlite3.connect(workdir / "loyalty.sqlite")) as db:
        # The marketer's changes through the API are in the records.
        assert db.execute("SELECT timezone FROM stores WHERE id = 'store-001'").fetchone() == (
            "Europe/London",
        )
        campaigns = {
            row[0]: row[1:]
            for row in db.execute(
                "SELECT id, promotion_type, holdout_pct, daily_budget, schedule FROM campaigns "
                "WHERE status = 'active'"
            )
        }
        assert campaigns["welcome-bakery"][:2] == ("discount", 30.0)
        assert campaigns["happy-hour-points"][0] == "points_multiplier"
        assert campaigns["happy-hour-points"][2] == 12 and campaigns["happy-hour-points"][3]
        assert campaigns["gift-with-purchase"][0] == "free_gift"
        (pool,) = db.execute(
            "SELECT count(*) FROM campaign_codes WHERE campaign_id = 'gift-with-purchase'"
        ).fetchone()
        assert pool == 400
        by_channel = dict(
            db.execute(
                "SELECT channel, count(*) FROM offers WHERE delivery IN ('sent', 'received') "
                "GROUP BY channel"
            ).fetchall()
        )
        # iPhones' offers went by webhook, every other platform's over MQTT.
        platforms = set(
            db.execute(
                "SELECT o.channel, v.platform FROM offers o JOIN visits v ON v.event_id = "
                "o.visit_id WHERE o.delivery != 'holdout'"
            ).fetchall()
        )
        holdout = db.execute(
            "SELECT campaign_id, delivery_payload, code FROM offers WHERE delivery = 'holdout'"
        ).fetchall()
        (redeemed,) = db.execute(
            "SELECT count(*) FROM redemptions r JOIN offers o ON o.event_id = r.offer_id "
            "WHERE r.source = 'pos' AND r.code = o.code AND o.campaign_id = 'gift-with-purchase'"
        ).fetchone()
        opened, dismissed = db.execute(
            "SELECT count(opened_at), count(dismissed_at) FROM offers"
        ).fetchone()
        budget_used = db.execute(
            "SELECT count(*) FROM offers WHERE campaign_id = 'happy-hour-points'"
        ).fetchone()[0]
    assert summary["offers_by_channel"] == by_channel
    assert by_channel["mqtt"] > 0 and by_channel["webhook"] > 0
    assert {p for c, p in platforms if c == "webhook"} == {"ios"}
    assert "ios" not in {p for c, p in platforms if c == "mqtt"}
    # The holdout: recorded, never sent, no code taken; nobody in it got the campaign.
    assert summary["offers_holdout"] == len(holdout) > 0
    assert {c for c, _, _ in holdout} == {"welcome-bakery"}
    assert all(payload is None and code is None for _, payload, code in holdout)
    assert summary["offers_holdout_received"] == 0
    # Each webhook offer reached the app once, through the push service.
    assert summary["webhook_offers_pushed"] == by_channel["webhook"]
    assert summary["webhook_offers_not_pushed_once"] == 0 and summary["webhook_refused"] == {}
    assert summary["receipts"] == {"opened": opened, "dismissed": dismissed}
    assert opened > 0 and dismissed > 0
    assert summary["receipts"] == summary["receipts_reported_by_apps"]
    assert summary["redemptions"] == redeemed > 0 and summary["redemptions_refused"] == {}
    assert 0 < budget_used <= 12  # the daily budget, never overspent
    # The report the marketer opens.
    report = Path(summary["report_html"])
    assert report == workdir / "report.html"
    assert report.stat().st_size == summary["report_html_bytes"] > 0
    html = report.read_text(encoding="utf-8")
    assert "<html" in html.lower() and "welcome-bakery" in html and "happy-hour-points" in html
    assert f"The marketer's report: {report}" in stdout
    for tag in ("MARKETER", "➜ PUSH", "➜ PHONE", "HOLDOUT", "REDEEMED"):
        assert tag in stdout
