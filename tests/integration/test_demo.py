"""`edge-gateway demo` as an installer runs it: exits 0 and writes the summary JSON.

Run with -v: its DEBUG log (every library's too, through the CLI's logging setup and its redaction
filter) must hold no identity key and no MAC address.

The default 8 minutes of shoppers (about 35 iPhone users and as many Android users walk in), at 60x,
then the default 14 for their visits to end.
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
    assert summary["offers_delivered"] == summary["offers_triggered"] > 0
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
