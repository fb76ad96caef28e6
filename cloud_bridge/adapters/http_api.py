"""The enrollment API: HTTP/1.1 + JSON for the retailer's app backend, on `asyncio.start_server`.

A small, strict server instead of a new dependency: one request per connection (`Connection: close`),
bodies framed by Content-Length only (no chunked coding) and at most 64 KiB, a timeout on every read and
write (the whole head within 10 s, every read within 5 s: a client sending byte by byte is cut
off), CRLF line endings, ASCII heads. Clients authenticate with `Authorization: Bearer <token>`; the
tokens file holds only SHA-256 hashes of the tokens, one per line, and is re-read when it changes, so
`cloud-bridge api-token` adds a token and deleting its line revokes it without a restart. It serves
HTTPS with a certificate and key ([api] tls_cert_file, tls_key_file); the bridge's config refuses to
listen beyond loopback without them unless told so explicitly. docs/enrollment-api.md is the schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import ssl
import stat
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from cloud_bridge.core.enrollment import (
    AlreadyEnrolled,
    Enrollment,
    EnrollmentError,
    InvalidRequest,
    NoConsent,
    RecordsUnavailable,
    TierConflict,
    UnknownDevice,
    UnknownMember,
    parse_enroll_request,
    parse_withdraw_request,
)
from cloud_bridge.core.preferences import not_stated, parse_preferences_request
from cloud_bridge.errors import ApiError
from edge.adapters.files import read_regular_file
from edge.errors import ConfigError
from edge.logutil import OnceLogger

_LOGGER = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8480
MAX_BODY_BYTES = 64 * 1024
MAX_HEAD_BYTES = 16 * 1024  # request line and headers
MAX_HEADERS = 64
MAX_QUERY_PARAMS = 16
MAX_TOKEN_CHARS = 256
READ_TIMEOUT_S = 10.0  # for the whole head, and again for the whole body
IDLE_READ_TIMEOUT_S = 5.0  # for each read: a line of the head, a chunk of the body
BODY_CHUNK_BYTES = 16 * 1024
WRITE_TIMEOUT_S = 10.0
LINGER_TIMEOUT_S = (
    2.0  # after an early answer: let the client finish sending, so it reads the answer
)
LINGER_MAX_BYTES = 1 << 20
MAX_CONNECTIONS = 64
CLOSE_GRACE_S = 5.0  # on close, how long a request in progress may take to finish
RETRY_AFTER_S = 5
API_TOKEN_PREFIX = "thr_"  # makes a leaked token easy to recognise (and to scan for)
API_TOKEN_BYTES = 32

_TOKEN_CHARS = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_TOKEN68 = re.compile(r"^[A-Za-z0-9._~+/-]+=*$")  # RFC 9110 token68 (Bearer credentials)
_HASH_LINE = re.compile(r"^[0-9a-f]{64}$")
_JSON_MEDIA_TYPE = "application/json"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # the methods that take a JSON body


# --- tokens ---------------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    """The SHA-256 (hex) of an API token: what the tokens file stores instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_api_token() -> str:
    """A fresh API token from the CSPRNG (256 bits)."""
    return API_TOKEN_PREFIX + secrets.token_urlsafe(API_TOKEN_BYTES)


def add_token_hash(path: Path, digest: str) -> None:
    """Append a token's hash to the tokens file, creating it; the file ends up mode 0600."""
    if not _HASH_LINE.match(digest):
        raise ValueError("digest must be 64 lowercase hex digits")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file may have been created with looser permissions
        os.write(fd, f"{digest}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


class TokenFile:
    """The API tokens' SHA-256 hashes, one per line ('#' comments allowed); reloaded when it changes.

    If a reload fails (the file vanished, became writable by others or has a bad line), every token
    is refused until it is fixed: a broken file must not keep revoked tokens working.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._hashes: tuple[bytes, ...] = ()
        self._stamp: tuple[int, int, int] | None = None
        self._errors = OnceLogger(_LOGGER)

    def load(self) -> int:
        """Read the file now; return the number of tokens; raise ConfigError naming line and fix."""
        try:
            st = self.path.stat()
        except OSError as exc:
            raise ConfigError(
                str(self.path),
                "-",
                f"cannot be read ({exc.strerror}): create a token with "
                f"`cloud-bridge api-token --tokens-file {self.path}`",
            ) from None
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ConfigError(
                str(self.path),
                "-",
                "is writable by group or others, who could add tokens: chmod 600 it",
            )
        try:
            text = read_regular_file(self.path)[0].decode("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(self.path), "-", f"cannot be read: {exc}") from None
        hashes = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not _HASH_LINE.match(line):
                raise ConfigError(
                    str(self.path),
                    f"line {number}",
                    "is not a SHA-256 hash (64 lowercase hex digits); the file holds token "
                    "hashes, never tokens: use `cloud-bridge api-token` to add one",
                )
            hashes.append(bytes.fromhex(line))
        self._hashes = tuple(hashes)
        self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        return len(hashes)

    def verify(self, token: str) -> bool:
        """Whether `token` is one of the file's; constant time in the token and the hash compared."""
        try:
            st = self.path.stat()
            if (st.st_ino, st.st_mtime_ns, st.st_size) != self._stamp:
                self.load()
                _LOGGER.info("%s reloaded: %d API tokens", self.path, len(self._hashes))
        except (OSError, ConfigError) as exc:
            self._hashes, self._stamp = (), None
            self._errors.warning(
                str(self.path), "refusing every API token: %s", getattr(exc, "problem", exc)
            )
            return False
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found = False
        for stored in self._hashes:  # no early exit: the time taken does not say which one matched
            found |= hmac.compare_digest(stored, digest)
        return found


# --- HTTP -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A JSON response (`body`), or other content (`raw`, of `content_type`: a CSV report)."""

    status: int
    body: Mapping[str, Any]
    headers: tuple[tuple[str, str], ...] = ()
    raw: bytes | None = None
    content_type: str = "application/json"

    def encode(self) -> bytes:
        if self.raw is not None:
            payload = self.raw
        else:
            payload = json.dumps(self.body, separators=(",", ":")).encode("utf-8")
        reason = HTTPStatus(self.status).phrase
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(payload)}",
            "Connection: close",
            "Cache-Control: no-store",  # an enrollment response carries a key
            "X-Content-Type-Options: nosniff",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + payload


class HttpProblem(Exception):
    """A request the API refuses: becomes `{"error": code, "message": ...}` with `status`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers

    def response(self) -> HttpResponse:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return HttpResponse(self.status, body, self.headers)


class _ClientGone(Exception):
    """The client closed the connection mid-request: nobody to answer."""


@dataclass(slots=True)
class Request:
    method: str
    path: str
    version: str
    headers: dict[str, list[str]]
    body_pending: bool = False  # a declared body not read (yet): linger before closing
    body: bytes = b""
    where: str = field(init=False, default="")
    #: The query string's parameters, each given once (`?from=2026-11-01&store=s1`).
    query: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.where = f"{self.method} {self.path}"

    def header(self, name: str) -> str | None:
        """The single value of header `name`; a repeated one is refused."""
        values = self.headers.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise HttpProblem(
                400, "bad_request", f"{self.where}: header {name} is repeated; send it once"
            )
        return values[0]


def _parse_head(raw: bytes) -> Request:
    """Parse the request line and headers (ending with the blank line); raise HttpProblem."""
    try:
        text = raw[:-4].decode("ascii")
    except UnicodeDecodeError:
        raise HttpProblem(400, "bad_request", "the request head is not ASCII") from None
    lines = text.split("\r\n")
    if any("\r" in line or "\n" in line or "\0" in line for line in lines):
        raise HttpProblem(400, "bad_request", "the request head has a bare CR, LF or NUL")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN_CHARS.match(parts[0]) or not parts[1].startswith("/"):
        raise HttpProblem(400, "bad_request", "the request line must be 'METHOD /path HTTP/1.1'")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpProblem(505, "http_version_not_supported", f"{version!r}: use HTTP/1.1")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpProblem(431, "headers_too_large", f"more than {MAX_HEADERS} headers")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN_CHARS.match(name):  # also refuses obs-fold (leading space)
            raise HttpProblem(400, "bad_request", f"malformed header line {line[:40]!r}")
        headers.setdefault(name.lower(), []).append(value.strip(" \t"))
    path, query_mark, query = target.partition("?")
    request = Request(method, path, version, headers)
    if query_mark:
        request.query = _parse_query(request, query)
    if version == "HTTP/1.1" and request.header("host") is None:
        raise HttpProblem(400, "bad_request", f"{request.where}: the Host header is missing")
    return request


def _parse_query(request: Request, query: str) -> dict[str, str]:
    """`a=1&b=x%20y` as {name: value}; a repeated, nameless or undecodable parameter is refused."""
    params: dict[str, str] = {}
    for part in query.split("&") if query else ():
        raw_name, _, raw_value = part.partition("=")
        try:
            name = urllib.parse.unquote_plus(raw_name, errors="strict")
            value = urllib.parse.unquote_plus(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise HttpProblem(
                400,
                "bad_request",
                f"{request.where}: query parameter {raw_name[:40]!r} is not UTF-8",
            ) from None
        if not name or len(params) >= MAX_QUERY_PARAMS:
            raise HttpProblem(
                400,
                "bad_request",
                f"{request.where}: the query string must be name=value pairs, at most "
                f"{MAX_QUERY_PARAMS}",
            )
        if name in params:
            raise HttpProblem(
                400,
                "bad_request",
                f"{request.where}: query parameter {name!r} is repeated",
                field=name,
            )
        params[name] = value
    return params


def _bearer_token(request: Request) -> str | None:
    value = request.header("authorization")
    if value is None:
        return None
    scheme, _, credentials = value.partition(" ")
    credentials = credentials.strip(" ")
    if scheme.lower() != "bearer" or not 0 < len(credentials) <= MAX_TOKEN_CHARS:
        return None
    return credentials if _TOKEN68.match(credentials) else None


def _content_length(request: Request) -> int | None:
    value = request.header("content-length")
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        raise HttpProblem(
            400, "bad_request", f"{request.where}: Content-Length {value[:20]!r} is not a length"
        )
    return int(value)


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media_type, *params = content_type.split(";")
    if media_type.strip().lower() != _JSON_MEDIA_TYPE:
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            return False
    return True


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object (an empty body is an empty object); raise HttpProblem 400."""
    if not request.body:
        return {}
    where = request.where
    try:
        value = json.loads(
            request.body.decode("utf-8"),
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
        )
    except UnicodeDecodeError:
        raise HttpProblem(400, "invalid_json", f"{where}: the body is not UTF-8") from None
    except _DuplicateKey as exc:
        raise HttpProblem(
            400,
            "invalid_field",
            f"{where}: field '{exc.key[:40]}' appears twice in the body; send it once",
            field=exc.key[:40],
        ) from None
    except json.JSONDecodeError as exc:
        raise HttpProblem(
            400,
            "invalid_json",
            f"{where}: the body is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}); send a JSON object",
        ) from None
    except (ValueError, RecursionError) as exc:
        raise HttpProblem(
            400, "invalid_json", f"{where}: the body is not valid JSON ({exc}); send a JSON object"
        ) from None
    if not isinstance(value, dict):
        raise HttpProblem(400, "invalid_json", f"{where}: the body must be a JSON object")
    return value


# --- routes ---------------------------------------------------------------------------------------

#: Answers one request; the string is the path's captured segment ("" when there is none). It
#: raises HttpProblem for what it refuses (or an EnrollmentError, mapped by `_domain_problem`).
Handler = Callable[[Request, str], Awaitable[HttpResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    """A path pattern (one capture group at most) and its handler per method."""

    pattern: re.Pattern[str]
    methods: Mapping[str, Handler]
    #: The query parameters it takes; any other is refused (400, naming it).
    query: frozenset[str] = frozenset()

    @classmethod
    def of(cls, pattern: str, methods: Mapping[str, Handler], query: tuple[str, ...] = ()) -> Route:
        return cls(re.compile(pattern), methods, frozenset(query))


class EnrollmentApi:
    """Routes an authenticated request to the enrollment and maps its errors to HTTP."""

    def __init__(self, enrollment: Enrollment) -> None:
        self.enrollment = enrollment

    async def enroll(self, request: Request, member: str) -> HttpResponse:
        result = await self.enrollment.enroll(parse_enroll_request(member, json_object(request)))
        return HttpResponse(201, result.to_json(), (("Location", f"/v1/members/{member}"),))

    async def revoke(self, request: Request, device: str) -> HttpResponse:
        return HttpResponse(200, (await self.enrollment.revoke(device)).to_json())

    async def withdraw_consent(self, request: Request, member: str) -> HttpResponse:
        member = parse_withdraw_request(member, json_object(request))
        return HttpResponse(200, (await self.enrollment.withdraw_consent(member)).to_json())

    async def member_status(self, request: Request, member: str) -> HttpResponse:
        return HttpResponse(200, (await self.enrollment.member_status(member)).to_json())

    async def clone_alerts(self, request: Request, _: str) -> HttpResponse:
        alerts = await self.enrollment.clone_alerts()
        return HttpResponse(200, {"alerts": [a.to_json() for a in alerts]})

    async def set_preferences(self, request: Request, member: str) -> HttpResponse:
        parsed = parse_preferences_request(member, json_object(request))
        return HttpResponse(200, (await self.enrollment.set_preferences(parsed)).to_json())

    async def preferences(self, request: Request, member: str) -> HttpResponse:
        stated = await self.enrollment.preferences(member)
        return HttpResponse(200, not_stated(member) if stated is None else stated.to_json())

    async def forget_preferences(self, request: Request, member: str) -> HttpResponse:
        forgotten = await self.enrollment.forget_preferences(member)
        return HttpResponse(200, {**not_stated(member), "forgotten": forgotten})

    def routes(self) -> tuple[Route, ...]:
        """The enrollment endpoints; path segments are validated by the handlers (ids)."""
        return (
            Route.of(r"^/v1/members/([^/]+)/devices$", {"POST": self.enroll}),
            Route.of(r"^/v1/devices/([^/]+)$", {"DELETE": self.revoke}),
            Route.of(r"^/v1/members/([^/]+)/consent/withdraw$", {"POST": self.withdraw_consent}),
            Route.of(
                r"^/v1/members/([^/]+)/preferences$",
                {
                    "GET": self.preferences,
                    "PUT": self.set_preferences,
                    "DELETE": self.forget_preferences,
                },
            ),
            Route.of(r"^/v1/members/([^/]+)$", {"GET": self.member_status}),
            Route.of(r"^/v1/(alerts)$", {"GET": self.clone_alerts}),
        )


def _route(routes: Sequence[Route], request: Request) -> tuple[Handler, str]:
    for route in routes:
        match = route.pattern.match(request.path)
        if match is None:
            continue
        methods = route.methods
        handler = methods.get(request.method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            raise HttpProblem(
                405,
                "method_not_allowed",
                f"{request.where}: this endpoint takes {allowed}; see docs/enrollment-api.md",
                headers=(("Allow", allowed),),
            )
        unknown = sorted(set(request.query) - route.query)
        if unknown:
            takes = ", ".join(sorted(route.query)) or "none"
            raise HttpProblem(
                400,
                "bad_request",
                f"{request.where}: unknown query parameter {unknown[0]!r} (this endpoint takes "
                f"{takes})",
                field=unknown[0],
            )
        return handler, match.group(1) if route.pattern.groups else ""
    raise HttpProblem(
        404,
        "not_found",
        f"{request.where}: no such endpoint; the API is described in docs/enrollment-api.md",
    )


def _domain_problem(request: Request, exc: EnrollmentError) -> HttpProblem:
    message = f"{request.where}: {exc.message}"
    if isinstance(exc, InvalidRequest):
        return HttpProblem(400, exc.code, message, field=exc.field)
    if isinstance(exc, UnknownMember | UnknownDevice):
        return HttpProblem(404, exc.code, message)
    if isinstance(exc, AlreadyEnrolled | TierConflict | NoConsent):
        return HttpProblem(409, exc.code, message)
    if isinstance(exc, RecordsUnavailable):
        return HttpProblem(
            503,
            exc.code,
            f"{request.where}: the loyalty records are busy or unavailable; retry in "
            f"{RETRY_AFTER_S} s",
            headers=(("Retry-After", str(RETRY_AFTER_S)),),
        )
    return HttpProblem(400, exc.code, message)


# --- the server -----------------------------------------------------------------------------------


class EnrollmentApiServer:
    """The enrollment API listening on `host:port`; `start()`, then `close()` (or `run()`)."""

    def __init__(
        self,
        enrollment: Enrollment,
        tokens: TokenFile,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        ssl_context: ssl.SSLContext | None = None,
        routes: Sequence[Route] = (),
    ) -> None:
        self.api = EnrollmentApi(enrollment)
        #: The enrollment's endpoints, then `routes` (campaigns, offers, redemptions, reports).
        self.routes: tuple[Route, ...] = (*self.api.routes(), *routes)
        self.tokens = tokens
        self.host = host
        self._port = port
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._refusals = OnceLogger(_LOGGER)

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """How many connections are open now (at most MAX_CONNECTIONS for more than a moment)."""
        return len(self._connections)

    async def start(self) -> None:
        """Check the tokens file, then listen; raise ConfigError, or ApiError (port in use)."""
        if self.tokens.load() == 0:
            raise ConfigError(
                str(self.tokens.path),
                "-",
                "holds no API token hash: create a token with "
                f"`cloud-bridge api-token --tokens-file {self.tokens.path}`",
            )
        # TLS starts inside _on_connection, once the connection is counted: asyncio's own
        # ssl= would hold every accepted socket through its handshake before the cap could see it,
        # so a flood of silent connections would use up the bridge's file descriptors.
        try:
            self._server = await asyncio.start_server(
                self._on_connection, self.host, self._port, limit=MAX_HEAD_BYTES
            )
        except OSError as exc:  # a port in use may be an old instance still stopping: retryable
            raise ApiError(
                f"enrollment API cannot listen on {self.host}:{self._port}: "
                f"{exc.strerror or exc}; free the port or set [api] host and port"
            ) from exc
        _LOGGER.info(
            "enrollment API listening on %s://%s:%d",
            "https" if self._ssl is not None else "http",
            self.host,
            self.port,
        )

    async def close(self) -> None:
        """Stop listening and end the connections in progress."""
        if self._server is None:
            return
        self._server.close()
        # Abort rather than cancel: a pending read ends at once, and the connection's task ends
        # normally (Python 3.11's start_server reports a cancelled connection task as an error).
        for writer in self._connections.values():
            writer.transport.abort()
        if self._connections:
            _, stuck = await asyncio.wait(self._connections, timeout=CLOSE_GRACE_S)
            for task in stuck:  # still waiting for the loyalty records
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def run(self) -> None:
        """Serve until cancelled (for the bridge's TaskGroup)."""
        await self.start()
        try:
            await asyncio.Future()  # until cancelled
        finally:
            await self.close()

    async def __aenter__(self) -> EnrollmentApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                # Refused at once, without lingering or a TLS handshake: a flood must cost no
                # more than the MAX_CONNECTIONS sockets already held.
                self._refusals.warning(
                    "busy", "enrollment API: over %d connections, refusing more", MAX_CONNECTIONS
                )
                if self._ssl is not None:
                    writer.transport.abort()
                    return
                response: HttpResponse | None = HttpProblem(
                    503,
                    "busy",
                    f"more than {MAX_CONNECTIONS} connections; retry in {RETRY_AFTER_S} s",
                    headers=(("Retry-After", str(RETRY_AFTER_S)),),
                ).response()
                linger = False
            else:
                if self._ssl is not None:
                    await writer.start_tls(self._ssl, ssl_handshake_timeout=READ_TIMEOUT_S)
                response, linger = await self._exchange(reader, writer)
            if response is not None:
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    writer.write(response.encode())
                    await writer.drain()
                if linger:
                    await self._linger(reader, writer)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            pass  # the client went away, stopped reading or failed its TLS handshake
        except Exception:  # a supervisor: one connection's bug must not stop the API
            _LOGGER.exception("enrollment API: connection failed")
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError, ssl.SSLError):
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await writer.wait_closed()

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[HttpResponse | None, bool]:
        """Read one request and answer it: (response or None if the client left, linger?)."""
        try:
            raw_head = await _read_head(reader)
        except asyncio.IncompleteReadError:
            return None, False
        except _Idle:
            problem = HttpProblem(
                408,
                "request_timeout",
                f"the request head stalled for {IDLE_READ_TIMEOUT_S:g} s",
            )
            return problem.response(), True
        except asyncio.LimitOverrunError:
            problem = HttpProblem(
                431, "headers_too_large", f"the request head is over {MAX_HEAD_BYTES} bytes"
            )
            return problem.response(), True
        except TimeoutError:
            problem = HttpProblem(
                408, "request_timeout", f"no complete request head within {READ_TIMEOUT_S:g} s"
            )
            return problem.response(), True
        request: Request | None = None
        try:
            request = _parse_head(raw_head)
            response = await self._answer(request, reader, writer)
        except _ClientGone:
            return None, False
        except HttpProblem as problem:
            response = problem.response()
        except Exception:  # a bug: answer, log it with the traceback, keep serving
            _LOGGER.exception("enrollment API: %s failed", request.where if request else "request")
            response = HttpProblem(
                500,
                "internal_error",
                "the bridge failed to handle this request; its log has the details",
            ).response()
        linger = request is None or request.body_pending
        if request is not None:
            _LOGGER.debug("%s → %d", request.where, response.status)
        return response, linger

    async def _answer(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> HttpResponse:
        """Authenticate, route, read the body, call the enrollment; raise HttpProblem."""
        request.body_pending = True  # until the headers say there is no body
        token = _bearer_token(request)
        if token is None or not self.tokens.verify(token):
            peer = writer.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, tuple) else "?"
            self._refusals.warning(host, "enrollment API: refused a request from %s (401)", host)
            # The same answer for a missing, malformed or unknown token.
            raise HttpProblem(
                401,
                "unauthorized",
                f"{request.where}: send 'Authorization: Bearer <token>' with a valid API token "
                "(create one with `cloud-bridge api-token`)",
                headers=(("WWW-Authenticate", 'Bearer realm="threshold-enrollment"'),),
            )
        handler, segment = _route(self.routes, request)
        length = _content_length(request)
        chunked = request.header("transfer-encoding") is not None
        request.body_pending = chunked or bool(length)
        if chunked:
            raise HttpProblem(
                411,
                "length_required",
                f"{request.where}: send the body with Content-Length (no Transfer-Encoding)",
            )
        if request.method not in _BODY_METHODS:
            if length:
                raise HttpProblem(400, "bad_request", f"{request.where}: takes no body; send none")
        elif length is None:
            raise HttpProblem(
                411,
                "length_required",
                f"{request.where}: send the JSON body with a Content-Length header",
            )
        elif length > MAX_BODY_BYTES:
            raise HttpProblem(
                413,
                "body_too_large",
                f"{request.where}: the body is {length} bytes, over the {MAX_BODY_BYTES} allowed",
            )
        elif length and not _is_json(request.header("content-type")):
            raise HttpProblem(
                415,
                "unsupported_media_type",
                f"{request.where}: send the body as 'Content-Type: application/json' (UTF-8)",
            )
        if length:
            try:
                request.body = await _read_body(reader, length)
            except asyncio.IncompleteReadError:
                raise _ClientGone() from None
            except _Idle:
                raise HttpProblem(
                    408,
                    "request_timeout",
                    f"{request.where}: the body stalled for {IDLE_READ_TIMEOUT_S:g} s",
                ) from None
            except TimeoutError:
                raise HttpProblem(
                    408,
                    "request_timeout",
                    f"{request.where}: the {length}-byte body did not arrive within "
                    f"{READ_TIMEOUT_S:g} s",
                ) from None
            request.body_pending = False
        try:
            return await handler(request, segment)
        except EnrollmentError as exc:
            raise _domain_problem(request, exc) from None

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answered before the request ended: read and drop the rest for a moment before closing.

        Closing a socket with unread data sends a reset, which can destroy the answer before the
        client reads it.
        """
        if writer.can_write_eof():
            writer.write_eof()
        dropped = 0
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(LINGER_TIMEOUT_S):
                while dropped < LINGER_MAX_BYTES:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    dropped += len(chunk)


class _Idle(Exception):
    """A single read waited longer than IDLE_READ_TIMEOUT_S."""


async def _read_idle(read: Awaitable[bytes]) -> bytes:
    try:
        async with asyncio.timeout(IDLE_READ_TIMEOUT_S):
            return await read
    except TimeoutError:
        raise _Idle() from None


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """The request line and headers, up to the empty line: within READ_TIMEOUT_S in all and
    IDLE_READ_TIMEOUT_S per line; LimitOverrunError past MAX_HEAD_BYTES."""
    head = bytearray()
    async with asyncio.timeout(READ_TIMEOUT_S):
        while not head.endswith(b"\r\n\r\n"):
            head += await _read_idle(reader.readuntil(b"\n"))
            if len(head) > MAX_HEAD_BYTES:
                raise asyncio.LimitOverrunError("request head too large", len(head))
    return bytes(head)


async def _read_body(reader: asyncio.StreamReader, length: int) -> bytes:
    """Exactly `length` bytes, within READ_TIMEOUT_S in all and IDLE_READ_TIMEOUT_S per chunk."""
    body = bytearray()
    async with asyncio.timeout(READ_TIMEOUT_S):
        while len(body) < length:
            chunk = await _read_idle(reader.read(min(BODY_CHUNK_BYTES, length - len(body))))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(body), length)
            body += chunk
    return bytes(body)


def server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """An HTTPS server context (TLS 1.2+); ConfigError naming the file when it cannot be loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        for path in (cert_file, key_file):
            read_regular_file(path)  # OpenSSL would block for ever on a FIFO
        context.load_cert_chain(str(cert_file), str(key_file))
    except OSError as exc:
        raise ConfigError(
            str(exc.filename or cert_file),
            "api.tls_cert_file",
            f"cannot be read ({exc.strerror}): set [api] tls_cert_file and tls_key_file to the "
            "API's PEM certificate and key (`cloud-bridge ca server-cert` makes them)",
        ) from None
    except ssl.SSLError as exc:
        raise ConfigError(
            str(cert_file),
            "api.tls_cert_file",
            f"is not a PEM certificate matching {key_file} ({exc.reason})",
        ) from None
    return context


async def serve_api(
    enrollment: Enrollment,
    tokens_file: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    ssl_context: ssl.SSLContext | None = None,
    routes: Sequence[Route] = (),
) -> EnrollmentApiServer:
    """Start the enrollment API on `host:port` (port 0: any free one); `close()` it when done."""
    server = EnrollmentApiServer(
        enrollment, TokenFile(tokens_file), host, port, ssl_context, routes
    )
    await server.start()
    return server
