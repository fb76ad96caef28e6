"""The iPhone check-in protocol (edge/core/checkin.py): what is accepted, what is refused and why,
challenge rotation, throttling, bounded memory, and the test vector in docs/iphone-checkin.md.

Hypothesis runs derandomized (`derandomize=True`): every run explores the same examples, a failure
reproduces from the test name alone, and hypothesis prints the falsifying example.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.core import checkin, eid, wire
from edge.core.checkin import (
    ATT_ERRORS,
    CENTRAL_BURST,
    CENTRAL_RATE_PER_S,
    CHALLENGE_LEN,
    CHALLENGE_PERIOD_S,
    PAYLOAD_LEN,
    RSSI_UNKNOWN,
    CheckinAccepted,
    CheckinRefusal,
    CheckinRefused,
    CheckinVerifier,
    checkin_key,
    checkin_payload,
)
from edge.core.offers import OfferEngine
from edge.core.pipeline import Pipeline
from edge.core.presence import PresenceConfig, PresenceTracker
from edge.core.resolver import EidResolver
from edge.core.wire import RosterDevice
from tests.factories import make_device

DOC = Path(__file__).resolve().parents[2] / "docs" / "iphone-checkin.md"
# A challenge period starts here (and an EID window of exponent 10), so offsets read plainly.
T0 = 1_790_000_000 - 1_790_000_000 % 15_360  # 15360 = lcm(60, 1024)
FUZZ = settings(max_examples=500, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
PHONE = "/org/bluez/hci0/dev_4A_00_00_00_00_01"
OTHER_PHONE = "/org/bluez/hci0/dev_4A_00_00_00_00_02"


def draws(seed: str = "challenges") -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


class Door:
    """A verifier over a resolver of `devices`, as the gateway builds it."""

    def __init__(self, *devices: RosterDevice, **kwargs: float) -> None:
        self.devices = devices
        self.resolver = EidResolver(devices, T0)
        self.verifier = CheckinVerifier(draws(), self.resolver.resolve, **kwargs)

    def write(
        self,
        device: RosterDevice,
        t_s: float,
        seq: int,
        *,
        rssi_dbm: int | None = -60,
        central: str = PHONE,
        challenge: bytes | None = None,
        link_rssi_dbm: float | None = None,
    ) -> checkin.CheckinResult:
        """The app reads the challenge at `t_s` (unless given one) and writes at once."""
        if challenge is None:
            challenge = self.verifier.challenge(t_s)
        payload = checkin_payload(
            device.identity_key, device.exponent, t_s, challenge, seq, rssi_dbm
        )
        return self.verifier.verify(payload, central, t_s, link_rssi_dbm)


def ids() -> Callable[[], str]:
    counter = iter(range(1_000_000))
    return lambda: f"e-{next(counter):06d}"


def reason(result: checkin.CheckinResult) -> CheckinRefusal | None:
    return result.reason if isinstance(result, CheckinRefused) else None


# --- accepted ---


def test_a_genuine_check_in_is_one_sighting_at_the_apps_rssi() -> None:
    phone = make_device()
    door = Door(phone)
    result = door.write(phone, T0 + 5, 0, rssi_dbm=-63)
    assert result == CheckinAccepted(phone, -63.0)
    assert door.verifier.accepted == 1
    assert sum(door.verifier.refused.values()) == 0


@pytest.mark.parametrize(
    ("app_rssi", "link_rssi", "expected"),
    [
        (-63, None, -63.0),  # the app's own reading
        (-63, -80.0, -63.0),  # the app's reading of this connection wins over BlueZ's cached one
        (None, -71.0, -71.0),  # the app could not read it: BlueZ's
        (-127, None, -127.0),  # the weakest a controller reports (HCI: -127..+20 dBm)
        (-128, None, -127.0),  # beyond it: clamped
        (20, None, 20.0),  # the strongest a controller reports
        (126, None, 20.0),  # no radio measures that: clamped
        (21, None, 20.0),
    ],
)
def test_the_rssi_comes_from_the_app_else_from_bluez(
    app_rssi: int | None, link_rssi: float | None, expected: float
) -> None:
    phone = make_device()
    result = Door(phone).write(phone, T0, 0, rssi_dbm=app_rssi, link_rssi_dbm=link_rssi)
    assert isinstance(result, CheckinAccepted)
    assert result.rssi_dbm == expected


def test_an_app_claiming_an_impossible_rssi_still_makes_a_visit_the_bridge_takes() -> None:
    """A buggy or lying app writing +126 dBm: the visit it makes must still be a valid payload (the
    wire's RssiDbm stops at +50), or the bridge drops it and the gateway resends it forever."""
    phone = make_device()
    door = Door(phone)
    pipeline = Pipeline(door.resolver, PresenceTracker(PresenceConfig()), OfferEngine(None), ids())
    events: list[wire.Event] = []
    for i in range(30):
        result = door.write(phone, T0 + i, i, rssi_dbm=126)
        assert isinstance(result, CheckinAccepted)
        events += pipeline.check_in(result.device, T0 + i, result.rssi_dbm, T0 + i)
    [visit] = [e for e in events if isinstance(e, wire.Visit)]
    assert wire.decode(wire.encode(visit)) == visit


@pytest.mark.parametrize("link_rssi", [None, float("nan"), float("inf")])
def test_no_rssi_from_anyone_is_refused_and_the_seq_stays_usable(link_rssi: float | None) -> None:
    phone = make_device()
    door = Door(phone)
    assert reason(door.write(phone, T0, 0, rssi_dbm=None, link_rssi_dbm=link_rssi)) == (
        CheckinRefusal.NO_SIGNAL
    )
    assert isinstance(door.write(phone, T0 + 1, 0, rssi_dbm=-60), CheckinAccepted)


def test_writes_about_once_a_second_for_a_whole_visit_are_all_accepted() -> None:
    phone = make_device()
    door = Door(phone)
    results = [door.write(phone, T0 + i, i) for i in range(600)]  # ten minutes, re-reading
    assert all(isinstance(r, CheckinAccepted) for r in results)


# --- refused: a table of bad writes ---


def _flip(payload: bytes, index: int) -> bytes:
    return payload[:index] + bytes((payload[index] ^ 0x01,)) + payload[index + 1 :]


@pytest.mark.parametrize(
    ("make_payload", "expected"),
    [
        (lambda good: b"", CheckinRefusal.MALFORMED),
        (lambda good: good[:19], CheckinRefusal.MALFORMED),
        (lambda good: good + b"\x00", CheckinRefusal.MALFORMED),
        (lambda good: good * 2, CheckinRefusal.MALFORMED),
        (lambda good: b"\x00" + good[1:], CheckinRefusal.MALFORMED),  # version 0
        (lambda good: b"\x02" + good[1:], CheckinRefusal.MALFORMED),  # a newer version
        (lambda good: bytes(PAYLOAD_LEN), CheckinRefusal.MALFORMED),
        (lambda good: _flip(good, 1), CheckinRefusal.UNKNOWN),  # an EID nobody has
        (lambda good: _flip(good, 9), CheckinRefusal.BAD_TAG),  # seq changed after tagging
        (lambda good: _flip(good, 11), CheckinRefusal.BAD_TAG),  # rssi changed after tagging
        (lambda good: _flip(good, 19), CheckinRefusal.BAD_TAG),  # the tag itself
    ],
    ids=[
        "empty",
        "19-bytes",
        "21-bytes",
        "40-bytes",
        "version-0",
        "version-2",
        "zeros",
        "unknown-eid",
        "seq-tampered",
        "rssi-tampered",
        "tag-tampered",
    ],
)
def test_a_bad_write_is_refused_with_its_reason(
    make_payload: Callable[[bytes], bytes], expected: CheckinRefusal
) -> None:
    phone = make_device()
    door = Door(phone)
    good = checkin_payload(
        phone.identity_key, phone.exponent, T0, door.verifier.challenge(T0), 0, -60
    )
    result = door.verifier.verify(make_payload(good), PHONE, T0)
    assert reason(result) is expected
    assert door.verifier.refused[expected] == 1
    assert door.verifier.accepted == 0
    # the refusal spent no seq: the genuine write still goes through
    assert isinstance(door.verifier.verify(good, PHONE, T0), CheckinAccepted)


def test_a_member_not_enrolled_here_is_unknown() -> None:
    enrolled, stranger = make_device(), make_device()
    assert reason(Door(enrolled).write(stranger, T0, 0)) is CheckinRefusal.UNKNOWN


@pytest.mark.parametrize("windows_ago", [2, 10, 1000])
def test_a_stale_token_from_a_window_long_gone_is_unknown(windows_ago: int) -> None:
    phone = make_device(exponent=10)
    door = Door(phone)
    challenge = door.verifier.challenge(T0)
    old_eid_time = T0 - windows_ago * 1024  # the app's clock, or a recorded token, that far back
    stale = checkin_payload(phone.identity_key, 10, old_eid_time, challenge, 0, -60)
    assert reason(door.verifier.verify(stale, PHONE, T0)) is CheckinRefusal.UNKNOWN


def test_a_token_from_the_neighbouring_window_is_accepted() -> None:
    """The resolver's skew window: an app whose clock is a little off still checks in."""
    phone = make_device(exponent=10)
    door = Door(phone)
    challenge = door.verifier.challenge(T0)
    late_clock = checkin_payload(phone.identity_key, 10, T0 - 1024, challenge, 0, -60)
    assert isinstance(door.verifier.verify(late_clock, PHONE, T0), CheckinAccepted)


def test_a_replayed_write_is_refused() -> None:
    phone = make_device()
    door = Door(phone)
    challenge = door.verifier.challenge(T0)
    payload = checkin_payload(phone.identity_key, phone.exponent, T0, challenge, 5, -60)
    assert isinstance(door.verifier.verify(payload, PHONE, T0), CheckinAccepted)
    # the same bytes again, from the same central or another one (a relay)
    assert reason(door.verifier.verify(payload, PHONE, T0 + 1)) is CheckinRefusal.REPLAYED
    assert reason(door.verifier.verify(payload, OTHER_PHONE, T0 + 1)) is CheckinRefusal.REPLAYED
    # a lower seq under the same challenge too; a higher one is fine
    assert reason(door.write(phone, T0 + 2, 4, challenge=challenge)) is CheckinRefusal.REPLAYED
    assert isinstance(door.write(phone, T0 + 2, 6, challenge=challenge), CheckinAccepted)
    assert door.verifier.refused[CheckinRefusal.REPLAYED] == 3


def test_seqs_count_per_challenge() -> None:
    phone = make_device()
    door = Door(phone)
    old = door.verifier.challenge(T0 + 10)
    assert isinstance(door.write(phone, T0 + 10, 7, challenge=old), CheckinAccepted)
    # a new challenge: its seqs start again from 0
    assert isinstance(door.write(phone, T0 + CHALLENGE_PERIOD_S, 0), CheckinAccepted)
    # the old one is still live for a period, and remembers its own last seq
    after = T0 + CHALLENGE_PERIOD_S + 1
    assert reason(door.write(phone, after, 7, challenge=old)) is CheckinRefusal.REPLAYED
    assert isinstance(door.write(phone, after, 8, challenge=old), CheckinAccepted)


def test_seq_bounds_are_checked_by_the_app_side() -> None:
    phone = make_device()
    with pytest.raises(ValueError, match="seq"):
        checkin_payload(phone.identity_key, phone.exponent, T0, bytes(16), 65536, -60)
    with pytest.raises(ValueError, match="challenge"):
        checkin_payload(phone.identity_key, phone.exponent, T0, bytes(15), 0, -60)


# --- challenge rotation ---


def test_the_challenge_changes_every_period_exactly_at_the_boundary() -> None:
    verifier = CheckinVerifier(draws(), lambda _: None)
    first = verifier.challenge(T0)
    assert len(first) == CHALLENGE_LEN
    assert verifier.challenge(T0 + CHALLENGE_PERIOD_S - 0.001) == first
    second = verifier.challenge(T0 + CHALLENGE_PERIOD_S)
    assert second != first
    assert verifier.challenge(T0 + 2 * CHALLENGE_PERIOD_S - 0.001) == second


def test_the_previous_challenge_is_accepted_for_one_more_period_then_refused() -> None:
    phone = make_device()
    door = Door(phone)
    read_late = door.verifier.challenge(T0 + CHALLENGE_PERIOD_S - 0.1)  # read just before rotating
    next_period = T0 + CHALLENGE_PERIOD_S + 0.1
    assert isinstance(door.write(phone, next_period, 0, challenge=read_late), CheckinAccepted)
    end_of_next = T0 + 2 * CHALLENGE_PERIOD_S - 0.1
    assert isinstance(door.write(phone, end_of_next, 1, challenge=read_late), CheckinAccepted)
    expired = T0 + 2 * CHALLENGE_PERIOD_S
    assert reason(door.write(phone, expired, 2, challenge=read_late)) is CheckinRefusal.BAD_TAG


def test_after_a_long_quiet_spell_no_old_challenge_is_live() -> None:
    """Rotation is lazy: a gateway nobody read from for periods must not revive the last one."""
    phone = make_device()
    door = Door(phone)
    old = door.verifier.challenge(T0)
    later = T0 + 5 * CHALLENGE_PERIOD_S
    assert reason(door.write(phone, later, 0, challenge=old)) is CheckinRefusal.BAD_TAG
    assert isinstance(door.write(phone, later, 0), CheckinAccepted)  # reading again fixes it


def test_a_clock_stepping_back_draws_a_fresh_challenge() -> None:
    phone = make_device()
    door = Door(phone)
    before = door.verifier.challenge(T0 + 10 * CHALLENGE_PERIOD_S)
    after = door.verifier.challenge(T0)  # NTP set the clock back ten minutes
    assert after != before
    assert reason(door.write(phone, T0, 0, challenge=before)) is CheckinRefusal.BAD_TAG
    assert isinstance(door.write(phone, T0, 0, challenge=after), CheckinAccepted)


def test_another_gateways_challenge_is_refused() -> None:
    phone = make_device()
    door = Door(phone)
    elsewhere = CheckinVerifier(draws("another door"), door.resolver.resolve)
    their_challenge = elsewhere.challenge(T0)
    assert reason(door.write(phone, T0, 0, challenge=their_challenge)) is CheckinRefusal.BAD_TAG


def test_a_short_random_draw_is_a_programming_error() -> None:
    verifier = CheckinVerifier(lambda n: bytes(n - 1), lambda _: None)
    with pytest.raises(ValueError, match="random_bytes"):
        verifier.challenge(T0)


@pytest.mark.parametrize(
    "kwargs",
    [{"period_s": 0.0}, {"rate_per_s": 0.0}, {"burst": 0.5}, {"period_s": -1.0}],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="period_s"):
        CheckinVerifier(draws(), lambda _: None, **kwargs)


# --- throttling ---


def test_a_flooding_central_is_throttled_while_another_is_not() -> None:
    phone, flooder = make_device(), make_device()
    door = Door(phone, flooder)
    challenge = door.verifier.challenge(T0)
    flood = [
        door.write(flooder, T0, seq, central=OTHER_PHONE, challenge=challenge) for seq in range(50)
    ]
    accepted = [r for r in flood if isinstance(r, CheckinAccepted)]
    assert len(accepted) == CENTRAL_BURST
    assert all(reason(r) is CheckinRefusal.THROTTLED for r in flood[int(CENTRAL_BURST) :])
    assert isinstance(door.write(phone, T0, 0, central=PHONE), CheckinAccepted)
    # even malformed bytes spend the flooder's tokens, and are refused as throttled first
    assert reason(door.verifier.verify(b"junk", OTHER_PHONE, T0)) is CheckinRefusal.THROTTLED


def test_a_throttled_central_refills_at_its_rate_up_to_its_burst() -> None:
    phone = make_device()
    door = Door(phone)
    challenge = door.verifier.challenge(T0)
    seq = iter(range(1000))

    def write(t_s: float) -> bool:
        return isinstance(door.write(phone, t_s, next(seq), challenge=challenge), CheckinAccepted)

    assert sum(write(T0) for _ in range(20)) == CENTRAL_BURST
    step_s = 1 / CENTRAL_RATE_PER_S
    assert write(T0 + step_s)  # one token back after 1/rate seconds
    assert not write(T0 + step_s)
    assert not write(T0 + 1.5 * step_s)  # half a token is not a write
    # a long pause refills the bucket to its burst, no further
    assert sum(write(T0 + 30) for _ in range(20)) == CENTRAL_BURST


def test_a_central_keeps_its_bucket_while_it_is_remembered() -> None:
    """Connecting again does not refill a flooder's bucket: it is keyed by BlueZ's device path."""
    phone = make_device()
    door = Door(phone)
    challenge = door.verifier.challenge(T0)
    for seq in range(int(CENTRAL_BURST)):
        assert isinstance(door.write(phone, T0, seq, challenge=challenge), CheckinAccepted)
    assert reason(door.write(phone, T0, 99, challenge=challenge)) is CheckinRefusal.THROTTLED


def test_new_centrals_fill_their_buckets_from_a_shared_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checkin, "NEWCOMERS_BURST", 20.0)
    monkeypatch.setattr(checkin, "NEWCOMERS_RATE_PER_S", 10.0)
    verifier = CheckinVerifier(draws(), lambda _: None)

    def judged(central: str, t_s: float, writes: int = 20) -> int:
        results = [verifier.verify(b"x", central, t_s) for _ in range(writes)]
        return sum(reason(r) is not CheckinRefusal.THROTTLED for r in results)

    # one central over its own rate: refused by its own bucket
    assert judged("/flooder", T0, 100) == CENTRAL_BURST
    # a swarm of made-up centrals: a full bucket while the budget lasts (20 - 8 left 12: one
    # more), then one write each
    assert [judged(f"/swarm/{i}", T0) for i in range(6)] == [CENTRAL_BURST, 1, 1, 1, 1, 1]
    # the budget refills at its rate, and each central's bucket at its own
    assert judged("/late", T0 + 1.0) == CENTRAL_BURST
    assert judged("/swarm/5", T0 + 1.0) == CENTRAL_RATE_PER_S


def test_a_swarm_of_made_up_centrals_does_not_starve_a_genuine_iphone() -> None:
    """One attacker connecting again and again under new addresses (a new BlueZ device path each
    time, a bucket of its own), faster than the gateway's budget for newcomers, for a minute: the
    shopper writing once a second is never refused, and the swarm's judged writes stay bounded."""
    phone = make_device()
    door = Door(phone)
    swarm_judged = 0
    newcomers = 0
    for second in range(60):
        t_s = T0 + second
        for i in range(100):  # a hundred new addresses a second, each writing as fast as it may
            newcomers += 1
            for _ in range(20):
                result = door.verifier.verify(b"x", f"/swarm/{second}/{i}", t_s + i / 100)
                swarm_judged += reason(result) is not CheckinRefusal.THROTTLED
            if i == 50:  # the shopper's write comes between two of the swarm's
                result = door.write(phone, t_s + i / 100, second)
                assert isinstance(result, CheckinAccepted), (second, result)
    # the newcomers' budget, and then one write for each newcomer beyond it
    assert swarm_judged <= checkin.NEWCOMERS_BURST + 60 * checkin.NEWCOMERS_RATE_PER_S + newcomers


# --- bounded memory ---


def test_the_throttle_table_is_bounded_oldest_forgotten_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checkin, "MAX_CENTRALS", 16)
    verifier = CheckinVerifier(draws(), lambda _: None)
    for _ in range(int(CENTRAL_BURST)):  # the first central spends its bucket
        verifier.verify(b"x", "/first", T0)
    assert reason(verifier.verify(b"x", "/first", T0)) is CheckinRefusal.THROTTLED
    for i in range(100):
        verifier.verify(b"x", f"/c/{i}", T0)
        assert verifier.tracked_centrals <= 16
    # forgotten, so it starts again with a full bucket (bounded memory wins over a long memory)
    assert reason(verifier.verify(b"x", "/first", T0)) is CheckinRefusal.MALFORMED


def test_the_seq_table_is_bounded_per_challenge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkin, "MAX_SEQS", 4)
    phones = [make_device() for _ in range(10)]
    door = Door(*phones)
    challenge = door.verifier.challenge(T0)
    for i, phone in enumerate(phones):
        result = door.write(phone, T0, 3, central=f"/c/{i}", challenge=challenge)
        assert isinstance(result, CheckinAccepted)
        assert door.verifier.tracked_seqs <= 4
    # the newest are remembered, so a replay of theirs is refused
    last = phones[-1]
    assert reason(door.write(last, T0, 3, central="/c/x", challenge=challenge)) is (
        CheckinRefusal.REPLAYED
    )
    # the oldest were forgotten: bounded memory wins over a long one (a replay of theirs would
    # need their write recorded in the last two minutes, among more than MAX_SEQS others)
    first = phones[0]
    assert isinstance(
        door.write(first, T0, 3, central="/c/y", challenge=challenge), CheckinAccepted
    )


def test_seqs_of_expired_challenges_are_forgotten() -> None:
    phone = make_device()
    door = Door(phone)
    for i in range(5):
        door.write(phone, T0 + i, i)
    assert door.verifier.tracked_seqs == 1
    door.verifier.challenge(T0 + 3 * CHALLENGE_PERIOD_S)
    assert door.verifier.tracked_seqs == 0


# --- hostile bytes ---


@pytest.fixture(scope="module")
def fuzz_door() -> Door:
    return Door(make_device(), make_device())


_T = st.floats(T0 - 10 * CHALLENGE_PERIOD_S, T0 + 10 * CHALLENGE_PERIOD_S)
_RSSI = st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-300, 300)


@FUZZ
@given(
    payload=st.binary(max_size=64),
    central=st.text(max_size=80),
    t_s=_T,
    link_rssi=_RSSI,
)
def test_verify_never_raises_on_arbitrary_bytes(
    fuzz_door: Door, payload: bytes, central: str, t_s: float, link_rssi: float | None
) -> None:
    result = fuzz_door.verifier.verify(payload, central, t_s, link_rssi)
    assert isinstance(result, CheckinAccepted | CheckinRefused)


@FUZZ
@given(
    rest=st.binary(min_size=PAYLOAD_LEN - 9, max_size=PAYLOAD_LEN - 9),
    which=st.integers(0, 1),
    t_s=_T,
    link_rssi=_RSSI,
)
def test_verify_never_raises_on_a_known_eid_with_arbitrary_rest(
    fuzz_door: Door, rest: bytes, which: int, t_s: float, link_rssi: float | None
) -> None:
    """Past the length, version and EID checks: the tag, seq and rssi bytes are arbitrary."""
    device = fuzz_door.devices[which]
    head = b"\x01" + eid.compute_eid(device.identity_key, device.exponent, eid.counter_at(T0))
    result = fuzz_door.verifier.verify(head + rest, f"/fuzz/{which}", t_s, link_rssi)
    # an 8-byte tag guessed at random: refused (2**-64 a try)
    assert reason(result) in (CheckinRefusal.BAD_TAG, CheckinRefusal.THROTTLED)


def test_every_refusal_has_an_att_error_for_the_app() -> None:
    assert set(ATT_ERRORS) == set(CheckinRefusal)
    assert ATT_ERRORS[CheckinRefusal.MALFORMED] == 0x0D
    assert all(0x80 < code <= 0x9F for r, code in ATT_ERRORS.items() if r != "malformed")
    assert len(set(ATT_ERRORS.values())) == len(ATT_ERRORS)


# --- the test vector in docs/iphone-checkin.md ---


def _doc_vector() -> dict[str, str]:
    text = DOC.read_text()
    block = re.search(r"<!-- test-vector -->\s*```text\n(.*?)```", text, re.DOTALL)
    assert block is not None, "docs/iphone-checkin.md lost its test-vector block"
    fields: dict[str, str] = {}
    for line in block.group(1).splitlines():
        if ":" in line:
            name, value = line.split(":", 1)
            fields[name.strip()] = value.strip().split(" ")[0]
    return fields


def test_the_documented_test_vector_is_what_the_gateway_accepts() -> None:
    v = _doc_vector()
    identity_key = bytes.fromhex(v["identity key"])
    exponent = int(v["exponent"])
    unix_s = int(v["time"])
    challenge = bytes.fromhex(v["challenge"])
    seq = int(v["seq"])
    rssi = int(v["rssi"])
    eid_value = eid.compute_eid(identity_key, exponent, eid.counter_at(unix_s))
    key = checkin_key(identity_key)
    head = bytes.fromhex(v["bytes 0..11"])
    assert v["EID"] == eid_value.hex()
    assert v["K"] == key.hex()
    assert head == b"\x01" + eid_value + seq.to_bytes(2, "big") + (rssi & 0xFF).to_bytes(1)
    mac = hmac.new(key, b"THCI" + challenge + head, hashlib.sha256).digest()
    assert v["HMAC"] == mac.hex()
    payload = checkin_payload(identity_key, exponent, unix_s, challenge, seq, rssi)
    assert v["tag"] == mac[:8].hex() == payload[12:].hex()
    assert v["write"] == payload.hex()
    # and the gateway takes it, at that time, with that challenge
    device = RosterDevice("d-vector", "m-vector", "gold", identity_key, exponent)
    verifier = CheckinVerifier(lambda n: challenge, EidResolver((device,), unix_s).resolve)
    assert verifier.verify(payload, PHONE, unix_s) == CheckinAccepted(device, float(rssi))


def test_the_documented_uuids_and_sizes_are_the_codes() -> None:
    text = DOC.read_text()
    for value in (
        checkin.CHECKIN_SERVICE_UUID,
        checkin.CHALLENGE_CHAR_UUID,
        checkin.CHECKIN_CHAR_UUID,
    ):
        assert value.upper() in text.upper()
    for refusal, code in ATT_ERRORS.items():
        assert re.search(rf"`0x{code:02X}`.*`{refusal.value}`", text), refusal
    assert RSSI_UNKNOWN == 127 and "`127` = unknown" in text
    # the pace and timing the app is told are the gateway's numbers
    assert f"allows {CENTRAL_RATE_PER_S:g} writes a second per phone" in text
    assert f"with a burst of {CENTRAL_BURST:g}" in text
    assert f"new one every {CHALLENGE_PERIOD_S:g} s" in text
