"""`edge-gateway demo` as an installer runs it: exits 0 and writes the summary JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end_and_writes_its_summary(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
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
    assert summary["latency_ms_p50"] <= summary["latency_ms_p99"]
