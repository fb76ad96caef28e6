"""A path in a config may name a FIFO, a device or a directory: every file the processes read at
start (keys, certificates, configs, API tokens) is refused in one line, at once, instead of
blocking for ever (a FIFO opened for reading waits for a writer) or reading without end."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from cloud_bridge.adapters.data_key import load_data_key
from cloud_bridge.adapters.http_api import TokenFile, server_tls_context
from cloud_bridge.config import load_bridge_config
from edge.adapters.files import read_regular_file
from edge.adapters.keystore import load_signing_key_file, load_trusted_signers
from edge.adapters.mqtt import tls_context
from edge.adapters.pki import LocalPki, TlsFiles, load_certificate, load_private_key
from edge.config import load_config

GUARD_S = 5


@contextlib.contextmanager
def no_hang() -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts a blocking open() or read() on this thread."""

    def expired(signum: int, frame: FrameType | None) -> None:
        raise AssertionError(f"blocked for {GUARD_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(GUARD_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path, 0o600)
    return path


def test_a_regular_file_is_read_and_anything_else_refused(tmp_path: Path, fifo: Path) -> None:
    small = tmp_path / "small"
    small.write_bytes(b"key")
    assert read_regular_file(small)[0] == b"key"
    with no_hang():
        for path, says in (
            (fifo, "not a regular file"),
            (tmp_path, "not a regular file"),
            (Path("/dev/zero"), "not a regular file"),
        ):
            with pytest.raises(OSError) as refused:
                read_regular_file(path)
            assert says in str(refused.value.strerror)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(OSError, match="larger than 100 bytes"):
        read_regular_file(big, 100)


def _tls(test_pki: LocalPki, fifo: Path, which: str) -> Callable[[], object]:
    files = test_pki.client_files("test/bridge/x")
    swapped = TlsFiles(
        fifo if which == "ca" else files.ca_file,
        fifo if which == "cert" else files.cert_file,
        fifo if which == "key" else files.key_file,
    )
    return lambda: tls_context(swapped)


@pytest.mark.parametrize(
    "reader",
    [
        "signing key",
        "data key",
        "trusted signers file",
        "certificate",
        "private key",
        "mqtt ca_file",
        "mqtt cert_file",
        "mqtt key_file",
        "api certificate",
        "gateway config",
        "bridge config",
        "api tokens",
    ],
)
def test_every_configured_file_refuses_a_fifo_at_once(
    fifo: Path, test_pki: LocalPki, reader: str
) -> None:
    server = test_pki.server_files(("127.0.0.1",))
    calls: dict[str, Callable[[], object]] = {
        "signing key": lambda: load_signing_key_file(fifo),
        "data key": lambda: load_data_key(fifo, environ={}),
        "trusted signers file": lambda: load_trusted_signers((), str(fifo)),
        "certificate": lambda: load_certificate(fifo),
        "private key": lambda: load_private_key(fifo),
        "mqtt ca_file": _tls(test_pki, fifo, "ca"),
        "mqtt cert_file": _tls(test_pki, fifo, "cert"),
        "mqtt key_file": _tls(test_pki, fifo, "key"),
        "api certificate": lambda: server_tls_context(server.cert_file, fifo),
        "gateway config": lambda: load_config(fifo),
        "bridge config": lambda: load_bridge_config(fifo),
        "api tokens": lambda: TokenFile(fifo).load(),
    }
    with no_hang():
        try:
            result = calls[reader]()
        except Exception as exc:  # each reader's own error type: one line naming the file
            message = str(exc)
        else:  # the trusted signers' loader reports problems rather than raising
            message = str(result)
    assert "not a regular file" in message and str(fifo) in message, message
    assert "\n" not in message
