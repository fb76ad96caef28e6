"""Which loops make progress (edge/core/liveness.py) and the watchdog that feeds systemd on it,
through a real SOCK_DGRAM notification socket (edge/adapters/sdnotify.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.adapters.sdnotify import SdNotifier
from edge.core.liveness import Liveness, Stall
from edge.services.watchdog import Watchdog


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(1.0)
    try:
        yield str(tmp_path / "notify"), sock
    finally:
        sock.close()


def drain(sock: socket.socket) -> list[str]:
    out = []
    sock.settimeout(0.05)
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


def test_a_waiting_loop_is_alive_however_long_it_waits() -> None:
    liveness = Liveness(("radio",), start=0.0, limit_s=60)
    liveness.idle("radio", 1.0)
    assert liveness.stalled(10_000.0) == []  # a closed store: silent for hours


def test_a_loop_busy_past_the_limit_is_stalled_until_it_finishes() -> None:
    liveness = Liveness(("radio", "uplink"), start=0.0, limit_s=60)
    liveness.idle("radio", 0.0)
    liveness.idle("uplink", 0.0)
    liveness.busy("uplink", 10.0)
    assert liveness.stalled(70.0) == []
    assert liveness.stalled(71.0) == [Stall("uplink", 61.0)]
    liveness.idle("uplink", 72.0)
    assert liveness.stalled(500.0) == []


def test_a_loop_that_never_reported_stalls_after_the_limit() -> None:
    liveness = Liveness(("database",), start=0.0, limit_s=5)
    assert liveness.stalled(5.0) == []
    assert [str(s) for s in liveness.stalled(6.0)] == ["database busy for 6 s"]


def test_failed_machinery_is_stalled_at_once() -> None:
    liveness = Liveness(("radio",), start=0.0, limit_s=60)
    liveness.idle("radio", 0.0)
    liveness.failed("radio", "recovery gave up")
    assert liveness.stalled(1.0) == ["radio: recovery gave up"]


def test_the_watchdog_is_fed_only_while_every_loop_progresses(
    receiver: tuple[str, socket.socket],
) -> None:
    path, sock = receiver
    clock = FakeClock()
    liveness = Liveness(("radio", "database"), start=clock.now, limit_s=10)
    radio_dead: list[str] = []
    watchdog = Watchdog(
        SdNotifier(path, 20_000_000),
        liveness,
        interval_s=10,
        checks=(lambda: radio_dead[0] if radio_dead else None,),
        monotonic=clock,
    )
    liveness.idle("radio", clock.now)
    liveness.idle("database", clock.now)
    assert watchdog.tick()
    assert drain(sock) == ["WATCHDOG=1"]

    liveness.busy("database", clock.now)
    clock.now += 11  # the database call has not returned for 11 s
    assert not watchdog.tick()
    assert not watchdog.tick()
    assert drain(sock) == ["STATUS=stalled: database busy for 11 s"]  # said once, not fed

    liveness.idle("database", clock.now)
    assert watchdog.tick()
    assert drain(sock) == ["STATUS=running", "WATCHDOG=1"]

    radio_dead.append("radio failed: no adapter")
    assert not watchdog.tick()
    assert drain(sock) == ["STATUS=stalled: radio failed: no adapter"]


def test_notifications_reach_an_abstract_socket_and_do_nothing_without_one() -> None:
    name = f"threshold-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(1.0)
        notifier = SdNotifier.from_environ(
            {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "3000000"}
        )
        assert notifier.enabled and notifier.watchdog_s == 3.0
        assert notifier.ready("gateway running")
        assert sock.recv(4096) == b"READY=1\nSTATUS=gateway running"
        assert notifier.stopping("failed: database:\nline two")
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=failed: database: line two"
    unset = SdNotifier.from_environ({})
    assert not unset.enabled and unset.watchdog_s is None
    assert not unset.watchdog()


def test_the_watchdog_of_another_process_is_not_ours() -> None:
    notifier = SdNotifier.from_environ(
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    )
    assert notifier.watchdog_s is None


def test_a_socket_that_is_gone_is_logged_not_raised(tmp_path: Path) -> None:
    assert not SdNotifier(str(tmp_path / "nobody-listens")).notify("READY=1")


def test_a_lingering_thread_does_not_keep_the_process_alive() -> None:
    code = (
        "import threading, time\n"
        "from edge.process import exit_for_good\n"
        "threading.Thread(target=time.sleep, args=(3600,), name='stuck-worker').start()\n"
        "exit_for_good(4, grace_s=0.2)\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 4
    assert time.monotonic() - started < 20
    assert "stuck-worker" in result.stderr and "exiting hard with code 4" in result.stderr
