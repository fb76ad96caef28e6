"""AD parsing and frame classification, well-formed and hostile."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core import frames
from edge.core.frames import FrameKind

EID = bytes.fromhex("a9b76a71c5f89290")


def test_eid_frame_is_found_in_service_data() -> None:
    result = frames.classify_advert(frames.eddystone_eid_advert(EID, -20))
    assert result.kind is FrameKind.EDDYSTONE_EID
    assert result.eid == EID


def test_eid_golden_bytes() -> None:
    # flags, 16-bit UUID list FEAA, service data FEAA: 0x30, ranging -20 dBm (0xEC), EID
    golden = bytes.fromhex("0201060303aafe0d16aafe30ec") + EID
    assert frames.eddystone_eid_advert(EID, -20) == golden
    assert frames.classify_advert(golden).eid == EID


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (frames.eddystone_uid_advert(bytes(10), bytes(6)), FrameKind.EDDYSTONE_UID),
        (frames.ibeacon_advert(bytes(16), 1, 2), FrameKind.IBEACON),
        (frames.manufacturer_advert(frames.COMPANY_APPLE, b"\x10\x05\x01\x18"), FrameKind.NOISE),
        (frames.manufacturer_advert(frames.COMPANY_MICROSOFT, b"\x01\x09\x20"), FrameKind.NOISE),
        (frames.fast_pair_advert(b"\x00\x01\x02"), FrameKind.NOISE),
        (frames.FLAGS_LE_GENERAL, FrameKind.OTHER),
        (b"", FrameKind.OTHER),
        (frames.FLAGS_LE_GENERAL + b"\x00\x00\x00", FrameKind.OTHER),  # zero-length padding
    ],
)
def test_other_frames_are_recognised(payload: bytes, kind: FrameKind) -> None:
    result = frames.classify_advert(payload)
    assert result.kind is kind
    assert result.eid is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x05\x16\xaa\xfe", "claims 5 bytes"),  # length runs past the end
        (bytes.fromhex("0416aafe30"), "Eddystone-EID frame is 1 bytes"),  # truncated EID frame
        (bytes.fromhex("0d16aafe30ec") + EID[:7] + b"\x02\x01", "claims 1 bytes"),
        (bytes.fromhex("0316aafe"), "Eddystone service data is empty"),
        (bytes.fromhex("021601"), "needs a 2-byte UUID"),
        (bytes.fromhex("02ff4c"), "needs a company id"),
        (bytes.fromhex("18ff4c000215") + bytes(19), "iBeacon payload is 21 bytes"),
        (bytes.fromhex("030a0102"), "TX power"),
        (bytes(300), "longer than 255"),
    ],
)
def test_malformed_adverts_are_classified_with_a_reason(payload: bytes, reason: str) -> None:
    result = frames.classify_advert(payload)
    assert result.kind is FrameKind.MALFORMED
    assert result.reason is not None and reason in result.reason


@settings(max_examples=2000, derandomize=True)
@given(st.binary(max_size=64))
def test_no_input_raises(payload: bytes) -> None:
    result = frames.classify_advert(payload)
    assert (result.eid is not None) == (result.kind is FrameKind.EDDYSTONE_EID)


@settings(max_examples=500, derandomize=True)
@given(st.binary(min_size=8, max_size=8), st.integers(0, 31))
def test_truncating_an_eid_advert_never_yields_a_wrong_eid(eid: bytes, cut: int) -> None:
    full = frames.eddystone_eid_advert(eid)
    result = frames.classify_advert(full[: len(full) - cut])
    assert result.eid is None or (cut == 0 and result.eid == eid)


def test_host_stack_fields_reencode_to_the_same_frame() -> None:
    feaa = "0000feaa-0000-1000-8000-00805f9b34fb"
    frame = bytes((frames.FRAME_TYPE_EID, 0xEC)) + EID
    payload = frames.encode_ad_fields(
        service_data={feaa: frame},
        service_uuids=[feaa, "6e400001-b5a3-f393-e0a9-e50e24dcca9e"],
        manufacturer_data={frames.COMPANY_MICROSOFT: b"\x01\x09"},
        local_name="tag",
        tx_power_dbm=-4,
    )
    fields = frames.parse_ad(payload)
    assert not isinstance(fields, str)
    assert fields.service_data[frames.EDDYSTONE_UUID16] == frame
    assert fields.manufacturer_data == {frames.COMPANY_MICROSOFT: b"\x01\x09"}
    assert (fields.local_name, fields.tx_power_dbm) == ("tag", -4)
    assert frames.classify_advert(payload).eid == EID


def test_bad_uuid_is_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match="UUID"):
        frames.encode_ad_fields(service_data={"not-a-uuid": b"x"})
