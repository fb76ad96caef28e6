"""The enrollment API over real HTTP on loopback, on a real, seeded SQLite loyalty database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.adapters import http_api
from cloud_bridge.adapters.http_api import (
    MAX_BODY_BYTES,
    EnrollmentApiServer,
    TokenFile,
    add_token_hash,
    new_api_token,
    serve_api,
    server_tls_context,
    token_hash,
)
from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.config import parse_bridge_config
from cloud_bridge.core.clones import GeoPoint
from cloud_bridge.core.enrollment import EID_COUNTER_BASIS, RecordsUnavailable
from cloud_bridge.errors import ApiError, BridgeError
from cloud_bridge.seed import seed_records
from edge.adapters.pki import LocalPki
from edge.core import wire
from edge.errors import ConfigError
from edge.process import ExitCode, classify
from tests.factories import T0, TEST_DATA_KEY, as_sent, make_offer_trigger, make_visit
from tests.fakes.http import HttpReply, build_request, exchange, parse_reply, request

CHAIN = "acme"
STORE = "store-001"
APP_MEMBER = "m-00000"  # seeded with app d-00000
TAG_MEMBER = "m-00001"  # seeded with tag d-00001
NEW_MEMBER = "m-new-1"


@dataclass
class Api:
    server: EnrollmentApiServer
    records: SqliteLoyaltyRecords
    token: str
    tokens_file: Path

    @property
    def port(self) -> int:
        return self.server.port

    async def call(self, method: str, path: str, **kwargs: Any) -> HttpReply:
        kwargs.setdefault("token", self.token)
        return await request(self.port, method, path, **kwargs)

    async def enroll(self, member: str, **body: Any) -> HttpReply:
        return await self.call("POST", f"/v1/members/{member}/devices", json_body=body)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    path = tmp_path / "bridge" / "loyalty.db"
    records = await SqliteLoyaltyRecords.open(path, CHAIN, create=True, data_key=TEST_DATA_KEY)
    enrollment: SqliteEnrollment | None = None
    server: EnrollmentApiServer | None = None
    try:
        await seed_records(records, members=10, seed=1, stores=(STORE,), joined_at=T0 - 86400)
        enrollment = await SqliteEnrollment.open(path, CHAIN, data_key=TEST_DATA_KEY)
        token = new_api_token()
        tokens_file = tmp_path / "api-tokens"
        add_token_hash(tokens_file, token_hash(token))
        server = await serve_api(enrollment, tokens_file, "127.0.0.1", 0)
        yield Api(server, records, token, tokens_file)
    finally:
        if server is not None:
            await server.close()
        if enrollment is not None:
            await enrollment.close()
        await records.close()


def roster_devices(roster: wire.RosterSync, member: str) -> list[wire.RosterDevice]:
    return [d for d in roster.devices if d.member == member]


async def stored_key(api: Api, device: str) -> bytes:
    """The device's identity key as stored: opened with the data key (zeros once erased)."""
    async with api.records.connection.execute(
        "SELECT identity_key, sealed_key FROM devices WHERE id = ?", (device,)
    ) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    sealed = None if row[1] is None else bytes(row[1])
    return api.records.open_identity_key(device, bytes(row[0]), sealed)


# --- what the app backend does ----------------------------------------------------------------


async def test_enroll_a_new_member_returns_what_the_app_needs_and_reaches_the_roster(
    api: Api,
) -> None:
    before = await api.records.roster(STORE)

    reply = await api.enroll(NEW_MEMBER, kind="app", tier="silver", consent=True)

    assert reply.status == 201, reply.raw_body
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["location"] == f"/v1/members/{NEW_MEMBER}"
    body = reply.json()
    assert body["member"] == NEW_MEMBER
    assert body["kind"] == "app"
    assert body["tier"] == "silver"
    assert body["member_created"] is True
    assert body["exponent"] == 10
    assert body["eid_counter"] == EID_COUNTER_BASIS == "unix_time_s_mod_2^32"
    key = bytes.fromhex(body["identity_key"])
    assert len(key) == 16
    assert len(body["shopper_token"]) == 24
    assert body["offer_topic"] == wire.shopper_offer_topic(CHAIN, body["shopper_token"])
    after = await api.records.roster(STORE)
    assert after.version > before.version
    (device,) = roster_devices(after, NEW_MEMBER)
    assert (device.ref, device.tier, device.identity_key, device.exponent) == (
        body["device"],
        "silver",
        key,
        10,
    )


async def test_status_lists_devices_but_never_a_key(api: Api) -> None:
    enrolled = (await api.enroll(APP_MEMBER, kind="tag", consent=True, exponent=12)).json()
    assert enrolled["member_created"] is False
    assert enrolled["tier"] == (await api.call("GET", f"/v1/members/{APP_MEMBER}")).json()["tier"]

    reply = await api.call("GET", f"/v1/members/{APP_MEMBER}")

    assert reply.status == 200
    body = reply.json()
    assert body["consent"] is True
    assert [(d["device"], d["kind"], d["active"]) for d in body["devices"]] == [
        ("d-00000", "app", True),
        (enrolled["device"], "tag", True),
    ]
    assert all(set(d) == {"device", "kind", "active", "enrolled_at"} for d in body["devices"])
    assert b"identity_key" not in reply.raw_body
    assert enrolled["identity_key"].encode() not in reply.raw_body
    assert b"shopper_token" not in reply.raw_body


async def test_revoke_takes_the_device_off_the_roster(api: Api) -> None:
    before = await api.records.roster(STORE)

    reply = await api.call("DELETE", "/v1/devices/d-00001")

    assert reply.status == 200
    assert reply.json() == {
        "device": "d-00001",
        "member": TAG_MEMBER,
        "active": False,
        "was_active": True,
    }
    after = await api.records.roster(STORE)
    assert after.version > before.version
    assert roster_devices(after, TAG_MEMBER) == []
    status = (await api.call("GET", f"/v1/members/{TAG_MEMBER}")).json()
    assert status["devices"][0]["active"] is False
    assert await stored_key(api, "d-00001") == bytes(16)  # erased: nothing needs it again
    # Revoking again is harmless and says so.
    again = await api.call("DELETE", "/v1/devices/d-00001")
    assert again.status == 200 and again.json()["was_active"] is False
    # A new tag can be enrolled once the old one is revoked.
    assert (await api.enroll(TAG_MEMBER, kind="tag", consent=True)).status == 201


async def test_withdrawn_consent_removes_every_device_from_the_roster(api: Api) -> None:
    second = (await api.enroll(TAG_MEMBER, kind="app", consent=True)).json()
    before = await api.records.roster(STORE)
    assert len(roster_devices(before, TAG_MEMBER)) == 2

    reply = await api.call("POST", f"/v1/members/{TAG_MEMBER}/consent/withdraw", json_body={})

    assert reply.status == 200, reply.raw_body
    body = reply.json()
    assert body["consent"] is False
    assert {d["device"]: d["active"] for d in body["devices"]} == {
        "d-00001": False,
        second["device"]: False,
    }
    after = await api.records.roster(STORE)
    assert after.version > before.version
    assert roster_devices(after, TAG_MEMBER) == []
    assert len(after.devices) == len(before.devices) - 2


async def test_a_member_who_withdrew_consent_gets_no_more_offers(api: Api) -> None:
    trigger = make_offer_trigger(member=TAG_MEMBER, device="d-00001", campaign="welcome-bakery")
    gateway = wire.GatewayAddress(CHAIN, STORE, "door-1")
    outcome = await api.records.record(await as_sent(api.records, gateway, trigger), T0)
    assert [d.offer_id for d in outcome.deliveries] == [trigger.event_id]

    await api.call("POST", f"/v1/members/{TAG_MEMBER}/consent/withdraw", json_body={})

    assert await api.records.due_deliveries(T0 + 3600, 30.0, 100) == []
    assert await stored_key(api, "d-00001") == bytes(16)


async def test_withdrawing_needs_no_body_and_can_be_repeated(api: Api) -> None:
    path = f"/v1/members/{APP_MEMBER}/consent/withdraw"
    first = await api.call("POST", path, body=b"", content_type=None)
    version = (await api.records.roster(STORE)).version
    second = await api.call("POST", path, body=b"", content_type=None)

    assert first.status == second.status == 200
    assert second.json()["consent"] is False
    assert (await api.records.roster(STORE)).version == version  # nothing changed


async def test_enrolling_again_after_withdrawal_records_consent_again(api: Api) -> None:
    await api.call("POST", f"/v1/members/{APP_MEMBER}/consent/withdraw", json_body={})

    reply = await api.enroll(APP_MEMBER, kind="app", consent=True)

    assert reply.status == 201
    status = (await api.call("GET", f"/v1/members/{APP_MEMBER}")).json()
    assert status["consent"] is True
    assert len(roster_devices(await api.records.roster(STORE), APP_MEMBER)) == 1


# --- preferences ------------------------------------------------------------------------------

PREFS = {
    "interests": ["beauty", "home"],
    "promotion_types": ["discount", "event"],
    "max_offers_per_day": 1,
    "max_offers_per_week": 3,
}


async def test_a_member_states_reads_and_forgets_preferences_and_the_roster_follows(
    api: Api,
) -> None:
    path = f"/v1/members/{APP_MEMBER}/preferences"
    assert (await api.call("GET", path)).json() == {"member": APP_MEMBER, "stated": False}
    before = await api.records.roster(STORE)

    reply = await api.call("PUT", path, json_body=PREFS)

    assert reply.status == 200, reply.raw_body
    body = reply.json()
    assert isinstance(body.pop("updated_at"), float)
    assert body == {
        "member": APP_MEMBER,
        "stated": True,
        "interests": ["beauty", "home"],
        "promotion_types": ["discount", "event"],
        "max_offers_per_day": 1,
        "max_offers_per_week": 3,
        "no_offers": False,
    }
    assert (await api.call("GET", path)).json() == reply.json()
    after = await api.records.roster(STORE)
    assert after.version > before.version
    (device,) = roster_devices(after, APP_MEMBER)
    terms = (await api.records.campaigns(STORE)).interest_terms
    assert device.prefs is not None and (device.prefs.per_day, device.prefs.per_week) == (1, 3)
    assert {t for bit, t in enumerate(terms) if device.prefs.interests >> bit & 1} == {
        "beauty",
        "home",
    }

    forgotten = await api.call("DELETE", path)

    assert forgotten.status == 200
    assert forgotten.json() == {"member": APP_MEMBER, "stated": False, "forgotten": True}
    assert (await api.call("GET", path)).json() == {"member": APP_MEMBER, "stated": False}
    assert roster_devices(await api.records.roster(STORE), APP_MEMBER)[0].prefs is None
    again = await api.call("DELETE", path)
    assert again.status == 200 and again.json()["forgotten"] is False


async def test_no_offers_is_stated_as_such(api: Api) -> None:
    reply = await api.call(
        "PUT",
        f"/v1/members/{TAG_MEMBER}/preferences",
        json_body={"interests": [], "promotion_types": [], "no_offers": True},
    )

    assert reply.status == 200, reply.raw_body
    body = reply.json()
    assert (body["no_offers"], body["max_offers_per_day"], body["max_offers_per_week"]) == (
        True,
        0,
        0,
    )
    (device,) = roster_devices(await api.records.roster(STORE), TAG_MEMBER)
    assert device.prefs == wire.MemberPrefs(0, 0, 0, 0)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"interests": ["beauty", "gardening"]}, "interests[1]", "not one of the chain's"),
        ({"promotion_types": ["bogof"]}, "promotion_types[0]", "not one of the chain's"),
        ({"interests": ["home", "beauty", "home"]}, "interests[2]", "repeats 'home'"),
        ({"interests": ["Beauty"]}, "interests[0]", "not one of the chain's"),
        ({"interests": "beauty"}, "interests", "must be a list"),
        ({"interests": [7]}, "interests[0]", "must be a term"),
        ({"interests": None}, "interests", "must be a list"),
        ({"interests": ["beauty"] * 100}, "interests", "at most 63"),
        ({"max_offers_per_day": 1000}, "max_offers_per_day", "0..24"),
        ({"max_offers_per_week": -5}, "max_offers_per_week", "0..100"),
        ({"max_offers_per_day": 2.5}, "max_offers_per_day", "must be an integer"),
        ({"max_offers_per_day": "1"}, "max_offers_per_day", "must be an integer"),
        ({"max_offers_per_week": None}, "max_offers_per_week", "must be an integer"),
        ({"no_offers": "no"}, "no_offers", "true or false"),
        ({"no_offers": True}, "max_offers_per_day", "cannot be sent with"),
        ({"max_offers_per_day": None, "max_offers_per_week": None}, "max_offers_per_day", ""),
        ({"frequency": "daily"}, "frequency", "not a known field"),
        ({"consent": True}, "consent", "not a known field"),
    ],
)
async def test_bad_preferences_are_refused_naming_the_field(
    api: Api, changes: dict[str, Any], field: str, words: str
) -> None:
    body = {**PREFS, **changes}
    path = f"/v1/members/{APP_MEMBER}/preferences"

    reply = await api.call("PUT", path, json_body=body)

    assert reply.status == 400, reply.raw_body
    error = reply.json()
    assert (error["error"], error["field"]) == ("invalid_field", field)
    assert words in error["message"]
    assert error["message"].startswith(f"PUT {path}: field '{field}' ")
    assert (await api.call("GET", path)).json()["stated"] is False


async def test_a_missing_field_is_named(api: Api) -> None:
    for name in PREFS:
        body = {k: v for k, v in PREFS.items() if k != name}
        reply = await api.call("PUT", f"/v1/members/{APP_MEMBER}/preferences", json_body=body)
        assert reply.status == 400 and reply.json()["field"] == name, name


async def test_preferences_need_the_members_consent(api: Api) -> None:
    path = f"/v1/members/{TAG_MEMBER}/preferences"
    assert (await api.call("PUT", path, json_body=PREFS)).status == 200

    await api.call("POST", f"/v1/members/{TAG_MEMBER}/consent/withdraw", json_body={})

    # Withdrawing consent forgot them; stating them again is refused until consent is given.
    assert (await api.call("GET", path)).json() == {"member": TAG_MEMBER, "stated": False}
    reply = await api.call("PUT", path, json_body=PREFS)
    assert reply.status == 409
    assert reply.json()["error"] == "no_consent"
    assert "consent" in reply.json()["message"]
    assert (await api.enroll(TAG_MEMBER, kind="tag", consent=True)).status == 201
    assert (await api.call("PUT", path, json_body=PREFS)).status == 200


async def test_preferences_of_an_unknown_member_are_not_found(api: Api) -> None:
    path = "/v1/members/m-nobody/preferences"
    for method, body in (("PUT", PREFS), ("GET", None), ("DELETE", None)):
        kwargs: dict[str, Any] = {} if body is None else {"json_body": body}
        reply = await api.call(method, path, **kwargs)
        assert reply.status == 404, method
        assert reply.json()["error"] == "unknown_member"
    bad = await api.call("PUT", "/v1/members/M%201/preferences", json_body=PREFS)
    assert bad.status == 400 and bad.json()["field"] == "member"


async def test_a_put_needs_a_json_body_with_its_length(api: Api) -> None:
    path = f"/v1/members/{APP_MEMBER}/preferences"
    auth = {"Authorization": f"Bearer {api.token}"}
    no_length = await exchange(
        api.port, build_request("PUT", path, headers=auth) + b'{"interests": []}'
    )
    assert no_length.status == 411
    text = await api.call("PUT", path, body=b"interests=home", content_type="text/plain")
    assert text.status == 415
    empty = await api.call("PUT", path, body=b"", content_type=None)
    assert empty.status == 400 and empty.json()["field"] == "interests"
    wrong = await api.call("POST", path, json_body=PREFS)
    assert wrong.status == 405 and wrong.headers["allow"] == "DELETE, GET, PUT"


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer thr_not-a-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "bearer a b c"},
    ],
    ids=["none", "unknown-token", "basic", "empty-bearer", "malformed"],
)
async def test_requests_without_a_valid_token_are_refused_alike(
    api: Api, headers: dict[str, str]
) -> None:
    for method, path, body in [
        ("GET", f"/v1/members/{APP_MEMBER}", None),
        ("POST", f"/v1/members/{NEW_MEMBER}/devices", {"kind": "app", "consent": True}),
        ("DELETE", "/v1/devices/d-00000", None),
        ("GET", "/v1/no-such-endpoint", None),  # no hint of which endpoints exist
    ]:
        kwargs: dict[str, Any] = {"token": None, "headers": headers}
        if body is not None:
            kwargs["json_body"] = body
        reply = await api.call(method, path, **kwargs)

        assert reply.status == 401, (method, path)
        assert reply.json()["error"] == "unauthorized"
        assert reply.headers["www-authenticate"].startswith("Bearer")
    assert len(roster_devices(await api.records.roster(STORE), APP_MEMBER)) == 1


async def test_a_token_added_while_running_works_without_a_restart(api: Api) -> None:
    token = new_api_token()
    assert (await api.call("GET", f"/v1/members/{APP_MEMBER}", token=token)).status == 401

    add_token_hash(api.tokens_file, token_hash(token))

    assert (await api.call("GET", f"/v1/members/{APP_MEMBER}", token=token)).status == 200
    assert api.tokens_file.stat().st_mode & 0o777 == 0o600


async def test_a_token_whose_hash_line_is_deleted_is_refused(api: Api) -> None:
    api.tokens_file.write_text("# every token revoked\n")
    api.tokens_file.chmod(0o600)

    assert (await api.call("GET", f"/v1/members/{APP_MEMBER}")).status == 401


async def test_the_api_refuses_to_start_on_a_bad_tokens_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(new_api_token() + "\n")  # a plain token, not its hash
    tokens.chmod(0o600)
    with pytest.raises(ConfigError, match=r"line 1.*SHA-256"):
        await serve_api(_NoEnrollment(), tokens, "127.0.0.1", 0)
    tokens.write_text(token_hash("x") + "\n")
    tokens.chmod(0o666)
    with pytest.raises(ConfigError, match="chmod 600"):
        await serve_api(_NoEnrollment(), tokens, "127.0.0.1", 0)
    tokens.write_text("")
    tokens.chmod(0o600)
    with pytest.raises(ConfigError, match="no API token"):
        await serve_api(_NoEnrollment(), tokens, "127.0.0.1", 0)


class _NoEnrollment:
    """Raises `error` from every operation (by default: none is expected to be reached)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error or AssertionError("not expected to be called")

    async def enroll(self, request: Any) -> Any:
        raise self.error

    async def revoke(self, device: str) -> Any:
        raise self.error

    async def withdraw_consent(self, member: str) -> Any:
        raise self.error

    async def member_status(self, member: str) -> Any:
        raise self.error

    async def clone_alerts(self) -> Any:
        raise self.error


async def test_a_busy_database_or_a_bug_still_gets_an_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = new_api_token()
    add_token_hash(tmp_path / "tokens", token_hash(token))
    busy = RecordsUnavailable("cannot read member status: database is locked")
    async with EnrollmentApiServer(
        _NoEnrollment(busy), TokenFile(tmp_path / "tokens"), "127.0.0.1", 0
    ) as server:
        reply = await request(server.port, "GET", f"/v1/members/{APP_MEMBER}", token=token)
        assert reply.status == 503
        assert reply.headers["retry-after"] == "5"
    async with EnrollmentApiServer(
        _NoEnrollment(RuntimeError("a bug")), TokenFile(tmp_path / "tokens"), "127.0.0.1", 0
    ) as server:
        reply = await request(server.port, "DELETE", "/v1/devices/d-00000", token=token)
        assert reply.status == 500
        assert reply.json()["error"] == "internal_error"
        assert "a bug" not in reply.json()["message"]
        assert any(r.exc_info for r in caplog.records)


# --- bad requests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"consent": True}, "kind"),
        ({"kind": "app"}, "consent"),
        ({"kind": "phone", "consent": True}, "kind"),
        ({"kind": 1, "consent": True}, "kind"),
        ({"kind": "app", "consent": "yes"}, "consent"),
        ({"kind": "app", "consent": 1}, "consent"),
        ({"kind": "app", "consent": True, "tier": 3}, "tier"),
        ({"kind": "app", "consent": True, "tier": "Gold Plus"}, "tier"),
        ({"kind": "app", "consent": True, "exponent": "10"}, "exponent"),
        ({"kind": "app", "consent": True, "exponent": 16}, "exponent"),
        ({"kind": "app", "consent": True, "exponent": 10.0}, "exponent"),
        ({"kind": "app", "consent": True, "identity_key": "00" * 16}, "identity_key"),
    ],
)
async def test_a_bad_field_is_refused_naming_it(api: Api, body: dict[str, Any], field: str) -> None:
    reply = await api.enroll(NEW_MEMBER, **body)

    assert reply.status == 400
    error = reply.json()
    assert error["field"] == field
    assert f"'{field}'" in error["message"]
    assert error["message"].startswith(f"POST /v1/members/{NEW_MEMBER}/devices: ")


async def test_enrollment_without_consent_is_refused(api: Api) -> None:
    reply = await api.enroll(NEW_MEMBER, kind="app", tier="gold", consent=False)

    assert reply.status == 400
    assert reply.json()["error"] == "consent_required"
    assert reply.json()["field"] == "consent"
    assert (await api.call("GET", f"/v1/members/{NEW_MEMBER}")).status == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"kind": "app", "consent": true', "invalid_json"),
        (b"[]", "invalid_json"),
        (b'"app"', "invalid_json"),
        (b'{"kind": "app", "consent": NaN}', "invalid_json"),
        (b'{"kind": "app", "kind": "tag", "consent": true}', "invalid_field"),
        (b"\xff\xfe{}", "invalid_json"),
        (b"[" * 60_000, "invalid_json"),
    ],
    ids=["truncated", "array", "string", "nan", "duplicate-key", "not-utf8", "deep-nesting"],
)
async def test_a_body_that_is_not_a_json_object_is_refused(
    api: Api, body: bytes, code: str
) -> None:
    reply = await api.call("POST", f"/v1/members/{NEW_MEMBER}/devices", body=body)

    assert reply.status == 400
    assert reply.json()["error"] == code


async def test_an_invalid_id_in_the_path_is_refused_naming_it(api: Api) -> None:
    reply = await api.call("GET", "/v1/members/M%2000")
    assert reply.status == 400 and reply.json()["field"] == "member"
    reply = await api.call("DELETE", "/v1/devices/..")
    assert reply.status == 400 and reply.json()["field"] == "device"


async def test_unknown_members_and_devices_are_not_found(api: Api) -> None:
    status = await api.call("GET", "/v1/members/m-nobody")
    assert status.status == 404 and status.json()["error"] == "unknown_member"
    revoke = await api.call("DELETE", "/v1/devices/d-nothing")
    assert revoke.status == 404 and revoke.json()["error"] == "unknown_device"
    withdraw = await api.call("POST", "/v1/members/m-nobody/consent/withdraw", json_body={})
    assert withdraw.status == 404
    # Enrolling an unknown member without a tier is most likely a mistyped id: not created.
    enroll = await api.enroll("m-nobody", kind="app", consent=True)
    assert enroll.status == 404
    assert "send 'tier'" in enroll.json()["message"]
    assert (await api.call("GET", "/v1/nowhere")).status == 404


async def test_a_second_active_device_of_a_kind_is_a_conflict(api: Api) -> None:
    before = await api.records.roster(STORE)

    reply = await api.enroll(APP_MEMBER, kind="app", consent=True)

    assert reply.status == 409
    assert reply.json()["error"] == "already_enrolled"
    assert "d-00000" in reply.json()["message"]  # the device to revoke first
    assert await api.records.roster(STORE) == before


async def test_a_different_tier_for_an_existing_member_is_a_conflict(api: Api) -> None:
    tier = (await api.call("GET", f"/v1/members/{TAG_MEMBER}")).json()["tier"]
    other = "gold" if tier != "gold" else "bronze"

    reply = await api.enroll(TAG_MEMBER, kind="app", tier=other, consent=True)

    assert reply.status == 409
    assert reply.json()["error"] == "tier_conflict"
    assert (await api.enroll(TAG_MEMBER, kind="app", tier=tier, consent=True)).status == 201


async def test_an_oversized_body_is_refused(api: Api) -> None:
    body = b'{"kind": "app", "consent": true, "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'

    reply = await api.call("POST", f"/v1/members/{NEW_MEMBER}/devices", body=body)

    assert reply.status == 413
    assert reply.json()["error"] == "body_too_large"
    assert (await api.call("GET", f"/v1/members/{NEW_MEMBER}")).status == 404


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", None, "application/json; charset=latin-1"],
)
async def test_a_body_that_is_not_json_by_content_type_is_refused(
    api: Api, content_type: str | None
) -> None:
    reply = await api.call(
        "POST",
        f"/v1/members/{NEW_MEMBER}/devices",
        body=b'{"kind": "app", "consent": true, "tier": "gold"}',
        content_type=content_type,
    )

    assert reply.status == 415
    assert reply.json()["error"] == "unsupported_media_type"


async def test_json_with_a_utf8_charset_is_accepted(api: Api) -> None:
    reply = await api.call(
        "POST",
        f"/v1/members/{NEW_MEMBER}/devices",
        body=b'{"kind": "tag", "consent": true, "tier": "gold"}',
        content_type="Application/JSON; charset=UTF-8",
    )
    assert reply.status == 201


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", f"/v1/members/{APP_MEMBER}/devices", "POST"),
        ("PUT", f"/v1/members/{APP_MEMBER}", "GET"),
        ("DELETE", f"/v1/members/{APP_MEMBER}", "GET"),
        ("GET", "/v1/devices/d-00000", "DELETE"),
        ("GET", f"/v1/members/{APP_MEMBER}/consent/withdraw", "POST"),
    ],
)
async def test_a_wrong_method_is_refused_with_the_allowed_one(
    api: Api, method: str, path: str, allow: str
) -> None:
    reply = await api.call(method, path)

    assert reply.status == 405
    assert reply.headers["allow"] == allow
    assert reply.json()["error"] == "method_not_allowed"


async def test_a_get_with_a_body_is_refused(api: Api) -> None:
    reply = await api.call("GET", f"/v1/members/{APP_MEMBER}", json_body={"x": 1})
    assert reply.status == 400


async def test_framing_the_server_does_not_speak_is_refused(api: Api) -> None:
    auth = {"Authorization": f"Bearer {api.token}"}
    chunked = (
        build_request(
            "POST",
            f"/v1/members/{NEW_MEMBER}/devices",
            headers={**auth, "Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        )
        + b"2\r\n{}\r\n0\r\n\r\n"
    )
    assert (await exchange(api.port, chunked)).status == 411
    no_length = build_request("POST", f"/v1/members/{NEW_MEMBER}/devices", headers=auth)
    assert (await exchange(api.port, no_length)).status == 411
    huge_head = build_request(
        "GET", f"/v1/members/{APP_MEMBER}", headers={**auth, "X-Pad": "x" * 20_000}
    )
    assert (await exchange(api.port, huge_head)).status == 431
    assert (await exchange(api.port, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")).status == 505
    assert (await exchange(api.port, b"NONSENSE\r\n\r\n")).status == 400
    query = build_request("GET", f"/v1/members/{APP_MEMBER}?x=1", token=api.token)
    assert (await exchange(api.port, query)).status == 400
    twice = build_request("GET", f"/v1/members/{APP_MEMBER}", token=api.token, headers={**auth})
    assert (await exchange(api.port, twice)).status == 400


async def test_a_client_that_hangs_up_does_not_stop_the_api(api: Api) -> None:
    partial = build_request("POST", f"/v1/members/{NEW_MEMBER}/devices", json_body={})[:-1]
    _, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(partial)
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    assert (await api.call("GET", f"/v1/members/{APP_MEMBER}")).status == 200


async def test_closing_the_api_ends_connections_in_progress(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(b"GET /v1/members/m-00000 HTTP/1.1\r\n")  # and then nothing more
    await writer.drain()
    await api.call("GET", f"/v1/members/{APP_MEMBER}")  # the server has taken the connection

    await api.server.close()

    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_concurrent_enrollments_of_the_same_device_kind_enroll_one(api: Api) -> None:
    replies = await asyncio.gather(
        *(api.enroll(NEW_MEMBER, kind="tag", tier="gold", consent=True) for _ in range(8)),
        *(api.enroll(f"m-crowd-{i}", kind="app", tier="bronze", consent=True) for i in range(8)),
    )

    statuses = [r.status for r in replies]
    assert sorted(statuses[:8]) == [201] + [409] * 7
    assert statuses[8:] == [201] * 8
    assert len(roster_devices(await api.records.roster(STORE), NEW_MEMBER)) == 1


async def test_open_clone_alerts_are_listed_for_it_and_need_a_token(api: Api) -> None:
    assert (await api.call("GET", "/v1/alerts")).json() == {"alerts": []}
    await api.records.add_store("store-002", "Arndale", GeoPoint(53.4794, -2.2453))
    await api.records.set_store_location(STORE, GeoPoint(51.5138, -0.0984))
    sent = []
    for store, dt in ((STORE, 0.0), ("store-002", 60.0)):
        sent += await as_sent(
            api.records,
            wire.GatewayAddress(CHAIN, store, "door-1"),
            make_visit(ts=T0 + dt, detected_at=T0 + dt, member="m-00000", device="d-00000"),
        )
    outcome = await api.records.record(sent, T0 + 120)
    (alert,) = outcome.clone_alerts

    reply = await api.call("GET", "/v1/alerts")
    refused = await api.call("GET", "/v1/alerts", token=None)

    assert reply.status == 200
    assert reply.json() == {"alerts": [alert.to_json()]}
    assert refused.status == 401
    assert (await api.call("DELETE", "/v1/alerts")).status == 405


# --- HTTPS and slow clients (real sockets) -------------------------------------------------------


async def _dribble(
    port: int, data: bytes, pause_s: float, context: ssl.SSLContext | None = None
) -> tuple[bytes, int]:
    """Send `data` a byte at a time; return what the server answered and how many bytes it took
    before it answered and closed."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1" if context else None
    )
    sent = 0
    try:
        for byte in data:
            if reader.at_eof() or len(reader._buffer):
                break
            writer.write(bytes([byte]))
            try:
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
            await asyncio.sleep(pause_s)
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    return answer, sent


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_api, "READ_TIMEOUT_S", 1.0)
    monkeypatch.setattr(http_api, "IDLE_READ_TIMEOUT_S", 0.5)


@pytest.mark.usefixtures("short_timeouts")
async def test_a_client_sending_its_head_byte_by_byte_is_cut_off(api: Api) -> None:
    head = build_request("GET", f"/v1/members/{APP_MEMBER}", token=api.token)
    slow = head[:-4] + b"\r\nX-Pad: " + b"a" * 400 + b"\r\n\r\n"
    answer, sent = await _dribble(api.port, slow, 0.01)
    assert parse_reply(answer).status == 408
    assert sent < len(slow)  # cut off long before it finished


@pytest.mark.usefixtures("short_timeouts")
async def test_a_client_that_stalls_mid_head_or_mid_body_is_cut_off(api: Api) -> None:
    post = build_request("POST", f"/v1/members/{NEW_MEMBER}/devices", token=api.token, body=b"{}")
    for partial in (
        b"GET /v1/members/m-00000 HTTP/1.1\r\nHost: x",
        post[:-1],  # the head says 2 bytes of body, 1 comes
    ):
        reply = await exchange_without_eof(api.port, partial)
        assert reply.status == 408 and "stalled" in reply.json()["message"], reply.raw_body


async def exchange_without_eof(port: int, raw: bytes) -> HttpReply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(10):
            return parse_reply(await reader.read())
    finally:
        writer.close()
        await writer.wait_closed()


async def test_the_api_serves_https_with_its_certificate(
    tmp_path: Path, api: Api, test_pki: LocalPki
) -> None:
    files = test_pki.server_files(("127.0.0.1",))
    server = EnrollmentApiServer(
        api.server.api.enrollment,
        TokenFile(api.tokens_file),
        "127.0.0.1",
        0,
        server_tls_context(files.cert_file, files.key_file),
    )
    await server.start()
    try:
        client = ssl.create_default_context(cafile=str(test_pki.ca_file))
        raw = build_request("GET", f"/v1/members/{APP_MEMBER}", token=api.token)
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=client, server_hostname="127.0.0.1"
            )
            writer.write(raw)
            await writer.drain()
            reply = parse_reply(await reader.read())
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
        assert reply.status == 200 and reply.json()["member"] == APP_MEMBER
        # Plain HTTP to the HTTPS port gets no answer in clear.
        async with asyncio.timeout(15):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(raw)
            await writer.drain()
            answer = await reader.read()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        assert not answer.startswith(b"HTTP/1.1 200")
    finally:
        await server.close()


async def test_a_port_in_use_is_a_one_line_runtime_failure(api: Api) -> None:
    """Not an 'unexpected OSError' (exit 1, a bug): the port may be an old instance's, still
    stopping, so the process exits 3 and systemd retries."""
    second = EnrollmentApiServer(
        api.server.api.enrollment, TokenFile(api.tokens_file), "127.0.0.1", api.port
    )
    with pytest.raises(ApiError) as refused:
        await second.start()
    message = str(refused.value)
    assert f"cannot listen on 127.0.0.1:{api.port}" in message and "\n" not in message
    assert "in use" in message
    assert classify("api", refused.value, runtime=(BridgeError,)).code == ExitCode.RUNTIME


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
async def test_a_flood_of_idle_connections_holds_no_more_than_the_cap(
    api: Api, test_pki: LocalPki, monkeypatch: pytest.MonkeyPatch, https: bool
) -> None:
    """Each silent connection over the cap is closed at once (before any TLS handshake), so a
    flood cannot use up the bridge's file descriptors; once it ends, the API answers again."""
    cap, flood = 8, 200
    monkeypatch.setattr(http_api, "MAX_CONNECTIONS", cap)
    context = None
    if https:
        files = test_pki.server_files(("127.0.0.1",))
        context = server_tls_context(files.cert_file, files.key_file)
    server = EnrollmentApiServer(
        api.server.api.enrollment, TokenFile(api.tokens_file), "127.0.0.1", 0, context
    )
    await server.start()
    idle: list[socket.socket] = []
    try:
        before = _open_fds()
        loop = asyncio.get_running_loop()
        for _ in range(flood):
            sock = socket.socket()
            sock.setblocking(False)
            idle.append(sock)
            async with asyncio.timeout(10):
                await loop.sock_connect(sock, ("127.0.0.1", server.port))  # then never a byte
        await asyncio.sleep(0.5)  # the server accepts them all meanwhile
        held = _open_fds() - before - flood  # the server's side of the flood
        assert held <= cap + 2, f"the server holds {held} sockets for {flood} idle clients"
        refused = [await _closed_by_peer(loop, sock) for sock in idle]
        assert sum(refused) >= flood - cap
    finally:
        for sock in idle:
            sock.close()
    try:
        client = None
        if https:
            client = ssl.create_default_context(cafile=str(test_pki.ca_file))
        raw = build_request("GET", f"/v1/members/{APP_MEMBER}", token=api.token)
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                server.port,
                ssl=client,
                server_hostname="127.0.0.1" if https else None,
            )
            writer.write(raw)
            await writer.drain()
            reply = parse_reply(await reader.read())
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
        assert reply.status == 200
    finally:
        await server.close()


async def _closed_by_peer(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bool:
    """Whether the server has closed (or answered and closed) this connection."""
    try:
        async with asyncio.timeout(0.05):
            data = await loop.sock_recv(sock, 4096)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 503")


def test_https_needs_readable_files_and_beyond_loopback_needs_https(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_cert_file"):
        server_tls_context(tmp_path / "missing.crt", tmp_path / "missing.key")
    base = "[mqtt]\ninsecure_plaintext = true\n[api]\nenabled = true\n"
    with pytest.raises(ConfigError, match="beyond loopback"):
        parse_bridge_config(base + 'host = "0.0.0.0"\n')
    assert parse_bridge_config(base + 'host = "::1"\n').api.host == "::1"
    tls = 'host = "0.0.0.0"\ntls_cert_file = "/etc/a.crt"\ntls_key_file = "/etc/a.key"\n'
    assert parse_bridge_config(base + tls).api.tls
    lab = parse_bridge_config(base + 'host = "0.0.0.0"\ninsecure_plaintext = true\n')
    assert lab.api.insecure_plaintext
