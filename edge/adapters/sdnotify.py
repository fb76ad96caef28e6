"""systemd's notification protocol: one datagram to the socket named in NOTIFY_SOCKET.

`READY=1`, `STATUS=...`, `STOPPING=1`, `WATCHDOG=1` (sd_notify(3)). A leading '@' in NOTIFY_SOCKET
names a socket in the abstract namespace. Without NOTIFY_SOCKET (not under systemd, or
`NotifyAccess=` refuses us) every call does nothing. A notification that cannot be sent is logged
once and never raises: systemd's watchdog notices a gateway that stops feeding it anyway.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from edge.logutil import OnceLogger

_LOGGER = logging.getLogger(__name__)


class SdNotifier:
    """Sends notifications to systemd; a no-op when `socket_path` is empty."""

    def __init__(self, socket_path: str = "", watchdog_usec: int = 0) -> None:
        self._address = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path
        #: systemd's watchdog timeout (WatchdogSec=) in seconds, or None when it watches nothing.
        self.watchdog_s = watchdog_usec / 1e6 if watchdog_usec > 0 else None
        self._log = OnceLogger(_LOGGER)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SdNotifier:
        """From NOTIFY_SOCKET, and WATCHDOG_USEC when WATCHDOG_PID is unset or names this process."""
        env = os.environ if environ is None else environ
        usec = 0
        pid = env.get("WATCHDOG_PID", "")
        if not pid or pid == str(os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", "0"))
            except ValueError:
                _LOGGER.warning(
                    "WATCHDOG_USEC=%r is not a number: no watchdog", env["WATCHDOG_USEC"]
                )
        return cls(env.get("NOTIFY_SOCKET", ""), usec)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *fields: str) -> bool:
        """Send `fields` (e.g. "READY=1") as one datagram; False if not sent."""
        if not self._address:
            return False
        message = "\n".join(f.replace("\n", " ") for f in fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message.encode("utf-8", "replace"), self._address)
        except OSError as exc:
            self._log.warning("send", "sd_notify to %s failed: %s", self._address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")
