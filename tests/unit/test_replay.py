"""`edge-gateway replay`: a capture of every format, broken lines and enrolled devices, counted exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli import main
from edge.core import beacons, frames, wire
from edge.core.capture import format_capture_line
from edge.core.eid import compute_eid, counter_at
from tests.factories import T0, make_device

FEAA = "0000feaa-0000-1000-8000-00805f9b34fb"
FAST_PAIR = "0000fe2c-0000-1000-8000-00805f9b34fb"


def advert_line(n: int, **fields: object) -> str:
    return format_capture_line(
        t_s=T0 + n * 0.1,
        address=f"C0:00:00:00:00:{n:02X}",
        rssi_dbm=-60 - n % 20,
        **fields,  # type: ignore[arg-type]
    )


def eid_of(device: wire.RosterDevice, t_s: float) -> bytes:
    return compute_eid(device.identity_key, device.exponent, counter_at(t_s))


@pytest.fixture
def capture(tmp_path: Path) -> tuple[Path, Path]:
    """A capture with every format, four malformed adverts, two broken lines; and its roster."""
    enrolled = [make_device(), make_device()]
    stranger = make_device()  # broadcasts EIDs, but is not in the roster
    roster = tmp_path / "roster.json"
    roster.write_bytes(wire.encode(wire.RosterSync("store-001", 3, tuple(enrolled))))

    def eddystone(frame: bytes) -> dict[str, object]:
        return {"service_data": {FEAA: frame}, "service_uuids": [FEAA]}

    def eid_frame(device: wire.RosterDevice, n: int) -> bytes:
        return bytes((beacons.FRAME_TYPE_EID, 0xEC)) + eid_of(device, T0 + n * 0.1)

    uuid = bytes.fromhex("f7826da64fa24e988024bc5b71e0893e")
    rows: list[str | dict[str, object]] = [
        {"manufacturer_data": {76: beacons.encode_ibeacon(uuid, 1, 2)}},
        {"manufacturer_data": {76: beacons.encode_ibeacon(uuid, 1, 3)}},
        {"manufacturer_data": {0x0118: beacons.encode_altbeacon(bytes(range(20)))}},
        eddystone(bytes.fromhex("00e7") + bytes(16)),
        eddystone(beacons.encode_eddystone_url("https://example.com/")),
        eddystone(beacons.encode_eddystone_tlm(3000, 21.5, 10, 20.0)),
        eddystone(beacons.encode_eddystone_etlm(bytes(12), 1, 2)),
        "{this line is not JSON",
        eddystone(eid_frame(enrolled[0], 8)),
        eddystone(eid_frame(enrolled[1], 9)),
        eddystone(eid_frame(enrolled[0], 10)),
        eddystone(eid_frame(stranger, 11)),
        "",  # blank lines are not adverts and not errors
        {"manufacturer_data": {0xFFFF: beacons.encode_app_frame(eid_of(enrolled[1], T0 + 1.3))}},
        {"manufacturer_data": {0xFFFF: beacons.encode_app_frame(eid_of(enrolled[0], T0 + 1.4))}},
        {"manufacturer_data": {76: b"\x10\x05\x01\x18\x44\x00\x00"}},  # Apple continuity
        {"manufacturer_data": {6: b"\x01\x09\x20\x02" + bytes(20)}},  # Microsoft CDP
        {"service_data": {FAST_PAIR: b"\x0e\x30\xc3"}},  # Google Fast Pair
        {"local_name": "Door sensor"},  # well-formed, nothing we know
        json.dumps({"t": T0, "address": "C0:00:00:00:00:99"}),  # no rssi
        {"manufacturer_data": {76: beacons.encode_ibeacon(uuid, 1, 2)[:-1]}},  # 22 bytes
        eddystone(bytes.fromhex("10ec03") + b"a\x0e"),  # reserved URL code
        eddystone(bytes.fromhex("2002") + bytes(12)),  # unknown TLM version
        {"manufacturer_data": {0xFFFF: b"TH\x02\x00" + bytes(8)}},  # app frame version 2
    ]
    lines = []
    for n, row in enumerate(rows):
        lines.append(row if isinstance(row, str) else advert_line(n, **row))
    path = tmp_path / "capture.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, roster


def test_replay_json_counts_every_format(
    capture: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, roster = capture
    assert main(["replay", str(path), "--json", "--roster", str(roster)]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert set(report) == {"adverts", "frames", "resolved", "adverts_per_s"}
    assert report["frames"] == {
        "ibeacon": 2,
        "altbeacon": 1,
        "eddystone_uid": 1,
        "eddystone_url": 1,
        "eddystone_tlm": 2,  # plain TLM and eTLM
        "eddystone_eid": 4,
        "app": 2,
        "other": 4,  # Apple continuity, Microsoft CDP, Fast Pair, a name
        "malformed": 4,
    }
    assert report["adverts"] == 21 == sum(report["frames"].values())
    assert report["resolved"] == 5  # three enrolled EID frames and two app frames
    assert isinstance(report["adverts_per_s"], float) and report["adverts_per_s"] > 0
    # Broken lines: reported with file and line number, and skipped.
    assert err.splitlines() == [
        f"{path}: line 8: is not JSON (Expecting property name enclosed in double quotes); "
        "line skipped",
        f"{path}: line 20, field 'rssi': is missing; line skipped",
    ]


def test_replay_without_a_roster_resolves_nothing(
    capture: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = capture
    assert main(["replay", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["adverts"], report["resolved"]) == (21, 0)


def test_replay_prints_a_readable_table(
    capture: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, roster = capture
    assert main(["replay", str(path), "--roster", str(roster)]) == 0
    out = capsys.readouterr().out
    assert f"replay of {path}: 21 adverts (2 broken lines skipped)" in out
    assert "  eddystone_tlm            2" in out
    assert "resolved                 5  adverts of 2 enrolled devices" in out


def test_replay_classifies_a_recorded_simulator_capture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The installer's loop: what the simulator broadcasts, recorded, then replayed.
    from edge.core.capture import format_advert_line
    from edge.sim.entrance import EntranceConfig, StoreEntrance, make_members

    members = make_members(40, 2)
    entrance = StoreEntrance(EntranceConfig(seed=2, start_unix_s=T0, duration_s=90), members)
    adverts = list(entrance.adverts())
    path = tmp_path / "sim.jsonl"
    path.write_text("".join(format_advert_line(a) + "\n" for a in adverts))
    kinds = [frames.classify_advert(a.payload).kind.value for a in adverts]
    assert main(["replay", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["adverts"] == len(adverts)
    for key in ("ibeacon", "eddystone_uid", "eddystone_eid"):
        assert report["frames"][key] == kinds.count(key)
    assert report["frames"]["other"] == kinds.count("noise")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{}", "payload version None is not supported"),
        (b'{"v":1,"type":"roster","store":"store-001"}', "field $.version: missing"),
        (b'{"v":1,"type":"campaigns"}', "roster"),
        (b"not json", "not JSON"),
    ],
)
def test_a_bad_roster_file_is_refused(
    capture: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    message: str,
) -> None:
    path, _ = capture
    roster = tmp_path / "bad-roster.json"
    roster.write_bytes(content)
    assert main(["replay", str(path), "--roster", str(roster)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"edge-gateway: {roster}") and message in err


def test_a_missing_capture_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.jsonl"
    assert main(["replay", str(missing)]) == 2
    assert f"{missing}: cannot be read: No such file or directory" in capsys.readouterr().err
