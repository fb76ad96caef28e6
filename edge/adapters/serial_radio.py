"""A BLE scanner co-processor on a serial port (nRF52840 dongle, ESP32) as a radio source.

pyserial-asyncio-fast reads the port; edge.core.serial_protocol decodes TSP/1 (spec:
firmware_config/serial_protocol.md). This module opens the port, runs the handshake (HELLO?, version
and capability checks, SCAN), stamps adverts with the host clock, and reconnects with jittered, capped
exponential backoff when the device disappears. A firmware this gateway cannot drive (another protocol
major, a missing capability, a version below its profile's minimum) is not retried: it is logged and
raised as `CoprocessorUnsupported`, and a person has to act.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping

import serial
import serial_asyncio_fast

from edge.core import serial_protocol as tsp
from edge.core.advert import RawAdvert
from edge.core.backoff import backoff_s
from edge.core.health import RadioHealth, RadioState
from edge.errors import EdgeError
from edge.logutil import OnceLogger
from firmware_config.profiles import CoprocessorProfile

_LOGGER = logging.getLogger(__name__)

READ_CHUNK_BYTES = 4096
CLOSE_TIMEOUT_S = 5.0  # closing runs pyserial's close in an executor; a guard, not a budget
RATE_WINDOW_S = 10  # adverts/s is averaged over this many whole seconds


class SerialRadioError(EdgeError):
    """Something went wrong with the co-processor on `device`; `reason` says what."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"serial co-processor on {device}: {reason}")
        self.device = device
        self.reason = reason


class SerialLinkError(SerialRadioError):
    """The port could not be opened, went away, or the device stopped answering; a retry can help.

    `kind` groups repeats for logging: open, read, closed, timeout, restart, radio, refused.
    """

    def __init__(self, device: str, reason: str, kind: str) -> None:
        super().__init__(device, reason)
        self.kind = kind


class CoprocessorUnsupported(SerialRadioError):
    """The firmware cannot be driven by this gateway (protocol, capability, version); no retry helps."""


class _Link:
    """One open port: the stream pair and the events decoded but not yet consumed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending: deque[tsp.Event] = deque()

    def send(self, line: bytes) -> None:
        self.writer.write(
            line
        )  # non-blocking; a write error aborts the transport and the read fails

    async def close(self) -> None:
        """Tell the device to stop (best effort) and close the port."""
        transport = self.writer.transport
        if not transport.is_closing():  # else it is already closing after a read or write error
            self.writer.write(tsp.encode_stop())
            # abort(), not close(): close() flushes with tcdrain, which blocks an executor thread
            # forever if a wedged device never reads; the STOP above went out with the write.
            transport.abort()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.writer.wait_closed()
        except (OSError, TimeoutError):  # serial.SerialException is an OSError
            pass


class SerialAdvertSource:
    """Delivers the adverts a TSP/1 co-processor hears, reconnecting when it disappears.

    `t_s` of each advert is `clock()` when its bytes were read; the device's own millisecond clock
    is kept only to notice reordering (`device_ms_regressions`).
    """

    name = "serial"

    def __init__(
        self,
        port: str,
        baudrate: int,
        *,
        scan_mode: str = "passive",
        scan_interval_ms: int = 100,
        scan_window_ms: int = 100,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        hello_timeout_s: float = 3.0,
        probe_after_s: float = 30.0,
        profiles: Mapping[str, CoprocessorProfile] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        try:
            self._mode = tsp.ScanMode(scan_mode)
        except ValueError:
            raise ValueError(
                f"scan_mode must be 'passive' or 'active', got {scan_mode!r}"
            ) from None
        self._scan_line = tsp.encode_scan(self._mode, scan_interval_ms, scan_window_ms)
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError("reconnect delays must satisfy 0 < reconnect_min_s <= reconnect_max_s")
        if hello_timeout_s <= 0 or probe_after_s <= 0:
            raise ValueError("hello_timeout_s and probe_after_s must be > 0")
        self.port = port
        self._baudrate = baudrate
        self._clock = clock
        self._monotonic = monotonic
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._hello_timeout_s = hello_timeout_s
        self._probe_after_s = probe_after_s
        self._profiles = profiles
        self._jitter = jitter
        self._decoder = tsp.LineDecoder()
        self._decode_log = OnceLogger(_LOGGER)
        self._link_log = OnceLogger(_LOGGER)
        self._state = RadioState.STARTING
        self._recoveries = 0
        self._last_error: str | None = None
        self._last_advert_mono: float | None = None
        self._rate: deque[tuple[int, int]] = deque()  # (whole second, adverts), RATE_WINDOW_S long
        self._last_valid_mono = 0.0  # last decoded event: the device is alive
        self._probe_sent_mono: float | None = None
        self._last_device_ms: int | None = None
        self.hello: tsp.Hello | None = None
        self.adverts = 0
        self.reconnect_attempts = 0
        self.device_ms_regressions = 0
        self.device_errors = 0
        self.dropped_before_scan = 0  # adverts from a previous session, before OK SCAN

    # --- Health -------------------------------------------------------------------------------

    @property
    def decode_counters(self) -> tsp.DecodeCounters:
        return self._decoder.counters

    def health(self) -> RadioHealth:
        """A snapshot of the radio's state for the status topic and LED."""
        now = self._monotonic()
        self._prune_rate(int(now))
        age = None if self._last_advert_mono is None else now - self._last_advert_mono
        return RadioHealth(
            source=self.name,
            state=self._state,
            adverts_per_s=sum(n for _, n in self._rate) / RATE_WINDOW_S,
            last_advert_age_s=age,
            recoveries=self._recoveries,
            last_error=self._last_error,
        )

    def _prune_rate(self, second: int) -> None:
        while self._rate and self._rate[0][0] <= second - RATE_WINDOW_S:
            self._rate.popleft()

    def _count_adverts(self, n: int, now: float) -> None:
        second = int(now)
        if self._rate and self._rate[-1][0] == second:
            self._rate[-1] = (second, self._rate[-1][1] + n)
        else:
            self._rate.append((second, n))
        self._prune_rate(second)
        self._last_advert_mono = now
        self.adverts += n

    # --- The source ---------------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[list[RawAdvert]]:
        """Yield the adverts of each read until closed; raise CoprocessorUnsupported if hopeless."""
        failures = 0  # consecutive sessions that did not reach scanning: drives the backoff
        scanned_before = False
        try:
            while True:
                link: _Link | None = None
                try:
                    link = await self._open()
                    await self._handshake(link)
                    if scanned_before:
                        self._recoveries += 1
                        _LOGGER.info("serial co-processor on %s is back; scanning", self.port)
                    self._state = RadioState.SCANNING
                    scanned_before = True
                    failures = 0
                    while True:
                        batch = await self._next_batch(link)
                        if batch:
                            yield batch
                except SerialLinkError as exc:
                    self._last_error = exc.reason
                    if self._state is RadioState.SCANNING:
                        _LOGGER.warning("%s; reconnecting", exc)
                    else:
                        self._link_log.warning(f"link:{exc.kind}", "%s; retrying", exc)
                    self._state = RadioState.RECOVERING
                except CoprocessorUnsupported as exc:
                    self._state = RadioState.FAILED
                    self._last_error = exc.reason
                    _LOGGER.error("%s", exc)
                    raise
                finally:
                    if link is not None:
                        await link.close()
                delay_s = self._backoff_s(failures)
                failures += 1
                self.reconnect_attempts += 1
                await asyncio.sleep(delay_s)
        finally:
            if self._state is not RadioState.FAILED:
                self._state = RadioState.STOPPED

    def _backoff_s(self, failures: int) -> float:
        """Capped exponential backoff with equal jitter: half fixed, half random."""
        return backoff_s(failures, self._reconnect_min_s, self._reconnect_max_s, self._jitter())

    async def _open(self) -> _Link:
        # No timeout here: pyserial opens with O_NONBLOCK, so open cannot wait on the device, and
        # cancelling it would leak the port opened in the executor.
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=self.port, baudrate=self._baudrate, exclusive=True
            )
        except (serial.SerialException, OSError) as exc:
            raise SerialLinkError(self.port, f"cannot open the port: {exc}", "open") from exc
        self._decoder.reset()  # a partial line from a previous connection is not the start of this
        self._probe_sent_mono = None
        self._last_device_ms = None
        return _Link(reader, writer)

    async def _read_events(self, link: _Link, timeout_s: float) -> list[tsp.Event]:
        """The events of the next read (or those left over), logging rejected lines."""
        if link.pending:
            events = list(link.pending)
            link.pending.clear()
            return events
        try:
            async with asyncio.timeout(timeout_s):
                data = await link.reader.read(READ_CHUNK_BYTES)
        except TimeoutError:  # an OSError too, but the caller's business, not a link failure
            raise
        except (serial.SerialException, OSError) as exc:
            raise SerialLinkError(self.port, f"read failed: {exc}", "read") from exc
        if not data:
            raise SerialLinkError(self.port, "the port closed (device unplugged?)", "closed")
        events = self._decoder.feed(data)
        valid = False
        for event in events:
            if isinstance(event, tsp.Rejected):
                self._decode_log.warning(
                    event.reason.value,
                    "serial %s: dropped a line (%s): %s",
                    self.port,
                    event.reason.value,
                    event.detail,
                )
            else:
                valid = True
        if valid:
            self._last_valid_mono = self._monotonic()
        return events

    async def _await_reply(
        self, link: _Link, what: str, wanted: type[tsp.Hello] | type[tsp.Ok]
    ) -> tsp.Event:
        """Read until an event of type `wanted` (or an ErrorLine) arrives; keep what follows it."""
        deadline = self._monotonic() + self._hello_timeout_s
        while True:
            remaining = deadline - self._monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                events = await self._read_events(link, remaining)
            except TimeoutError:
                garbage = self._decoder.counters.rejected_total
                hint = (
                    f"; {garbage} garbled lines so far: is the baud rate ({self._baudrate}) right?"
                    if garbage
                    else ""
                )
                raise SerialLinkError(
                    self.port, f"no {what} within {self._hello_timeout_s:g} s{hint}", "timeout"
                ) from None
            for i, event in enumerate(events):
                if isinstance(event, (wanted, tsp.ErrorLine)):
                    link.pending.extend(events[i + 1 :])
                    return event
                if isinstance(event, tsp.AdvertLine):
                    self.dropped_before_scan += 1

    async def _handshake(self, link: _Link) -> None:
        """§6: HELLO? → HELLO (checked) → SCAN → OK SCAN."""
        # A leading newline ends any partial line the device holds from before we opened the port.
        link.send(b"\n" + tsp.encode_hello_request())
        reply = await self._await_reply(link, "HELLO reply to HELLO?", tsp.Hello)
        if isinstance(reply, tsp.ErrorLine):
            raise SerialLinkError(
                self.port, f"HELLO? answered ERR {reply.code} {reply.text}", "refused"
            )
        assert isinstance(reply, tsp.Hello)
        self._check_hello(reply)
        link.send(self._scan_line)
        reply = await self._await_reply(link, "OK SCAN", tsp.Ok)
        if isinstance(reply, tsp.ErrorLine):
            problem = f"SCAN {self._mode.value} was refused: ERR {reply.code} {reply.text}".strip()
            if reply.code in (tsp.ERR_UNSUPPORTED, tsp.ERR_RANGE, tsp.ERR_SYNTAX, tsp.ERR_UNKNOWN):
                raise CoprocessorUnsupported(
                    self.port, f"{problem}; check radio.serial scan settings or the firmware"
                )
            raise SerialLinkError(self.port, problem, "refused")
        self._last_valid_mono = self._monotonic()

    def _check_hello(self, hello: tsp.Hello) -> None:
        who = f"{hello.firmware} {hello.version}"
        if hello.proto_major != tsp.PROTOCOL_MAJOR:
            raise CoprocessorUnsupported(
                self.port,
                f"{who} speaks {hello.protocol}, this gateway speaks "
                f"{tsp.PROTOCOL_NAME}/{tsp.PROTOCOL_MAJOR}: flash a firmware that speaks "
                f"{tsp.PROTOCOL_NAME}/{tsp.PROTOCOL_MAJOR} (firmware_config/coprocessor_profiles.toml "
                "lists them) or update the gateway software",
            )
        if self._mode.value not in hello.capabilities:
            caps = ",".join(sorted(hello.capabilities)) or "none"
            raise CoprocessorUnsupported(
                self.port,
                f"{who} cannot scan {self._mode.value} (caps={caps}): "
                "configure passive scanning or flash a firmware that can",
            )
        profile = self._profiles.get(hello.firmware) if self._profiles is not None else None
        if profile is not None and hello.version_tuple < profile.min_version:
            raise CoprocessorUnsupported(
                self.port,
                f"{who} is older than {profile.min_version_text}, the oldest supported "
                f"{hello.firmware}: reflash it",
            )
        if self._profiles is not None and profile is None:
            self._link_log.warning(
                f"unknown-firmware:{hello.firmware}",
                "serial %s: firmware %r has no profile in coprocessor_profiles.toml; "
                "driving it as %s",
                self.port,
                hello.firmware,
                hello.protocol,
            )
        if hello != self.hello:
            _LOGGER.info(
                "serial co-processor on %s: %s (%s, caps=%s)",
                self.port,
                who,
                hello.protocol,
                ",".join(sorted(hello.capabilities)),
            )
        self.hello = hello

    async def _next_batch(self, link: _Link) -> list[RawAdvert]:
        """The adverts of the next read; handles the other lines and the liveness probe."""
        now = self._monotonic()
        if self._probe_sent_mono is None:
            timeout_s = self._last_valid_mono + self._probe_after_s - now
        else:
            timeout_s = self._probe_sent_mono + self._hello_timeout_s - now
        try:
            events = await self._read_events(link, max(timeout_s, 0.0))
        except TimeoutError:
            if self._probe_sent_mono is not None:
                raise SerialLinkError(
                    self.port,
                    f"silent for {self._probe_after_s:g} s and no reply to HELLO? "
                    f"within {self._hello_timeout_s:g} s",
                    "timeout",
                ) from None
            self._probe_sent_mono = self._monotonic()  # §6: silence → ask whether it is alive
            link.send(tsp.encode_hello_request())
            return []
        t_s = self._clock()  # one receipt time for everything read together
        batch: list[RawAdvert] = []
        for event in events:
            match event:
                case tsp.AdvertLine():
                    if self._last_device_ms is not None and tsp.device_ms_before(
                        event.device_ms, self._last_device_ms
                    ):
                        self.device_ms_regressions += 1
                    self._last_device_ms = event.device_ms
                    batch.append(event.to_raw_advert(t_s))
                case tsp.Hello():
                    if self._probe_sent_mono is None:
                        # §4: an unasked HELLO means the device restarted and is no longer scanning.
                        raise SerialLinkError(self.port, "the co-processor restarted", "restart")
                    self._probe_sent_mono = None
                    self._check_hello(event)
                case tsp.ErrorLine(code, text):
                    self.device_errors += 1
                    if code == tsp.ERR_RADIO:  # §8: the firmware stopped scanning
                        raise SerialLinkError(
                            self.port, f"radio error on the device: {text}", "radio"
                        )
                    self._decode_log.warning(
                        f"err:{code}", "serial %s: device reports ERR %s %s", self.port, code, text
                    )
                case tsp.Ok(command):
                    _LOGGER.debug("serial %s: unexpected OK %s", self.port, command)
                case tsp.Rejected():
                    pass  # logged and counted when read
        if batch:
            self._count_adverts(len(batch), self._monotonic())
        return batch
