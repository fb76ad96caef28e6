"""A tiny HTTP/1.1 client on asyncio streams, for talking to the enrollment API over loopback.

It sends exactly the bytes asked for (so tests can send malformed requests too) and reads the answer to
the end of the connection: the API closes every connection after one response.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

TIMEOUT_S = 10.0
_NO_BODY = object()


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    headers: dict[str, str]  # lower-cased names
    raw_body: bytes

    def json(self) -> Any:
        return json.loads(self.raw_body)


def build_request(
    method: str,
    path: str,
    *,
    token: str | None = None,
    json_body: object = _NO_BODY,
    body: bytes | None = None,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of a request; `json_body` is encoded, `body` is sent as it is."""
    if json_body is not _NO_BODY:
        body = json.dumps(json_body).encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def exchange(port: int, raw: bytes, host: str = "127.0.0.1") -> HttpReply:
    """Send `raw` on a fresh connection and parse the one response."""
    async with asyncio.timeout(TIMEOUT_S):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(raw)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
    return parse_reply(data)


async def request(port: int, method: str, path: str, **kwargs: Any) -> HttpReply:
    """Build a request (see build_request) and exchange it."""
    return await exchange(port, build_request(method, path, **kwargs))


def parse_reply(data: bytes) -> HttpReply:
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, f"no complete response head in {data[:200]!r}"
    status_line, *header_lines = head.decode("ascii").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body), "body length differs from Content-Length"
    return HttpReply(int(status), headers, body)
