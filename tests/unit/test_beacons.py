"""Every beacon format from golden bytes: decoded fields, the encoders, and broken variants with reasons.

Golden adverts are written out byte by byte from the specs (Apple iBeacon, AltBeacon v1.0, Eddystone
UID / URL / TLM / eTLM / EID) and docs/beacons.md (the app frame), not produced by our encoders.
"""

from __future__ import annotations

import itertools

import pytest

from edge.core import beacons, frames, wire
from edge.core.advert import RawAdvert
from edge.core.beacons import (
    AltBeacon,
    AppFrame,
    EddystoneEid,
    EddystoneEtlm,
    EddystoneTlm,
    EddystoneUid,
    EddystoneUrl,
    IBeacon,
    Noise,
    NoiseSource,
)
from edge.core.eid import compute_eid, counter_at
from edge.core.frames import FrameKind
from edge.core.offers import OfferEngine
from edge.core.pipeline import AdvertClassifier, Pipeline
from edge.core.presence import PresenceConfig, PresenceTracker
from edge.core.resolver import EidResolver
from tests.factories import T0, make_campaigns, make_device

FLAGS = "020106"
EDDYSTONE = FLAGS + "0303aafe"  # flags, complete 16-bit UUID list: FEAA
EID = bytes.fromhex("a9b76a71c5f89290")
UUID = "f7826da64fa24e988024bc5b71e0893e"
ALT_ID = bytes(range(1, 21))
NAMESPACE = "edd1ebeac04e5defa017"
INSTANCE = "0bdb87539b67"

IBEACON_GOLDEN = FLAGS + "1aff4c000215" + UUID + "0001" + "0002" + "c5"
ALTBEACON_GOLDEN = FLAGS + "1bff1801beac" + ALT_ID.hex() + "c5" + "00"
UID_GOLDEN = EDDYSTONE + "1716aafe00e7" + NAMESPACE + INSTANCE + "0000"
UID_NO_RFU_GOLDEN = EDDYSTONE + "1516aafe00e7" + NAMESPACE + INSTANCE
# http://www. + "example" + ".com/" (expansion code 0x00)
URL_GOLDEN = EDDYSTONE + "0e16aafe10ec00" + b"example".hex() + "00"
# battery 3000 mV, 21.5 °C (0x1580 in 8.8), 123456 adverts, 864000 x 0.1 s
TLM_GOLDEN = EDDYSTONE + "1116aafe2000" + "0bb8" + "1580" + "0001e240" + "000d2f00"
ETLM_GOLDEN = EDDYSTONE + "1516aafe2001" + "00112233445566778899aabb" + "1234" + "abcd"
EID_GOLDEN = EDDYSTONE + "0d16aafe30ec" + EID.hex()
APP_GOLDEN = FLAGS + "0fffffff" + "5448" + "01" + "00" + EID.hex()


def classify_hex(hex_bytes: str) -> frames.Classified:
    return frames.classify_advert(bytes.fromhex(hex_bytes))


@pytest.mark.parametrize(
    ("golden", "kind", "frame"),
    [
        (
            IBEACON_GOLDEN,
            FrameKind.IBEACON,
            IBeacon(bytes.fromhex(UUID), major=1, minor=2, measured_power_dbm=-59),
        ),
        (
            ALTBEACON_GOLDEN,
            FrameKind.ALTBEACON,
            AltBeacon(0x0118, ALT_ID, reference_rssi_dbm=-59, mfg_reserved=0),
        ),
        (
            UID_GOLDEN,
            FrameKind.EDDYSTONE_UID,
            EddystoneUid(-25, bytes.fromhex(NAMESPACE), bytes.fromhex(INSTANCE)),
        ),
        (
            UID_NO_RFU_GOLDEN,
            FrameKind.EDDYSTONE_UID,
            EddystoneUid(-25, bytes.fromhex(NAMESPACE), bytes.fromhex(INSTANCE)),
        ),
        (URL_GOLDEN, FrameKind.EDDYSTONE_URL, EddystoneUrl(-20, "http://www.example.com/")),
        (TLM_GOLDEN, FrameKind.EDDYSTONE_TLM, EddystoneTlm(3000, 21.5, 123_456, 86_400.0)),
        (
            ETLM_GOLDEN,
            FrameKind.EDDYSTONE_TLM,
            EddystoneEtlm(bytes.fromhex("00112233445566778899aabb"), 0x1234, 0xABCD),
        ),
        (EID_GOLDEN, FrameKind.EDDYSTONE_EID, EddystoneEid(-20, EID)),
        (APP_GOLDEN, FrameKind.APP, AppFrame(1, 0, EID)),
    ],
    ids=["ibeacon", "altbeacon", "uid", "uid-no-rfu", "url", "tlm", "etlm", "eid", "app"],
)
def test_golden_adverts_decode(golden: str, kind: FrameKind, frame: beacons.Frame) -> None:
    result = classify_hex(golden)
    assert (result.kind, result.frame, result.reason) == (kind, frame, None)


def test_only_eid_frames_carry_an_eid() -> None:
    assert classify_hex(EID_GOLDEN).eid == EID
    assert classify_hex(APP_GOLDEN).eid == EID  # the app frame resolves like an Eddystone-EID
    for golden in (IBEACON_GOLDEN, ALTBEACON_GOLDEN, UID_GOLDEN, URL_GOLDEN, TLM_GOLDEN):
        assert classify_hex(golden).eid is None


def test_encoders_produce_the_golden_bytes() -> None:
    assert frames.ibeacon_advert(bytes.fromhex(UUID), 1, 2, -59).hex() == IBEACON_GOLDEN
    assert frames.altbeacon_advert(ALT_ID, -59).hex() == ALTBEACON_GOLDEN
    uid = frames.eddystone_uid_advert(bytes.fromhex(NAMESPACE), bytes.fromhex(INSTANCE), -25)
    assert uid.hex() == UID_GOLDEN
    assert frames.eddystone_url_advert("http://www.example.com/", -20).hex() == URL_GOLDEN
    assert frames.eddystone_tlm_advert(3000, 21.5, 123_456, 86_400.0).hex() == TLM_GOLDEN
    etlm = frames.eddystone_etlm_advert(bytes.fromhex("00112233445566778899aabb"), 0x1234, 0xABCD)
    assert etlm.hex() == ETLM_GOLDEN
    assert frames.eddystone_eid_advert(EID, -20).hex() == EID_GOLDEN
    assert frames.app_advert(EID).hex() == APP_GOLDEN


def test_ibeacon_uuid_reads_as_text() -> None:
    frame = classify_hex(IBEACON_GOLDEN).frame
    assert isinstance(frame, IBeacon)
    assert frame.uuid_text == "f7826da6-4fa2-4e98-8024-bc5b71e0893e"


def test_altbeacon_is_found_under_any_company_id() -> None:
    result = frames.classify_advert(frames.altbeacon_advert(ALT_ID, -70, company_id=0x0059))
    assert result.kind is FrameKind.ALTBEACON
    assert isinstance(result.frame, AltBeacon) and result.frame.company_id == 0x0059


@pytest.mark.parametrize(
    ("url", "encoded"),
    [
        ("https://www.example.org", "01" + b"example".hex() + "08"),
        ("http://example.net/a", "02" + b"example".hex() + "03" + b"a".hex()),
        ("https://th.info/x.gov", "03" + b"th".hex() + "04" + b"x".hex() + "0d"),
        ("https://", "03"),  # an empty encoded URL is allowed (length 0-17)
    ],
)
def test_url_schemes_and_expansions(url: str, encoded: str) -> None:
    frame = beacons.encode_eddystone_url(url, -20)
    assert frame.hex() == "10ec" + encoded
    assert beacons.decode_eddystone_url(frame) == EddystoneUrl(-20, url)


@pytest.mark.parametrize(
    ("tlm", "battery", "temperature"),
    [
        ("0000" + "8000", None, None),  # battery and temperature not supported
        ("0e10" + "fec0", 3600, -1.25),  # negative 8.8 fixed point
        ("0001" + "7fff", 1, 127 + 255 / 256),
    ],
)
def test_tlm_optional_and_signed_fields(
    tlm: str, battery: int | None, temperature: float | None
) -> None:
    frame = bytes.fromhex("2000" + tlm + "00000001" + "0000000a")
    decoded = beacons.decode_eddystone_tlm(frame)
    assert decoded == EddystoneTlm(battery, temperature, 1, 1.0)


@pytest.mark.parametrize(
    ("payload", "source"),
    [
        (FLAGS + "0aff4c001005031c7a9e32", NoiseSource.APPLE_CONTINUITY),  # Nearby Info
        (FLAGS + "0aff4c0012020003" + "000000", NoiseSource.APPLE_CONTINUITY),  # Find My
        ("1eff0600010920" + "02" + "00" * 23, NoiseSource.MICROSOFT_CDP),
        (FLAGS + "06162cfe0e30c3", NoiseSource.GOOGLE_FAST_PAIR),
    ],
)
def test_noise_is_recognised_not_decoded(payload: str, source: NoiseSource) -> None:
    result = classify_hex(payload)
    assert (result.kind, result.frame, result.eid) == (FrameKind.NOISE, Noise(source), None)


@pytest.mark.parametrize(
    "payload",
    [
        EDDYSTONE + "0516aafe40" + "00",  # frame type 0x40 is reserved
        EDDYSTONE + "0516aafe31" + "00",  # low nibble must be 0: not a frame type we know
        FLAGS + "07ffffff01020304",  # someone else's test data under 0xFFFF
        FLAGS + "05ff5900aabb",  # a company's own data
        FLAGS + "0909" + b"Door tag".hex(),  # a local name only
    ],
)
def test_unknown_but_well_formed_is_other(payload: str) -> None:
    result = classify_hex(payload)
    assert (result.kind, result.eid, result.reason) == (FrameKind.OTHER, None, None)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        # iBeacon: the prefix claims the format, the length breaks it
        (
            FLAGS + "19ff4c000215" + UUID + "0001" + "0002",
            "iBeacon payload is 22 bytes, expected 23",
        ),
        (
            FLAGS + "1aff1801beac" + ALT_ID.hex() + "c5",
            "AltBeacon payload is 23 bytes, expected 24",
        ),
        (EDDYSTONE + "1616aafe00e7" + NAMESPACE + INSTANCE + "00", "Eddystone-UID frame is 19"),
        (EDDYSTONE + "0716aafe10ec04" + "61", "URL scheme prefix 0x04 is reserved"),
        (EDDYSTONE + "0816aafe10ec03" + "610e", "byte 0x0e at offset 4 is a reserved code"),
        (EDDYSTONE + "0816aafe10ec03" + "6120", "byte 0x20 at offset 4 is a reserved code"),
        (EDDYSTONE + "0816aafe10ec03" + "617f", "byte 0x7f at offset 4 is a reserved code"),
        (EDDYSTONE + "0516aafe10ec", "Eddystone-URL frame is 2 bytes, expected 3-20"),
        (EDDYSTONE + "1816aafe10ec03" + "61" * 18, "Eddystone-URL frame is 21 bytes"),
        (EDDYSTONE + "0416aafe20", "Eddystone-TLM frame is 1 bytes, needs a version byte"),
        (EDDYSTONE + "1116aafe2002" + "00" * 12, "Eddystone-TLM version 0x02 is unknown"),
        (EDDYSTONE + "1016aafe2000" + "00" * 11, "Eddystone-TLM frame is 13 bytes, expected 14"),
        (EDDYSTONE + "1416aafe2001" + "00" * 15, "Eddystone-eTLM frame is 17 bytes, expected 18"),
        (EDDYSTONE + "0c16aafe30ec" + EID.hex()[:14], "Eddystone-EID frame is 9 bytes"),
        (FLAGS + "0fffffff544802" + "00" + EID.hex(), "app frame version 2 is not supported"),
        (FLAGS + "0effffff544801" + "00" + EID.hex()[:14], "app frame is 11 bytes, expected 12"),
        (FLAGS + "05ffffff5448", "app frame is 2 bytes, needs a version byte"),
        (FLAGS + "1aff4c000215" + UUID, "claims 26 bytes"),  # the AD structure runs off the end
    ],
)
def test_broken_formats_are_malformed_with_a_reason(payload: str, reason: str) -> None:
    result = classify_hex(payload)
    assert (result.kind, result.eid, result.frame) == (FrameKind.MALFORMED, None, None)
    assert result.reason is not None and reason in result.reason


def test_encoders_refuse_what_the_format_cannot_carry() -> None:
    with pytest.raises(ValueError, match="17 fit"):
        beacons.encode_eddystone_url("https://a-very-long-host-name.example/")
    with pytest.raises(ValueError, match="does not start with"):
        beacons.encode_eddystone_url("ftp://example.com")
    with pytest.raises(ValueError, match="cannot carry"):
        beacons.encode_eddystone_url("https://ex ample")
    with pytest.raises(ValueError, match="20 bytes"):
        beacons.encode_altbeacon(bytes(19))
    with pytest.raises(ValueError, match="8 bytes"):
        beacons.encode_app_frame(bytes(7))


# --- Through the pipeline: the app frame resolves like an Eddystone-EID; repeats skip the parse. ---


def make_pipeline(devices: list[wire.RosterDevice]) -> Pipeline:
    ids = (f"ev{n}" for n in itertools.count())
    return Pipeline(
        EidResolver(devices, T0),
        PresenceTracker(PresenceConfig()),
        OfferEngine(make_campaigns()),
        lambda: next(ids),
    )


def app_walk_in(device: wire.RosterDevice, t0: float) -> list[RawAdvert]:
    key, exponent = device.identity_key, device.exponent
    rssi = [-85, -80, -75, -70, -65, -62, -60] + [-60] * 100
    return [
        RawAdvert(
            t0 + i * 0.25,
            "5A:00:00:00:00:01",
            r,
            frames.app_advert(compute_eid(key, exponent, counter_at(t0 + i * 0.25))),
        )
        for i, r in enumerate(rssi)
    ]


def test_app_frame_of_an_enrolled_device_resolves_and_enters() -> None:
    member = make_device(tier="gold")
    pipeline = make_pipeline([member])
    events = pipeline.feed_many(app_walk_in(member, T0), wall_s=1.0)
    assert [type(e).__name__ for e in events] == ["Visit", "OfferTrigger"]
    assert pipeline.counters.resolved == pipeline.counters.eid_frames > 0
    assert pipeline.frame_counts[FrameKind.APP] == pipeline.counters.adverts


def test_pipeline_counts_every_frame_kind() -> None:
    pipeline = make_pipeline([])
    goldens = [IBEACON_GOLDEN, ALTBEACON_GOLDEN, UID_GOLDEN, URL_GOLDEN, TLM_GOLDEN, ETLM_GOLDEN]
    adverts = [
        RawAdvert(T0, f"00:00:00:00:00:{i:02X}", -70, bytes.fromhex(g))
        for i, g in enumerate([*goldens, EID_GOLDEN, APP_GOLDEN, FLAGS, "05"])
    ]
    assert pipeline.feed_many(adverts, 1.0) == []
    counts = {k.value: n for k, n in pipeline.frame_counts.items() if n}
    assert counts == {
        "ibeacon": 1,
        "altbeacon": 1,
        "eddystone_uid": 1,
        "eddystone_url": 1,
        "eddystone_tlm": 2,
        "eddystone_eid": 1,
        "app": 1,
        "other": 1,
        "malformed": 1,
    }
    assert (pipeline.counters.eid_frames, pipeline.counters.unresolved) == (2, 2)


def test_repeated_bytes_from_an_address_skip_the_parse() -> None:
    classifier = AdvertClassifier()
    first = classifier.classify("AA:00:00:00:00:01", bytes.fromhex(EID_GOLDEN))
    again = classifier.classify("AA:00:00:00:00:01", bytes.fromhex(EID_GOLDEN))  # a fresh copy
    assert again is first
    changed = classifier.classify("AA:00:00:00:00:01", bytes.fromhex(IBEACON_GOLDEN))
    assert changed.kind is FrameKind.IBEACON
    other_address = classifier.classify("AA:00:00:00:00:02", bytes.fromhex(EID_GOLDEN))
    assert other_address.eid == EID
    assert (classifier.hits, classifier.misses) == (1, 3)


def test_the_address_cache_stays_bounded() -> None:
    classifier = AdvertClassifier(max_addresses=100)
    payload = bytes.fromhex(EID_GOLDEN)
    for n in range(10_000):
        classifier.classify(f"AA:00:00:00:{n >> 8:02X}:{n & 0xFF:02X}", payload)
        assert len(classifier) <= 100
