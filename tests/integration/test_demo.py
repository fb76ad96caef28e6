"""`edge-gateway demo` as an installer runs it: exits 0 and writes the summary JSON.

Run with -v: its DEBUG log (every library's too, through the CLI's logging setup and its redaction
filter) must hold no identity key and no MAC address.
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
            "--minutes",
            "4",
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
