"""The demo's apps state preferences over HTTPS: against a local peer speaking the API's bytes.

The peer is a real TLS server on loopback with a certificate from a test CA; it records each request
and answers what the test tells it to, as the enrollment API would (one answer per connection).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.adapters.http_api import server_tls_context
from edge.adapters.mqtt import MqttSettings
from edge.adapters.pki import LocalPki
from edge.demo.api_client import ApiClientError, EnrollmentApiClient
from edge.demo.preferences import StatedPreferences
from edge.demo.shopper_apps import PreferencesNotStated, ShopperApps

TOKEN = "thr_test-token"
Answer = Callable[[str, str], tuple[int, dict[str, Any]]]


@dataclass
class Peer:
    port: int
    ca_file: Path
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    answer: Answer = lambda method, path: (200, {"ok": True})
    close_after_answer: bool = True

    def client(self, ca_file: Path | None = None) -> EnrollmentApiClient:
        context = ssl.create_default_context(cafile=str(ca_file or self.ca_file))
        return EnrollmentApiClient("127.0.0.1", self.port, TOKEN, context)


def issue_server_cert(pki: LocalPki, directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "api.crt", directory / "api.key"
    pki.ca.issue_files("test-api", cert, key, server_names=("127.0.0.1",))
    return cert, key


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[Peer]:
    pki = LocalPki(tmp_path / "pki", "test-chain")
    cert, key = issue_server_cert(pki, tmp_path)
    state = Peer(0, pki.ca_file)
    held: list[asyncio.StreamWriter] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("ascii")
        request_line, *lines = head.rstrip("\r\n").split("\r\n")
        method, path, _ = request_line.split(" ")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        state.requests.append((method, path, headers, body))
        status, payload = state.answer(method, path)
        data = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        if state.close_after_answer:
            writer.close()
        else:
            held.append(writer)  # as the API lingers after an early answer

    server = await asyncio.start_server(
        on_connection, "127.0.0.1", 0, ssl=server_tls_context(cert, key)
    )
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def apps_stating(preferences: dict[str, StatedPreferences]) -> ShopperApps:
    return ShopperApps(
        lambda _: MqttSettings(), "demo-chain", list(preferences), preferences=preferences
    )


STATED = {
    "tok-a": StatedPreferences("m-a", ("beauty", "home"), ("discount",), 1, 3),
    "tok-b": StatedPreferences("m-b", per_day=0, per_week=0, no_offers=True),
}


async def test_apps_state_their_members_preferences_with_the_token_over_https(peer: Peer) -> None:
    apps = apps_stating(STATED)
    assert await apps.state_preferences(peer.client()) == 2
    seen = {
        path: (method, headers, json.loads(body)) for method, path, headers, body in peer.requests
    }
    assert set(seen) == {"/v1/members/m-a/preferences", "/v1/members/m-b/preferences"}
    for prefs in STATED.values():
        method, headers, body = seen[f"/v1/members/{prefs.member}/preferences"]
        assert method == "PUT"
        assert headers["authorization"] == f"Bearer {TOKEN}"
        assert headers["content-type"] == "application/json"
        assert body == prefs.to_json()


async def test_a_bridge_without_the_preferences_endpoint_stops_the_demo(peer: Peer) -> None:
    peer.answer = lambda method, path: (404, {"error": "not_found", "message": "no such endpoint"})
    with pytest.raises(PreferencesNotStated, match="no preferences endpoint"):
        await apps_stating(STATED).state_preferences(peer.client())


async def test_a_refused_preference_stops_the_demo_naming_it(peer: Peer) -> None:
    def answer(method: str, path: str) -> tuple[int, dict[str, Any]]:
        if "m-b" in path:
            return 400, {"error": "invalid", "message": "bad", "field": "interests[0]"}
        return 200, {}

    peer.answer = answer
    with pytest.raises(PreferencesNotStated, match=r"m-b/preferences: refused with 400 invalid"):
        await apps_stating(STATED).state_preferences(peer.client())


async def test_the_answer_is_read_by_its_length_not_by_the_close(peer: Peer) -> None:
    peer.close_after_answer = False
    async with asyncio.timeout(5):  # a guard: waiting for the close would take the client's 10 s
        reply = await peer.client().put_preferences("m-a", STATED["tok-a"].to_json())
    assert (reply.status, reply.body) == (200, {"ok": True})


async def test_an_api_with_a_certificate_from_another_ca_is_refused(
    peer: Peer, tmp_path: Path
) -> None:
    other = LocalPki(tmp_path / "other-pki", "other-chain")
    with pytest.raises(ApiClientError, match="CERTIFICATE_VERIFY_FAILED"):
        await peer.client(other.ca_file).put_preferences("m-a", {})
    assert peer.requests == []
