"""A logging filter that masks Bluetooth addresses and key- or EID-like hex in every log line.

Installed on the root handler by `edge-gateway` and `cloud-bridge` (`install_redaction`). bleak and
dbus-fast log device addresses, BlueZ object paths (`/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF`) and
advertisement bytes at DEBUG; a support bundle of `journalctl` output must not become a record of who
stood at the door.

What is masked, in the final message and in any traceback:

- MAC addresses with ':', '-' or '_' between the octets → `XX:XX:XX:XX:XX:XX` (same separator);
- Python bytes literals holding binary (`b'0\\xf8...'`: how dbus-fast shows ServiceData and
  ManufacturerData, and aiosqlite the identity keys it writes) → `b'…'`;
- in records of other packages' loggers, runs of exactly 16 or 32 and more hex digits (an EID, an
  identity key, a payload) → `<hex16>`, `<hex32>`...

Threshold's own loggers (`edge.*`, `cloud_bridge.*`) keep their hex: they log event ids (32 hex
digits), key ids and device refs (16) on purpose, and never an identity key or an EID; the privacy
tests read their every line at DEBUG to hold them to that (tests/integration/test_roster_sync.py).
A library's lines cannot be held to it, so every long hex run in them is masked.

Cheap: a record is scanned once per pattern, and left untouched (args and all) when nothing matched.
"""

from __future__ import annotations

import logging
import re

_HEX = "0-9A-Fa-f"
# Six octets, one separator used throughout, no hex digit either side ("dev_" of a BlueZ path is fine).
_MAC = re.compile(
    rf"(?<![{_HEX}])[{_HEX}]{{2}}([:_-])[{_HEX}]{{2}}(?:\1[{_HEX}]{{2}}){{4}}(?![{_HEX}])"
)
# A bytes literal with at least one escape (\xNN, \n...): binary data such as a key, an EID or an
# advert's ServiceData (its TX power byte alone is escaped). All-printable ones (topics, client ids in
# paho's lines) stay readable.
_BYTES = re.compile(
    r"""(?<![\w'"])b(?:'(?:[^'\\\n])*\\.(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n])*\\.(?:[^"\\\n]|\\.)*")"""
)
_LONG_HEX = re.compile(rf"(?<![{_HEX}])(?:[{_HEX}]{{32,}}|[{_HEX}]{{16}})(?![{_HEX}])")
OWN_LOGGERS = ("edge", "cloud_bridge", "firmware_config")


def _mask_mac(match: re.Match[str]) -> str:
    sep = match.group(1)
    return sep.join(["XX"] * 6)


def _mask_hex(match: re.Match[str]) -> str:
    return f"<hex{len(match.group())}>"


def redact(text: str, *, hex_runs: bool = True) -> str:
    """`text` with MAC addresses, bytes literals and (if `hex_runs`) long hex runs masked."""
    text = _MAC.sub(_mask_mac, text)
    text = _BYTES.sub("b'…'", text)
    if hex_runs:
        text = _LONG_HEX.sub(_mask_hex, text)
    return text


def _is_own(name: str) -> bool:
    return name.partition(".")[0] in OWN_LOGGERS


class RedactingFilter(logging.Filter):
    """Masks identifying values in each record's message and traceback; never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        hex_runs = not _is_own(record.name)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it as it always has
            return True
        masked = redact(message, hex_runs=hex_runs)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # What Formatter.format would add, masked; it uses exc_text when set.
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, hex_runs=hex_runs)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, hex_runs=hex_runs)
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Add a RedactingFilter to every handler of `logger` (the root logger by default).

    On the handlers, not the logger: a logger's filters do not see records propagated from its
    children, a handler's see every record it writes.
    """
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
