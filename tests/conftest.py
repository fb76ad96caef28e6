"""Fixtures for every test: a private Mosquitto, and a check that no test leaves threads behind."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge.adapters.pki import LocalPki
from edge.adapters.sqlite_store import SqliteGatewayStore
from tests.fakes.broker import MosquittoProcess

THREAD_GRACE_S = 2.0


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running (after a short grace for ending threads)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE_S
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    if leaked:
        pytest.fail(f"test left threads running: {', '.join(sorted(t.name for t in leaked))}")


@pytest.fixture(autouse=True)
def heap_unfrozen() -> Iterator[None]:
    """Undo the gc.freeze a full roster does (edge/services/sync.py), so no test inherits it."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPki:
    """One CA for the whole test session; each identity's certificate is made once and reused."""
    return LocalPki(tmp_path_factory.mktemp("pki"), "test")


@pytest.fixture
def mosquitto(tmp_path: Path, test_pki: LocalPki) -> Iterator[MosquittoProcess]:
    """A started Mosquitto on a free loopback port, with its data and log in tmp_path/mosquitto:
    TLS with client certificates and the generated ACL, as in production. A client's settings for
    an identity in one line: `mosquitto.client_settings(gateway_identity(address))`."""
    broker = MosquittoProcess(tmp_path / "mosquitto", pki=test_pki)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the gateway's database lives in a test (the directory does not exist yet)."""
    return tmp_path / "gw" / "gateway.sqlite"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteGatewayStore]:
    """An open gateway store on real SQLite, closed after the test."""
    opened = await SqliteGatewayStore.open(db_path)
    try:
        yield opened
    finally:
        await opened.close()
