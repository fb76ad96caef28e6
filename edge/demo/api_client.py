"""A small HTTPS client for the bridge's enrollment API, as the retailer's app backend calls it.

One request per connection (the API closes each after its answer), a bearer token, JSON both ways,
a timeout on the whole exchange. Enough for the demo's simulated apps; not a general HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass
from typing import Any

from edge.errors import EdgeError

TIMEOUT_S = 10.0
MAX_REPLY_BYTES = 1 << 20


class ApiClientError(EdgeError):
    """The enrollment API could not be reached, or answered something that is not HTTP and JSON."""


@dataclass(frozen=True, slots=True)
class ApiReply:
    status: int
    body: dict[str, Any]


class EnrollmentApiClient:
    """Talks to the enrollment API at `host:port` with `token`, over TLS when `tls` is given."""

    def __init__(self, host: str, port: int, token: str, tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self._token = token
        self._tls = tls

    async def put_preferences(self, member: str, body: dict[str, Any]) -> ApiReply:
        """`PUT /v1/members/{member}/preferences` with `body`."""
        return await self.request("PUT", f"/v1/members/{member}/preferences", body)

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> ApiReply:
        """One request and its JSON answer; raise ApiClientError if there is none."""
        where = f"{method} {path} on {self.host}:{self.port}"
        payload = b"" if body is None else json.dumps(body).encode("utf-8")
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}",
            "Connection: close",
            f"Authorization: Bearer {self._token}",
        ]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + payload
        try:
            async with asyncio.timeout(TIMEOUT_S):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self._tls,
                    server_hostname=self.host if self._tls is not None else None,
                )
                try:
                    writer.write(raw)
                    await writer.drain()
                    status, answer = await _read_answer(reader, where)
                finally:
                    writer.close()
                    # The answer is in; the server may have closed first.
                    with contextlib.suppress(OSError, ssl.SSLError):
                        await writer.wait_closed()
        except TimeoutError:
            raise ApiClientError(f"{where}: no answer within {TIMEOUT_S:g} s") from None
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            raise ApiClientError(f"{where}: {exc!r}") from None
        try:
            body = json.loads(answer) if answer else {}
        except ValueError:
            raise ApiClientError(f"{where}: answer {status} is not JSON") from None
        if not isinstance(body, dict):
            raise ApiClientError(f"{where}: answer {status} is not a JSON object")
        return ApiReply(status, body)


async def _read_answer(reader: asyncio.StreamReader, where: str) -> tuple[int, bytes]:
    """The status and body of the answer, framed by its Content-Length (the API always sends one:
    reading to the end would wait out the API's linger after an early answer)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ApiClientError(f"{where}: the answer's head is too long") from None
    lines = head.decode("ascii", "replace").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "HTTP/1.1" or not parts[1].isdigit():
        raise ApiClientError(f"{where}: not an HTTP/1.1 answer: {lines[0][:80]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    if length is None or length > MAX_REPLY_BYTES:
        raise ApiClientError(f"{where}: answer {parts[1]} without a usable Content-Length")
    return int(parts[1]), await reader.readexactly(length)
