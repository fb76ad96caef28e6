"""Property tests: no input, raw or field-level, makes an exception escape the receive path.

Derandomized (`derandomize=True`), so every run explores the same examples and a failure reproduces
from the test name alone; hypothesis prints the falsifying example.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.core import beacons, frames
from edge.core.advert import RawAdvert
from edge.core.beacons import ALTBEACON_CODE, APP_MAGIC, IBEACON_PREFIX
from edge.core.capture import (
    CaptureError,
    capture_fields,
    format_advert_line,
    parse_capture_line,
)
from edge.core.frames import AdFields, FrameKind
from edge.core.pipeline import AdvertClassifier

FUZZ = settings(max_examples=600, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# Identification bytes of every format, so generated data often gets past the first check.
PREFIXES = st.sampled_from(
    [
        b"",
        IBEACON_PREFIX,
        ALTBEACON_CODE,
        APP_MAGIC,
        APP_MAGIC + b"\x01",
        b"\x00",  # Eddystone-UID
        b"\x10",  # Eddystone-URL
        b"\x10\xec\x03",  # Eddystone-URL, https://
        b"\x20\x00",  # Eddystone-TLM
        b"\x20\x01",  # Eddystone-eTLM
        b"\x30",  # Eddystone-EID
        b"\x40",  # reserved
    ]
)
COMPANIES = st.sampled_from([0x004C, 0x0006, 0xFFFF, 0x0118, 0x0059]) | st.integers(0, 0xFFFF)
UUIDS16 = st.sampled_from([0xFEAA, 0xFE2C, 0x180F]) | st.integers(0, 0xFFFF)
FIELD_DATA = st.builds(lambda p, rest: p + rest, PREFIXES, st.binary(max_size=30))


def check(result: frames.Classified) -> None:
    """The invariants every classification keeps."""
    assert isinstance(result.kind, FrameKind)
    assert (result.eid is not None) == (result.kind in (FrameKind.EDDYSTONE_EID, FrameKind.APP))
    assert result.eid is None or len(result.eid) == 8
    assert (result.reason is not None) == (result.kind is FrameKind.MALFORMED)
    if result.kind in (FrameKind.MALFORMED, FrameKind.OTHER):
        assert result.frame is None
    else:
        assert result.frame is not None


@st.composite
def ad_structures(draw: st.DrawFn) -> bytes:
    """Well-framed AD structures of the types Threshold reads, with hostile contents."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 4))):
        ad_type = draw(st.sampled_from([0x01, 0x03, 0x09, 0x0A, 0x16, 0xFF, 0x21, 0x07]))
        if ad_type == 0x16:
            data = draw(UUIDS16).to_bytes(2, "little") + draw(FIELD_DATA)
        elif ad_type == 0xFF:
            data = draw(COMPANIES).to_bytes(2, "little") + draw(FIELD_DATA)
        else:
            data = draw(st.binary(max_size=20))
        out += bytes((len(data) + 1, ad_type)) + data
    # Sometimes cut the end off, or add junk, as a noisy radio does.
    cut = draw(st.integers(0, 3))
    if cut and out:
        out = out[: max(0, len(out) - cut)]
    return bytes(out) + draw(st.binary(max_size=3))


@FUZZ
@given(st.binary(max_size=300))
def test_raw_bytes_never_raise(payload: bytes) -> None:
    check(frames.classify_advert(payload))


@FUZZ
@given(ad_structures())
def test_structured_adverts_never_raise(payload: bytes) -> None:
    check(frames.classify_advert(payload))
    check(AdvertClassifier().classify("AA:BB:CC:DD:EE:FF", payload))


@FUZZ
@given(
    st.dictionaries(UUIDS16, FIELD_DATA, max_size=3),
    st.dictionaries(COMPANIES, FIELD_DATA, max_size=3),
    st.none() | st.text(max_size=10),
    st.none() | st.integers(-128, 127),
)
def test_field_level_inputs_never_raise(
    service_data: dict[int, bytes],
    manufacturer_data: dict[int, bytes],
    local_name: str | None,
    tx_power: int | None,
) -> None:
    check(frames.classify_fields(AdFields(service_data, manufacturer_data, local_name, tx_power)))
    from_manufacturer_data = frames.classify_manufacturer_data(manufacturer_data)
    if from_manufacturer_data is not None:
        check(from_manufacturer_data)


@FUZZ
@given(st.integers(0, 0xFFFF), FIELD_DATA)
def test_each_decoder_returns_a_frame_or_a_reason(company: int, data: bytes) -> None:
    for result in (
        beacons.decode_ibeacon(data),
        beacons.decode_altbeacon(company, data),
        beacons.decode_eddystone_uid(data),
        beacons.decode_eddystone_url(data),
        beacons.decode_eddystone_tlm(data),
        beacons.decode_eddystone_eid(data),
        beacons.decode_app_frame(data),
    ):
        assert isinstance(result, str | beacons.Frame)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            ["0000feaa-0000-1000-8000-00805f9b34fb", "6e400001-b5a3-f393-e0a9-e50e24dcca9e"]
        ),
        FIELD_DATA,
        max_size=2,
    ),
    st.dictionaries(COMPANIES, FIELD_DATA, max_size=3),
    st.none() | st.text(max_size=40),
)
def test_host_stack_fields_encode_and_classify(
    service_data: dict[str, bytes], manufacturer_data: dict[int, bytes], local_name: str | None
) -> None:
    # What the bleak adapter does with AdvertisementData: re-encode, then classify.
    payload = frames.encode_ad_fields(
        service_data=service_data, manufacturer_data=manufacturer_data, local_name=local_name
    )
    check(frames.classify_advert(payload))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
CAPTURE_KEYS = st.sampled_from(
    [
        "t",
        "address",
        "rssi",
        "manufacturer_data",
        "service_data",
        "service_uuids",
        "local_name",
        "tx_power",
        "extra",
    ]
)


@FUZZ
@given(st.text(max_size=200))
def test_any_text_is_an_advert_or_a_capture_error(line: str) -> None:
    try:
        parse_capture_line(line, 1)
    except CaptureError as exc:
        assert exc.line_no == 1 and str(exc).startswith("line 1")


@FUZZ
@given(st.dictionaries(CAPTURE_KEYS, JSON_VALUES | st.just("AA:BB:CC:DD:EE:FF"), max_size=9))
def test_any_json_object_is_an_advert_or_a_capture_error(obj: dict[str, object]) -> None:
    try:
        advert = parse_capture_line(json.dumps(obj), 7)
    except CaptureError as exc:
        assert exc.line_no == 7
    else:
        check(frames.classify_advert(advert.payload))


@FUZZ
@given(st.binary(max_size=31), st.integers(-127, 20))
def test_recording_keeps_what_the_gateway_reads(payload: bytes, rssi: int) -> None:
    # A legacy advert recorded by `scan --record` replays as the same frame with the same EID.
    line = format_advert_line(RawAdvert(1_790_000_000.5, "AA:BB:CC:DD:EE:FF", rssi, payload))
    replayed = parse_capture_line(line, 1)
    assert (replayed.t_s, replayed.address, replayed.rssi_dbm) == (
        1_790_000_000.5,
        "AA:BB:CC:DD:EE:FF",
        rssi,
    )
    if not isinstance(frames.parse_ad(payload), str):
        # Broken AD structures are recorded as a host stack would report them (what parsed before
        # the break), so only adverts whose structures are sound must classify the same.
        before, after = frames.classify_advert(payload), frames.classify_advert(replayed.payload)
        assert (after.kind, after.eid, after.frame) == (before.kind, before.eid, before.frame)
    # Recording a replayed advert again is stable.
    again = parse_capture_line(format_advert_line(replayed), 2)
    assert again.payload == replayed.payload
    assert capture_fields(again.payload) == capture_fields(replayed.payload)


GOOD_LINE: dict[str, object] = {
    "t": 1_790_000_000.25,
    "address": "AA:BB:CC:DD:EE:FF",
    "rssi": -60,
    "manufacturer_data": {"76": "0215" + "00" * 21},
    "service_data": {"0000feaa-0000-1000-8000-00805f9b34fb": "30ec0102030405060708"},
    "service_uuids": ["0000feaa-0000-1000-8000-00805f9b34fb"],
    "local_name": None,
    "tx_power": None,
}


@FUZZ
@given(CAPTURE_KEYS, JSON_VALUES)
def test_a_bad_field_is_named_in_the_error(key: str, value: object) -> None:
    line = json.dumps({**GOOD_LINE, key: value})
    try:
        parse_capture_line(line, 3)
    except CaptureError as exc:
        assert exc.field is not None and exc.field.split(".")[0] == key, str(exc)
