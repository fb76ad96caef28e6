"""The iPhone apps' side of GATT check-in, simulated: the demo's and tests' stand-in for BlueZ and iOS.

Each `CheckinAttempt` of the simulated entrance becomes the write the iOS app makes
(docs/iphone-checkin.md, "Rules"): read the gateway's challenge (again every 30 s), compute
`checkin_payload` with the device's identity key, the app's clock, the challenge, the next seq for
that challenge and the RSSI it measured, and write it through `Gateway.checkin_write`, the same entry
the BlueZ GATT service uses. Nothing bypasses the verifier.

An app that slept holds an expired challenge (`stale_challenge`): its write is refused (`bad_tag`),
and it re-reads the challenge and writes again, as the documented app does.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Protocol

from edge.core.checkin import (
    CHALLENGE_PERIOD_S,
    CheckinAccepted,
    CheckinRefusal,
    CheckinRefused,
    CheckinResult,
    checkin_payload,
)
from edge.sim.entrance import CheckinAttempt

#: Challenges an app remembers seqs for (the verifier accepts the current and the previous one).
_SEQ_CHALLENGES = 4
#: Challenges the service remembers having read, to play an app that slept through two periods.
_HISTORY = 8
#: The documented app reads the challenge again this often (half the gateway's period: always in time).
REREAD_S = 30.0


class CheckinGateway(Protocol):
    """What a check-in service needs of the gateway (edge/app.py Gateway)."""

    def checkin_challenge(self) -> bytes: ...

    async def checkin_write(
        self, payload: bytes, central: str, link_rssi_dbm: float | None = None
    ) -> CheckinResult: ...


class _App:
    """One phone's app: the challenge it holds and the seqs it used with each challenge."""

    __slots__ = ("challenge", "read_at_s", "seqs")

    def __init__(self) -> None:
        self.challenge: bytes | None = None
        self.read_at_s = 0.0
        self.seqs: collections.OrderedDict[bytes, int] = collections.OrderedDict()

    def next_seq(self, challenge: bytes) -> int:
        """The seq of the next write with `challenge`: 0 for a new one, then counting up."""
        seq = self.seqs.get(challenge, -1) + 1
        self.seqs[challenge] = seq
        self.seqs.move_to_end(challenge)
        while len(self.seqs) > _SEQ_CHALLENGES:
            self.seqs.popitem(last=False)
        return seq


class SimulatedCheckinService:
    """Turns the simulated iPhones' check-in attempts into genuine writes to a gateway."""

    def __init__(self, gateway: CheckinGateway, period_s: float = CHALLENGE_PERIOD_S) -> None:
        self._gateway = gateway
        self._period_s = period_s
        self._apps: dict[str, _App] = {}
        self._history: collections.deque[tuple[float, bytes]] = collections.deque(maxlen=_HISTORY)
        self.writes = 0
        self.accepted = 0
        self.refused: collections.Counter[CheckinRefusal] = collections.Counter()
        self.stale_rewrites = 0  # writes made again after an expired challenge was refused

    async def deliver(self, attempt: CheckinAttempt) -> CheckinResult:
        """Write one check-in as the app would; return the gateway's last answer."""
        app = self._apps.get(attempt.device.ref)
        if app is None:
            app = self._apps[attempt.device.ref] = _App()
        now_s = attempt.t_s  # the app's clock: it knows nothing of the gateway's
        if app.challenge is None or now_s - app.read_at_s >= REREAD_S:
            self._read_challenge(app, now_s)
        assert app.challenge is not None
        if not attempt.stale_challenge:
            return await self._write(attempt, app, app.challenge)
        result = await self._write(attempt, app, self._expired_challenge(attempt, now_s))
        if isinstance(result, CheckinRefused) and result.reason is CheckinRefusal.BAD_TAG:
            self._read_challenge(app, now_s)
            assert app.challenge is not None
            self.stale_rewrites += 1
            result = await self._write(attempt, app, app.challenge)
        return result

    def _read_challenge(self, app: _App, now_s: float) -> None:
        challenge = self._gateway.checkin_challenge()
        app.challenge = challenge
        app.read_at_s = now_s
        if not self._history or self._history[-1][1] != challenge:
            self._history.append((now_s, challenge))

    def _expired_challenge(self, attempt: CheckinAttempt, now_s: float) -> bytes:
        """A challenge the app read before it slept: two periods old at least, so none is live."""
        for read_at_s, challenge in reversed(self._history):
            if now_s - read_at_s >= 2 * self._period_s:
                return challenge
        # Asleep since before this gateway drew its first challenge.
        return hashlib.sha256(b"slept " + attempt.device.ref.encode()).digest()[:16]

    async def _write(self, attempt: CheckinAttempt, app: _App, challenge: bytes) -> CheckinResult:
        device = attempt.device
        payload = checkin_payload(
            device.identity_key,
            device.exponent,
            attempt.t_s,
            challenge,
            app.next_seq(challenge),
            attempt.rssi_dbm,
        )
        self.writes += 1
        result = await self._gateway.checkin_write(payload, attempt.central)
        if isinstance(result, CheckinAccepted):
            self.accepted += 1
        else:
            self.refused[result.reason] += 1
        return result
