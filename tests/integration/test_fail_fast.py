"""Fail fast, restart clean: the real gateway and bridge processes end non-zero, with one line saying
why, when their database is deleted, made read-only or corrupted under them, or a loop fails; and
they speak systemd's notification protocol (READY=1, WATCHDOG=1 only while every loop progresses).

Root ignores mode bits, so `chmod 0400` does not stop a root process from writing: the gateway and
the bridge look at the mode themselves (a file nobody may write is read-only by intent) and, as a
second case, `chattr +i` makes writes really fail (EPERM) where the file system supports it.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.process import ExitCode
from tests.fakes.broker import MosquittoProcess
from tests.integration.processes import (
    bridge_config,
    gateway_config,
    notify_socket,
    running,
)

EXIT_WITHIN_S = 60.0
PAGE = 4096


def database_of(module: str, config: Path) -> Path:
    if module == "edge":
        return config.parent / "gw" / "gateway.sqlite"
    return config.parent / "db" / "loyalty.sqlite"


def configure(module: str, tmp_path: Path, broker: MosquittoProcess) -> Path:
    work = tmp_path / module
    return gateway_config(work, broker) if module == "edge" else bridge_config(work, broker)


def delete(db: Path) -> None:
    db.unlink()


def make_read_only(db: Path) -> None:
    db.chmod(0o400)
    db.parent.chmod(0o500)


def corrupt(db: Path) -> None:
    """Garbage over every page but the first (the header stays valid: only reading the pages tells)."""
    size = db.stat().st_size
    assert size > PAGE, "a database of one page cannot be corrupted past its header"
    with db.open("r+b") as f:
        f.seek(PAGE)
        f.write(os.urandom(size - PAGE))
        f.flush()
        os.fsync(f.fileno())


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """`chattr +i` on a file, undone after the test; skips where chattr or the flag is unavailable."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: cannot make a file immutable")
    done: list[Path] = []

    def apply(path: Path) -> None:
        result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"chattr +i refused on this file system: {result.stderr.strip()}")
        done.append(path)

    yield apply
    for path in done:
        subprocess.run(["chattr", "-i", str(path)], check=False)


@pytest.mark.parametrize("module", ["edge", "cloud_bridge"])
@pytest.mark.parametrize(
    ("damage", "says"),
    [(delete, "was deleted"), (make_read_only, "read-only"), (corrupt, "corrupt")],
    ids=["deleted", "read-only", "corrupted"],
)
def test_a_database_damaged_under_a_running_process_ends_it_non_zero(
    tmp_path: Path,
    mosquitto: MosquittoProcess,
    module: str,
    damage: Callable[[Path], None],
    says: str,
) -> None:
    config = configure(module, tmp_path, mosquitto)
    db = database_of(module, config)
    with notify_socket(tmp_path) as notify, running(module, config, notify) as process:
        notify.wait_for("READY=1", 60)
        time.sleep(1.0)  # some work on the database first
        damage(db)
        damaged = time.monotonic()
        code = process.wait(EXIT_WITHIN_S, notify)
        took = time.monotonic() - damaged
    try:
        assert code == ExitCode.STORAGE, process.output()[-3000:]
        assert says in process.last_line(), process.output()[-3000:]
        assert str(db) in process.last_line()
        assert took < EXIT_WITHIN_S
        assert any("STOPPING=1" in m for m in notify.messages())
    finally:
        db.parent.chmod(0o700)


@pytest.mark.parametrize("module", ["edge", "cloud_bridge"])
def test_an_immutable_database_ends_a_running_process_non_zero(
    tmp_path: Path,
    mosquitto: MosquittoProcess,
    module: str,
    immutable: Callable[[Path], None],
) -> None:
    """Root's writes really fail on an immutable file (EPERM): the read-only case that bites root."""
    config = configure(module, tmp_path, mosquitto)
    db = database_of(module, config)
    with notify_socket(tmp_path) as notify, running(module, config, notify) as process:
        notify.wait_for("READY=1", 60)
        immutable(db)
        code = process.wait(EXIT_WITHIN_S)
    assert code == ExitCode.STORAGE, process.output()[-3000:]
    assert "read-only" in process.last_line()


# An exception thrown into a loop once the trigger file exists (a bug, as far as the process knows).
_GATEWAY_BUG = """
import os
from edge.services.uplink import Uplink
_drain = Uplink.drain_once
async def drain_once(self):
    if os.path.exists(os.environ["THRESHOLD_TEST_TRIGGER"]):
        raise RuntimeError("injected failure in the uplink")
    return await _drain(self)
Uplink.drain_once = drain_once
"""
_BRIDGE_BUG = """
import os
from cloud_bridge.app import Bridge
_publish_sync = Bridge.publish_sync
async def publish_sync(self):
    if os.path.exists(os.environ["THRESHOLD_TEST_TRIGGER"]):
        raise RuntimeError("injected failure in the sync loop")
    return await _publish_sync(self)
Bridge.publish_sync = publish_sync
"""


@pytest.mark.parametrize("module", ["edge", "cloud_bridge"])
def test_a_failing_loop_ends_the_process_within_seconds(
    tmp_path: Path, mosquitto: MosquittoProcess, module: str
) -> None:
    config = configure(module, tmp_path, mosquitto)
    trigger = tmp_path / "fail-now"
    inject = _GATEWAY_BUG if module == "edge" else _BRIDGE_BUG
    with (
        notify_socket(tmp_path) as notify,
        running(module, config, notify, inject=inject, trigger=trigger) as process,
    ):
        notify.wait_for("READY=1", 60)
        trigger.touch()
        triggered = time.monotonic()
        code = process.wait(30, notify)
        took = time.monotonic() - triggered
    assert code == ExitCode.INTERNAL, process.output()[-3000:]
    assert "injected failure" in process.last_line()
    assert took < 15, f"took {took:.1f} s to exit"
    assert "Traceback" in process.output()  # a bug: the traceback is in the journal


@pytest.mark.parametrize("module", ["edge", "cloud_bridge"])
def test_ready_then_the_watchdog_is_fed_then_stopping_on_sigterm(
    tmp_path: Path, mosquitto: MosquittoProcess, module: str
) -> None:
    config = configure(module, tmp_path, mosquitto)
    with (
        notify_socket(tmp_path, abstract=True) as notify,
        running(module, config, notify, watchdog_usec=2_000_000) as process,
    ):
        ready = notify.wait_for("READY=1", 60)
        notify.poll(4.0)
        fed = [at for at, m in notify.received if "WATCHDOG=1" in m.split("\n") and at > ready]
        process.popen.send_signal(signal.SIGTERM)
        code = process.wait(30, notify)
    assert code == ExitCode.OK, process.output()[-3000:]
    assert len(fed) >= 2, notify.messages()  # every 1 s: half of WATCHDOG_USEC
    assert any("STOPPING=1" in m for m in notify.messages())
    db = database_of(module, config)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in db.parent.iterdir()}
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert modes[db.name] == 0o600 and all(m == 0o600 for m in modes.values()), modes


# The database loop's probe hangs once the trigger file exists: a database that stops answering.
_GATEWAY_STALL = """
import asyncio, os
from edge.adapters.sqlite_store import SqliteGatewayStore
_count = SqliteGatewayStore.count
async def count(self):
    if os.path.exists(os.environ["THRESHOLD_TEST_TRIGGER"]):
        await asyncio.Event().wait()
    return await _count(self)
SqliteGatewayStore.count = count
"""


def test_a_stalled_loop_stops_the_watchdog_feeding(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    config = configure("edge", tmp_path, mosquitto)
    trigger = tmp_path / "stall-now"
    with (
        notify_socket(tmp_path) as notify,
        running(
            "edge", config, notify, watchdog_usec=2_000_000, inject=_GATEWAY_STALL, trigger=trigger
        ) as process,
    ):
        notify.wait_for("READY=1", 60)
        notify.wait_for("WATCHDOG=1", 5)
        trigger.touch()
        deadline = time.monotonic() + 15
        while not any("database busy" in m for m in notify.messages()):
            assert time.monotonic() < deadline, notify.messages()
            notify.poll(0.5)
        since = time.monotonic()
        notify.poll(3.0)  # three feeding intervals
        assert process.popen.poll() is None  # alive, but no longer feeding: systemd kills it
    late = [m for at, m in notify.received if at > since and "WATCHDOG=1" in m.split("\n")]
    assert late == []
    stalls = [m for m in notify.messages() if "STATUS=stalled" in m]
    assert any("database busy" in m for m in stalls), stalls
