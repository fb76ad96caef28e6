"""`edge-gateway scan`: the live view driven by a fake radio, and what `--record` writes."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import pytest

from edge.cli import main
from edge.core import frames, wire
from edge.core.advert import RawAdvert
from edge.core.capture import parse_capture_line
from edge.core.frames import FrameKind
from edge.core.resolver import EidResolver
from edge.tools.scan import ScanDisplay, ScanView, run_scan
from tests.factories import T0, eid_advert, make_device
from tests.fakes.radio import FakeAdvertSource

MEMBER_ADDR = "4A:00:00:00:00:01"
STRANGER_ADDR = "4A:00:00:00:00:02"
IBEACON_ADDR = "C1:00:00:00:00:03"
BROKEN_ADDR = "00:11:22:33:44:55"


def door_batches(member: wire.RosterDevice, stranger: wire.RosterDevice) -> list[list[RawAdvert]]:
    """Three batches a second apart: an enrolled phone, a stranger, a store beacon, a broken advert."""
    ibeacon = frames.ibeacon_advert(bytes(range(16)), 7, 9)
    batches = []
    for i in range(3):
        t = T0 + i
        batches.append(
            [
                eid_advert(member, t, rssi_dbm=-60 - i, address=MEMBER_ADDR),
                eid_advert(member, t + 0.5, rssi_dbm=-62, address=MEMBER_ADDR),
                eid_advert(stranger, t, rssi_dbm=-85, address=STRANGER_ADDR),
                RawAdvert(t, IBEACON_ADDR, -70, ibeacon),
                RawAdvert(t, BROKEN_ADDR, -90, b"\x05\x16\xaa\xfe"),
            ]
        )
    return batches


async def scan_batches(
    batches: list[list[RawAdvert]], view: ScanView, record: io.StringIO | None = None
) -> str:
    """Run the scan loop over exactly these batches (then stop, as Ctrl-C does); return its output."""
    source = FakeAdvertSource()
    for batch in batches:
        source.push(batch)
    out = io.StringIO()
    display = ScanDisplay(out, source.name, tty=False, max_rows=20)
    stop = asyncio.Event()
    expected = sum(len(b) for b in batches)
    observe = view.observe

    def observe_then_stop(advert: RawAdvert) -> None:
        observe(advert)
        if view.adverts == expected:
            stop.set()

    view.observe = observe_then_stop  # type: ignore[method-assign]
    await run_scan(source, view, display, record=record, stop=stop, refresh_s=60.0)
    return out.getvalue()


async def test_scan_shows_each_device_with_type_rssi_rate_and_enrollment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    member, stranger = make_device(), make_device()
    view = ScanView(EidResolver([member], T0))
    record = io.StringIO()
    out = await scan_batches(door_batches(member, stranger), view, record)

    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line}
    assert rows[MEMBER_ADDR][1:3] == ["eddystone_eid", "-61"]  # smoothed: the last sample was -62
    assert rows[MEMBER_ADDR][4:7] == ["yes", "device", member.ref]
    assert rows[STRANGER_ADDR][1] == "eddystone_eid" and rows[STRANGER_ADDR][4] == "no"
    assert rows[IBEACON_ADDR][1:5] == ["ibeacon", "-70", rows[IBEACON_ADDR][3], "-"]
    assert "00010203-0405-0607-0809-0a0b0c0d0e0f 7/9" in out
    assert rows[BROKEN_ADDR][1] == "malformed" and "claims 5 bytes" in out
    assert float(rows[MEMBER_ADDR][3]) > float(rows[IBEACON_ADDR][3]) > 0  # adverts/s
    assert out.splitlines()[0].startswith("scan · fake (scanning) · radio time ")
    assert "4 devices" in out.splitlines()[0] and "roster of 1" in out.splitlines()[0]
    assert caplog.records == []  # a diagnostic: addresses go to the screen, never to the log


async def test_record_writes_every_advert_in_the_capture_format() -> None:
    member, stranger = make_device(), make_device()
    batches = door_batches(member, stranger)
    record = io.StringIO()
    # Filters change the view, not the recording.
    view = ScanView(None, filter_type=FrameKind.IBEACON)
    await scan_batches(batches, view, record)

    heard = [a for batch in batches for a in batch]
    lines = record.getvalue().splitlines()
    assert len(lines) == len(heard)
    for n, (text, advert) in enumerate(zip(lines, heard, strict=True), 1):
        replayed = parse_capture_line(text, n)
        assert (replayed.t_s, replayed.address, replayed.rssi_dbm) == (
            advert.t_s,
            advert.address,
            advert.rssi_dbm,
        )
        before = frames.classify_advert(advert.payload)
        after = frames.classify_advert(replayed.payload)
        if before.kind is FrameKind.MALFORMED:
            # A broken AD structure is recorded as a host stack reports it: without the broken part.
            assert after.kind is FrameKind.OTHER
        else:
            assert (after.kind, after.eid, after.frame) == (before.kind, before.eid, before.frame)


async def test_filters_narrow_the_view() -> None:
    member, stranger = make_device(), make_device()
    view = ScanView(EidResolver([member], T0), filter_enrolled=True)
    out = await scan_batches(door_batches(member, stranger), view)
    shown = [line.split()[0] for line in out.splitlines()[2:] if line]
    assert set(shown) == {MEMBER_ADDR}
    assert "showing enrolled only" in out

    view = ScanView(None, filter_type=FrameKind.MALFORMED)
    out = await scan_batches(door_batches(member, stranger), view)
    assert {line.split()[0] for line in out.splitlines()[2:] if line} == {BROKEN_ADDR}
    assert "?" not in out  # EID rows are filtered out; no roster shows "?" only on EID rows


async def test_without_a_roster_eid_devices_are_unknown() -> None:
    member, stranger = make_device(), make_device()
    out = await scan_batches(door_batches(member, stranger), ScanView(None))
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line}
    assert rows[MEMBER_ADDR][4] == "?" and rows[IBEACON_ADDR][4] == "-"
    assert "no roster" in out.splitlines()[0]


async def test_scan_stops_after_its_seconds_on_a_silent_radio() -> None:
    out = io.StringIO()
    view = ScanView(None)
    await run_scan(
        FakeAdvertSource(), view, ScanDisplay(out, "fake", tty=False, max_rows=5), seconds=0.05
    )
    assert "0 devices" in out.getvalue()


def test_a_terminal_is_redrawn_in_place() -> None:
    out = io.StringIO()
    display = ScanDisplay(out, "fake", tty=True, max_rows=5)
    view = ScanView(None)
    view.observe(RawAdvert(T0, IBEACON_ADDR, -70, frames.ibeacon_advert(bytes(16), 1, 2)))
    display.show(view)
    first = out.getvalue()
    display.show(view)
    second = out.getvalue()[len(first) :]
    assert first.startswith("\033[2J\033[H")  # clear once
    assert second.startswith("\033[H") and "\033[2J" not in second  # then home and overwrite
    assert IBEACON_ADDR in second


def test_quiet_devices_fade_and_are_forgotten() -> None:
    view = ScanView(None)
    payload = frames.ibeacon_advert(bytes(16), 1, 2)
    for i in range(20):
        view.observe(RawAdvert(T0 + i * 0.1, IBEACON_ADDR, -70, payload))
    (row,) = view.rows()
    busy = row.rate_at(T0 + 2.0)
    view.observe(RawAdvert(T0 + 30, "C1:00:00:00:00:04", -80, payload))
    (quiet, _) = sorted(view.rows(), key=lambda r: r.address)
    assert quiet.rate_at(T0 + 30) < busy / 50
    view.observe(RawAdvert(T0 + 100, "C1:00:00:00:00:05", -80, payload))
    assert [r.address for r in view.rows()] == ["C1:00:00:00:00:05"]


def test_scan_command_records_the_configured_radio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[radio.simulated]\nseed = 3\nmembers = 20\nspeed = 300.0\n")
    record = tmp_path / "door.jsonl"
    argv = ["scan", "--config", str(config), "--seconds", "0.3", "--record", str(record)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("scan · simulated (scanning) · ")
    assert record.stat().st_mode & 0o777 == 0o600  # addresses: readable by the installer only
    lines = record.read_text().splitlines()
    assert lines and f"{len(lines):,} recorded to {record}" in out
    for n, text in enumerate(lines, 1):
        parse_capture_line(text, n)


def test_filter_enrolled_needs_a_roster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("")
    assert main(["scan", "--config", str(config), "--filter-enrolled"]) == 2
    assert "--filter-enrolled needs --roster" in capsys.readouterr().err
