"""TSP/1 codec (edge/core/serial_protocol.py): tables of good and bad lines, chunking, noise, fuzzing."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core import frames
from edge.core import serial_protocol as tsp
from edge.core.advert import RawAdvert
from firmware_config.profiles import KNOWN_CAPABILITIES

R = tsp.RejectReason
EID_AD = frames.eddystone_eid_advert(bytes(range(8)))


def framed(body: str, lower_checksum: bool = False) -> bytes:
    """A line with a correct checksum, whatever its body says."""
    crc = tsp.checksum(body.encode())
    return body.encode() + b"*" + (crc.lower() if lower_checksum else crc).encode() + b"\n"


def decode_all(data: bytes) -> tuple[list[tsp.Event], tsp.LineDecoder]:
    decoder = tsp.LineDecoder()
    return decoder.feed(data), decoder


def good(events: list[tsp.Event]) -> list[tsp.Event]:
    return [e for e in events if not isinstance(e, tsp.Rejected)]


ADV_LINE = tsp.encode_advert(0x1A2B3C4D, "c0:ff:ee:00:00:01", tsp.AddressType.RANDOM, -63, EID_AD)
ADV_EVENT = tsp.AdvertLine(0x1A2B3C4D, "C0:FF:EE:00:00:01", tsp.AddressType.RANDOM, -63, EID_AD)


# --- Framing ------------------------------------------------------------------------------------


def test_checksum_is_crc16_ccitt_false() -> None:
    assert tsp.checksum(b"123456789") == "29B1"  # the catalogue check value of CRC-16/CCITT-FALSE


def test_a_line_on_the_wire_matches_the_spec_example() -> None:
    assert tsp.encode_hello_request() == b"HELLO?*" + tsp.checksum(b"HELLO?").encode() + b"\n"
    assert ADV_LINE.startswith(
        b"ADV 1A2B3C4D C0:FF:EE:00:00:01 random -63 0201060303AAFE0D16AAFE30"
    )


@pytest.mark.parametrize("body", ["", "caf\u00e9", "tab\there", "x" * tsp.MAX_LINE_BYTES])
def test_frame_line_refuses_what_tsp_cannot_carry(body: str) -> None:
    with pytest.raises(ValueError, match="TSP line"):
        tsp.frame_line(body)


# --- Good lines ---------------------------------------------------------------------------------

GOOD_LINES: list[tuple[bytes, tsp.Event]] = [
    (ADV_LINE, ADV_EVENT),
    (
        tsp.encode_advert(0, "00:11:22:33:44:55", tsp.AddressType.PUBLIC, 20, b""),
        tsp.AdvertLine(0, "00:11:22:33:44:55", tsp.AddressType.PUBLIC, 20, b""),
    ),
    (
        tsp.encode_advert(
            0xFFFFFFFF, "AA:BB:CC:DD:EE:FF", tsp.AddressType.RANDOM, -127, b"\xff" * 255
        ),
        tsp.AdvertLine(
            0xFFFFFFFF, "AA:BB:CC:DD:EE:FF", tsp.AddressType.RANDOM, -127, b"\xff" * 255
        ),
    ),
    (  # §7: a later minor's key=value extensions are kept, not rejected
        framed("ADV 5 AA:BB:CC:DD:EE:FF random -70 020106 phy=coded ch=37"),
        tsp.AdvertLine(
            5,
            "AA:BB:CC:DD:EE:FF",
            tsp.AddressType.RANDOM,
            -70,
            b"\x02\x01\x06",
            (("phy", "coded"), ("ch", "37")),
        ),
    ),
    (  # lower-case hex and checksum are accepted
        framed("ADV 1a2b aa:bb:cc:dd:ee:ff random -70 0201ff", lower_checksum=True),
        tsp.AdvertLine(0x1A2B, "AA:BB:CC:DD:EE:FF", tsp.AddressType.RANDOM, -70, b"\x02\x01\xff"),
    ),
    (
        framed("HELLO fw=threshold-nrf52 ver=1.2.0 proto=1 caps=passive,active,coded_phy"),
        tsp.Hello("threshold-nrf52", "1.2.0", 1, 0, frozenset({"passive", "active", "coded_phy"})),
    ),
    (  # unknown HELLO keys are ignored; no caps is an empty set; a pre-release suffix is a version
        framed("HELLO fw=x ver=2.0.1-rc.1 proto=1.3 board=pca10059"),
        tsp.Hello("x", "2.0.1-rc.1", 1, 3, frozenset()),
    ),
    (framed("OK SCAN"), tsp.Ok("SCAN")),
    (framed("ERR overflow 12 adverts dropped"), tsp.ErrorLine("overflow", "12 adverts dropped")),
    (framed("ERR radio"), tsp.ErrorLine("radio", "")),
    (framed("ERR busy text with * a star"), tsp.ErrorLine("busy", "text with * a star")),
]


@pytest.mark.parametrize(("line", "event"), GOOD_LINES, ids=lambda v: repr(v)[:40])
def test_good_lines_decode_to_events(line: bytes, event: tsp.Event) -> None:
    events, decoder = decode_all(line)
    assert events == [event]
    assert decoder.counters.events == 1
    assert decoder.counters.rejected_total == 0


def test_crlf_terminated_lines_are_accepted() -> None:
    events, _ = decode_all(ADV_LINE.replace(b"\n", b"\r\n") * 2)
    assert events == [ADV_EVENT, ADV_EVENT]


def test_empty_lines_are_skipped_silently() -> None:
    events, decoder = decode_all(b"\n\r\n" + ADV_LINE + b"\n")
    assert events == [ADV_EVENT]
    assert decoder.counters.rejected_total == 0


def test_an_unknown_line_type_is_ignored_and_counted() -> None:
    events, decoder = decode_all(framed("STAT heap=1234") + ADV_LINE)
    assert events == [ADV_EVENT]
    assert decoder.counters.ignored == 1
    assert decoder.counters.rejected_total == 0


def test_an_advert_line_becomes_a_raw_advert_at_the_given_time() -> None:
    assert ADV_EVENT.to_raw_advert(1234.5) == RawAdvert(1234.5, "C0:FF:EE:00:00:01", -63, EID_AD)


# --- Bad lines ----------------------------------------------------------------------------------


def _flip_checksum(line: bytes) -> bytes:
    body, _, _ = line.rstrip(b"\n").rpartition(b"*")
    wrong = (int(tsp.checksum(body), 16) ^ 0x0001).to_bytes(2, "big").hex().encode()
    return body + b"*" + wrong + b"\n"


BAD_LINES: list[tuple[str, bytes, tsp.RejectReason]] = [
    ("no checksum", b"ADV 1 C0:FF:EE:00:00:01 random -63 020106\n", R.NO_CHECKSUM),
    ("wrong checksum", _flip_checksum(ADV_LINE), R.BAD_CHECKSUM),
    ("one bit flipped in the body", ADV_LINE.replace(b"-63", b"-62"), R.BAD_CHECKSUM),
    ("short checksum", ADV_LINE.replace(b"*", b"*0")[:-3] + b"\n", R.BAD_CHECKSUM),
    ("checksum not hex", b"OK SCAN*ZZZZ\n", R.BAD_CHECKSUM),
    ("too few fields", framed("ADV 1 C0:FF:EE:00:00:01 random -63"), R.FIELD_COUNT),
    ("stray extra field", framed("ADV 1 C0:FF:EE:00:00:01 random -63 0201 junk"), R.FIELD_COUNT),
    ("double space", framed("ADV 1  C0:FF:EE:00:00:01 random -63 0201"), R.FIELD_COUNT),
    ("timestamp not hex", framed("ADV 1g C0:FF:EE:00:00:01 random -63 0201"), R.BAD_TIMESTAMP),
    (
        "timestamp too long",
        framed("ADV 123456789 C0:FF:EE:00:00:01 random -63 0201"),
        R.BAD_TIMESTAMP,
    ),
    ("address short", framed("ADV 1 C0:FF:EE:00:00 random -63 0201"), R.BAD_ADDRESS),
    ("address not hex", framed("ADV 1 C0:FF:EE:00:00:0G random -63 0201"), R.BAD_ADDRESS),
    ("address type", framed("ADV 1 C0:FF:EE:00:00:01 static -63 0201"), R.BAD_ADDRESS_TYPE),
    ("rssi too high", framed("ADV 1 C0:FF:EE:00:00:01 random 21 0201"), R.BAD_RSSI),
    ("rssi too low", framed("ADV 1 C0:FF:EE:00:00:01 random -128 0201"), R.BAD_RSSI),
    ("rssi unavailable", framed("ADV 1 C0:FF:EE:00:00:01 random 127 0201"), R.BAD_RSSI),
    ("rssi not a number", framed("ADV 1 C0:FF:EE:00:00:01 random -6_3 0201"), R.BAD_RSSI),
    ("odd hex", framed("ADV 1 C0:FF:EE:00:00:01 random -63 020"), R.BAD_HEX),
    ("hex not hex", framed("ADV 1 C0:FF:EE:00:00:01 random -63 02zz"), R.BAD_HEX),
    ("too much AD", framed("ADV 1 C0:FF:EE:00:00:01 random -63 " + "00" * 256), R.BAD_HEX),
    ("hello without fw", framed("HELLO ver=1.0.0 proto=1"), R.BAD_HELLO),
    ("hello bad version", framed("HELLO fw=x ver=1.0 proto=1"), R.BAD_HELLO),
    ("hello bad proto", framed("HELLO fw=x ver=1.0.0 proto=one"), R.BAD_HELLO),
    ("hello duplicate key", framed("HELLO fw=x fw=y ver=1.0.0 proto=1"), R.BAD_HELLO),
    ("hello bare token", framed("HELLO fw=x ver=1.0.0 proto=1 dongle"), R.BAD_HELLO),
    ("ok without command", framed("OK"), R.FIELD_COUNT),
    ("ok lower-case command", framed("OK scan"), R.BAD_FIELD),
    ("err without code", framed("ERR"), R.BAD_FIELD),
    ("err bad code", framed("ERR Bad-Code text"), R.BAD_FIELD),
    ("oversized", b"A" * (tsp.MAX_LINE_BYTES + 1) + b"\n", R.OVERSIZED),
    ("only noise", b"\x00\xff\x13\x80\n", R.GARBAGE),
    ("noise then a broken line", b"\xfe\xffADV 1 C0\n", R.GARBAGE),
]


@pytest.mark.parametrize(
    ("line", "reason"), [(b[1], b[2]) for b in BAD_LINES], ids=[b[0] for b in BAD_LINES]
)
def test_bad_lines_are_rejected_with_a_counted_reason_and_decoding_goes_on(
    line: bytes, reason: tsp.RejectReason
) -> None:
    events, decoder = decode_all(line + ADV_LINE)
    assert events[-1] == ADV_EVENT  # the next good line still arrives
    rejected = [e for e in events if isinstance(e, tsp.Rejected)]
    assert [e.reason for e in rejected] == [reason]
    assert rejected[0].detail
    assert decoder.counters.rejected == {reason: 1}


def test_the_longest_valid_advert_fits_in_a_line() -> None:
    line = tsp.encode_advert(
        0xFFFFFFFF, "AA:BB:CC:DD:EE:FF", tsp.AddressType.RANDOM, -127, b"\xaa" * tsp.MAX_AD_BYTES
    )
    assert len(line) - 1 <= tsp.MAX_LINE_BYTES


# --- Chunking and resync ------------------------------------------------------------------------

STREAM = (
    tsp.encode_hello("threshold-nrf52", "1.2.0", ("passive", "active"))
    + tsp.encode_ok("SCAN")
    + ADV_LINE.replace(b"\n", b"\r\n")
    + tsp.encode_error("overflow", "3 adverts dropped")
    + ADV_LINE
)


def test_a_stream_split_at_every_byte_boundary_decodes_the_same() -> None:
    expected, _ = decode_all(STREAM)
    assert len(good(expected)) == 5
    for cut in range(len(STREAM) + 1):
        decoder = tsp.LineDecoder()
        events = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])
        assert events == expected, f"split at byte {cut}"


def test_a_stream_fed_byte_by_byte_decodes_the_same() -> None:
    expected, _ = decode_all(STREAM)
    decoder = tsp.LineDecoder()
    events = [e for i in range(len(STREAM)) for e in decoder.feed(STREAM[i : i + 1])]
    assert events == expected


def test_an_oversized_line_split_across_feeds_is_dropped_once_and_the_next_line_arrives() -> None:
    decoder = tsp.LineDecoder()
    events: list[tsp.Event] = []
    for _ in range(10):
        events += decoder.feed(b"B" * 250)
        assert decoder.buffered_bytes <= tsp.MAX_LINE_BYTES
    events += decoder.feed(b"tail\n" + ADV_LINE)
    assert [type(e) for e in events] == [tsp.Rejected, tsp.AdvertLine]
    assert decoder.counters.rejected == {R.OVERSIZED: 1}


def test_a_good_line_right_after_noise_on_the_same_line_is_recovered() -> None:
    # A device reset or a baud change leaves bytes that are not text before the next line.
    events, decoder = decode_all(b"\x00\xf0\xff\x80" + ADV_LINE)
    assert events == [ADV_EVENT]
    assert decoder.counters.resynced == 1


def test_a_partial_line_before_the_first_newline_is_rejected_not_merged() -> None:
    # Opening the port mid-line: the tail of a line arrives first.
    events, _ = decode_all(ADV_LINE[20:] + ADV_LINE)
    assert [type(e) for e in events] == [tsp.Rejected, tsp.AdvertLine]


def test_baud_mismatch_noise_without_newlines_does_not_grow_the_buffer() -> None:
    rng = random.Random(7)
    decoder = tsp.LineDecoder()
    for _ in range(200):  # ~200 KiB of high bytes with no newline
        decoder.feed(bytes(rng.randrange(0x80, 0x100) for _ in range(1024)))
        assert decoder.buffered_bytes <= tsp.MAX_LINE_BYTES
    events = decoder.feed(ADV_LINE)
    assert good(events) == [ADV_EVENT]


def test_a_long_printable_run_without_newlines_does_not_grow_the_buffer() -> None:
    decoder = tsp.LineDecoder()
    for _ in range(100):
        decoder.feed(b"U" * 4096)  # 0x55, what a wrong baud rate often reads as
        assert decoder.buffered_bytes <= tsp.MAX_LINE_BYTES
    assert good(decoder.feed(b"\n" + ADV_LINE)) == [ADV_EVENT]
    assert decoder.counters.rejected == {R.OVERSIZED: 1}


def test_reset_forgets_a_partial_line_but_keeps_counters() -> None:
    decoder = tsp.LineDecoder()
    decoder.feed(b"garbage\n" + ADV_LINE[:30])
    decoder.reset()
    assert decoder.buffered_bytes == 0
    assert decoder.feed(ADV_LINE) == [ADV_EVENT]
    assert decoder.counters.rejected_total == 1


# --- Host commands ------------------------------------------------------------------------------

COMMANDS: list[tsp.HostCommand] = [
    tsp.HelloRequest(),
    tsp.StopCommand(),
    tsp.ScanCommand(tsp.ScanMode.PASSIVE, 100, 100),
    tsp.ScanCommand(tsp.ScanMode.ACTIVE, 10_240, 3),
]


@pytest.mark.parametrize("command", COMMANDS, ids=repr)
def test_host_commands_round_trip(command: tsp.HostCommand) -> None:
    line = tsp.encode_command(command)
    assert line.endswith(b"\n")
    assert tsp.parse_host_line(line.rstrip(b"\n")) == command


@pytest.mark.parametrize(
    ("interval_ms", "window_ms"), [(2, 2), (10_241, 100), (100, 101), (100, 0)]
)
def test_scan_parameters_outside_the_ble_ranges_are_refused(
    interval_ms: int, window_ms: int
) -> None:
    with pytest.raises(ValueError, match="scan"):
        tsp.encode_scan(tsp.ScanMode.PASSIVE, interval_ms, window_ms)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (framed("SCAN fast 100 100"), R.BAD_FIELD),
        (framed("SCAN passive 100 200"), R.BAD_FIELD),
        (framed("SCAN passive 100"), R.FIELD_COUNT),
        (framed("SCAN passive x 100"), R.BAD_FIELD),
        (b"STOP*0000\n", R.BAD_CHECKSUM),
    ],
)
def test_bad_host_commands_are_rejected(line: bytes, reason: tsp.RejectReason) -> None:
    result = tsp.parse_host_line(line.rstrip(b"\n"))
    assert isinstance(result, tsp.Rejected)
    assert result.reason is reason


def test_an_unknown_host_command_is_not_a_command() -> None:
    assert tsp.parse_host_line(framed("REBOOT").rstrip(b"\n")) is None


# --- Versions and clocks ------------------------------------------------------------------------


def test_hello_reports_its_version_and_protocol() -> None:
    (hello,) = good(decode_all(tsp.encode_hello("fw", "1.10.2-dev", ("passive",), "1.4"))[0])
    assert isinstance(hello, tsp.Hello)
    assert hello.version_tuple == (1, 10, 2)
    assert hello.protocol == "TSP/1.4"


def test_capabilities_agree_with_the_profile_schema() -> None:
    assert tsp.KNOWN_CAPABILITIES == KNOWN_CAPABILITIES


@pytest.mark.parametrize(
    ("a", "b", "before"),
    [
        (1, 2, True),
        (2, 1, False),
        (5, 5, False),
        (0xFFFFFFF0, 0x10, True),
        (0x10, 0xFFFFFFF0, False),
    ],
)
def test_device_clock_order_survives_the_32_bit_wrap(a: int, b: int, before: bool) -> None:
    assert tsp.device_ms_before(a, b) is before


# --- Fuzzing ------------------------------------------------------------------------------------


@settings(max_examples=1500, derandomize=True, print_blob=True)
@given(st.lists(st.binary(max_size=900), max_size=12))
def test_feed_never_raises_and_stays_bounded(chunks: list[bytes]) -> None:
    decoder = tsp.LineDecoder()
    for chunk in chunks:
        for event in decoder.feed(chunk):
            assert isinstance(
                event, tsp.Hello | tsp.AdvertLine | tsp.ErrorLine | tsp.Ok | tsp.Rejected
            )
        assert decoder.buffered_bytes <= tsp.MAX_LINE_BYTES
    c = decoder.counters
    assert c.lines == c.events + c.ignored + c.rejected_total


@settings(max_examples=1500, derandomize=True, print_blob=True)
@given(
    st.lists(
        st.sampled_from([b"ADV ", b"HELLO ", b"OK ", b"ERR ", b"*", b" ", b"\r", b"\n", b"=", b"-"])
        | st.binary(max_size=8),
        max_size=60,
    )
)
def test_feed_never_raises_on_near_miss_lines(parts: list[bytes]) -> None:
    decoder = tsp.LineDecoder()
    data = b"".join(parts)
    decoder.feed(data)
    decoder.feed(data)
    assert decoder.buffered_bytes <= tsp.MAX_LINE_BYTES


_ADDRESSES = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02X}" for x in b))


@settings(max_examples=300, derandomize=True, print_blob=True)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 0xFFFFFFFF),
            _ADDRESSES,
            st.sampled_from(list(tsp.AddressType)),
            st.integers(tsp.RSSI_MIN_DBM, tsp.RSSI_MAX_DBM),
            st.binary(max_size=tsp.MAX_AD_BYTES),
        ),
        min_size=1,
        max_size=8,
    ),
    st.data(),
)
def test_adverts_survive_any_chunking(
    adverts: list[tuple[int, str, tsp.AddressType, int, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(tsp.encode_advert(*a) for a in adverts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = tsp.LineDecoder()
    events: list[tsp.Event] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        events += decoder.feed(stream[start:end])
    assert events == [tsp.AdvertLine(*a) for a in adverts]


# --- The spec's examples ------------------------------------------------------------------------

SPEC = Path(__file__).parents[2] / "firmware_config" / "serial_protocol.md"


def _spec_lines() -> list[bytes]:
    lines = []
    in_code = False
    for text in SPEC.read_text(encoding="utf-8").splitlines():
        if text.startswith("```"):
            in_code = not in_code
        elif in_code and re.fullmatch(r"[A-Z?]+( .*)?\*[0-9A-F]{4}", text):
            lines.append(text.encode("ascii"))
    return lines


def test_every_example_line_in_the_spec_is_valid() -> None:
    lines = _spec_lines()
    assert len(lines) >= 15
    for line in lines:
        device = tsp.parse_device_line(line)
        host = tsp.parse_host_line(line)
        valid_device = device is not None and not isinstance(device, tsp.Rejected)
        valid_host = host is not None and not isinstance(host, tsp.Rejected)
        assert valid_device or valid_host, f"{line!r}: {device or host}"
