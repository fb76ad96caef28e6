"""One process per state directory: a second one stops at once, naming the first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.adapters.instance_lock import instance_lock
from edge.errors import AlreadyRunning
from edge.process import ExitCode, classify

HOLD = """
import sys, time
from pathlib import Path
from edge.adapters.instance_lock import instance_lock
with instance_lock(Path(sys.argv[1]), "edge-gateway"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_on_the_same_files_is_refused_naming_the_first(tmp_path: Path) -> None:
    lock = tmp_path / "edge-gateway.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with (
            pytest.raises(AlreadyRunning, match=rf"pid {holder.pid}\) is running") as refused,
            instance_lock(lock, "edge-gateway"),
        ):
            pass
        assert classify("start", refused.value).code is ExitCode.CONFIG  # not restarted
    finally:
        holder.kill()
        holder.communicate()  # reaped, its pipe closed
    # The kernel released it with the process: no stale lock after a crash.
    with instance_lock(lock, "edge-gateway"):
        assert lock.read_text() != ""
    assert lock.stat().st_mode & 0o777 == 0o600


def test_a_missing_directory_is_left_to_what_opens_it(tmp_path: Path) -> None:
    with instance_lock(tmp_path / "nowhere" / "x.lock", "cloud-bridge"):
        pass
    assert not (tmp_path / "nowhere").exists()
