"""A simulated TSP/1 scanner firmware on the master side of a pty (shared/RECIPES.md, "pyserial").

The source under test opens `port`, a symlink to the pty's slave, the way a Pi's udev rules expose a
dongle as /dev/serial/by-id/…: unplugging closes the pty and removes the link; plugging back in makes
a new pty (a new /dev/pts/N) and points the same link at it. Everything runs on the test's event loop
(`loop.add_reader` / `add_writer` on the master fd): no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import struct
import termios
import tty
from collections.abc import Callable, Iterable
from pathlib import Path

from edge.core import serial_protocol as tsp
from edge.core.advert import RawAdvert

GUARD_S = 10.0  # only a guard against hangs
_POLL_S = 0.005


class FakeSerialFirmware:
    """Answers HELLO?/SCAN/STOP like a firmware and emits what a test asks for."""

    def __init__(
        self,
        port: Path,
        *,
        firmware: str = "threshold-nrf52",
        version: str = "1.2.0",
        proto: str = "1.0",
        capabilities: tuple[str, ...] = ("passive", "active", "coded_phy"),
    ) -> None:
        self.port = port
        self.firmware = firmware
        self.version = version
        self.proto = proto
        self.capabilities = capabilities
        self.muted = False  # a hung firmware: reads commands, answers nothing
        self.scanning: tsp.ScanCommand | None = None
        self.commands: list[tsp.HostCommand] = []
        self.rejected: list[tsp.RejectReason] = []
        self.plugs = 0
        self._master: int | None = None
        self._slave: int | None = None
        self._lines = tsp.LineBuffer()
        self._out = bytearray()
        self._writing = False
        self._device_ms = itertools.count(0x1000, 7)

    # --- Plugging -----------------------------------------------------------------------------

    @property
    def plugged(self) -> bool:
        return self._master is not None

    @property
    def tty_path(self) -> str:
        assert self._slave is not None, "not plugged"
        return os.ttyname(self._slave)

    def plug(self) -> None:
        """A new pty appears and the stable link points at it; the firmware boots (HELLO)."""
        assert self._master is None, "already plugged"
        master, slave = os.openpty()
        tty.setraw(master)
        # Raw on the slave too until the host configures it: a fresh pty echoes, and the boot
        # HELLO would come straight back to us as a "command".
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        link_tmp = self.port.with_name(self.port.name + ".new")
        link_tmp.unlink(missing_ok=True)
        link_tmp.symlink_to(os.ttyname(slave))
        link_tmp.replace(self.port)  # atomically, as udev does
        self._lines.reset()
        self.scanning = None
        self.plugs += 1
        asyncio.get_running_loop().add_reader(master, self._on_readable)
        self._write(self.hello_line())  # on boot; lost if nobody has the port open yet

    def unplug(self) -> None:
        """The device vanishes: the pty closes (the host's reads fail) and the link is removed."""
        if self._master is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._master)
        if self._writing:
            loop.remove_writer(self._master)
            self._writing = False
        self._out.clear()
        os.close(self._master)
        assert self._slave is not None
        os.close(self._slave)
        self._master = self._slave = None
        self.port.unlink(missing_ok=True)
        self.scanning = None

    def close(self) -> None:
        self.unplug()

    # --- The firmware -------------------------------------------------------------------------

    def hello_line(self) -> bytes:
        return tsp.encode_hello(self.firmware, self.version, self.capabilities, self.proto)

    def _on_readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:  # EIO: no slave open; wait for the host to open it again
            return
        for item in self._lines.feed(data):
            if isinstance(item, tsp.RejectReason):
                self.rejected.append(item)
            elif item.text:
                self._handle(item.text)

    def _handle(self, line: bytes) -> None:
        command = tsp.parse_host_line(line)
        if isinstance(command, tsp.Rejected):
            self.rejected.append(command.reason)
            if not self.muted:
                code = tsp.ERR_CRC if command.reason is tsp.RejectReason.BAD_CHECKSUM else "syntax"
                self._write(tsp.encode_error(code, command.reason.value))
            return
        if command is None:
            if not self.muted:
                self._write(tsp.encode_error(tsp.ERR_UNKNOWN, "unknown command"))
            return
        self.commands.append(command)
        if self.muted:
            return
        match command:
            case tsp.HelloRequest():
                self._write(self.hello_line())
            case tsp.ScanCommand(mode):
                if mode.value not in self.capabilities:
                    self._write(tsp.encode_error(tsp.ERR_UNSUPPORTED, f"no {mode.value} scanning"))
                else:
                    self.scanning = command
                    self._write(tsp.encode_ok("SCAN"))
            case tsp.StopCommand():
                self.scanning = None
                self._write(tsp.encode_ok("STOP"))

    def advert_line(
        self, advert: RawAdvert, address_type: tsp.AddressType = tsp.AddressType.RANDOM
    ) -> bytes:
        return tsp.encode_advert(
            next(self._device_ms), advert.address, address_type, advert.rssi_dbm, advert.payload
        )

    # --- Writing ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Queue bytes for the host; written as the pty accepts them (the loop never blocks)."""
        if self._master is None:
            return
        self._out += data
        self._flush()

    def _flush(self) -> None:
        assert self._master is not None
        while self._out:
            try:
                n = os.write(self._master, self._out)
            except BlockingIOError:
                if not self._writing:
                    asyncio.get_running_loop().add_writer(self._master, self._flush)
                    self._writing = True
                return
            del self._out[:n]
        if self._writing:
            asyncio.get_running_loop().remove_writer(self._master)
            self._writing = False

    def _unread_by_host(self) -> int:
        """Bytes written but not yet read by the host (our queue plus the slave's input queue)."""
        if self._slave is None:
            return 0
        raw = fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0")
        return len(self._out) + int(struct.unpack("i", raw)[0])

    async def send(self, data: bytes, *, pieces: Iterable[int] = ()) -> None:
        """Write `data`; with `pieces` (sizes), write it in parts, each read by the host first."""
        sizes = list(pieces)
        start = 0
        for size in sizes:
            self._write(data[start : start + size])
            start += size
            await self.read_by_host()
        self._write(data[start:])
        await self.read_by_host()

    async def read_by_host(self) -> None:
        """Wait until the host has read everything written so far."""
        await wait_for(lambda: self._unread_by_host() == 0, "the host to read what was written")

    async def advertise(
        self,
        adverts: Iterable[RawAdvert],
        address_type: tsp.AddressType = tsp.AddressType.RANDOM,
    ) -> None:
        """Emit one ADV line per advert (RSSI, address and payload taken from it)."""
        await self.send(b"".join(self.advert_line(a, address_type) for a in adverts))

    async def wait_scanning(self) -> tsp.ScanCommand:
        await wait_for(lambda: self.scanning is not None, "the host to start scanning")
        assert self.scanning is not None
        return self.scanning


async def wait_for(predicate: Callable[[], bool], what: str, guard_s: float = GUARD_S) -> None:
    """Poll until `predicate()`; the timeout only guards against a hang."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(guard_s):
            # Polling, not an Event: the conditions include kernel queues (FIONREAD) and the state of
            # the source under test, which signal nothing.
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(_POLL_S)
            return
    raise AssertionError(f"gave up waiting for {what}")
