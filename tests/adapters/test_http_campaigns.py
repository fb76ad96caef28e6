"""Campaigns and stores through the bridge's HTTP API, over real HTTP on loopback, on a real SQLite
loyalty database: JSON in and out like Campaign.to_json, every refusal a 400 naming the field
with nothing written, unknown 404, archived 409; and the OpenAPI description it serves."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.adapters import openapi
from cloud_bridge.adapters.http_api import (
    EnrollmentApiServer,
    add_token_hash,
    new_api_token,
    serve_api,
    token_hash,
)
from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.app import api_routes
from tests.factories import TEST_DATA_KEY
from tests.fakes.http import HttpReply, request

CHAIN = "acme"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()
STORES = ("s1", "s2")
WINTER: dict[str, Any] = {
    "id": "winter",
    "title": "Winter sale",
    "body": "30% off coats",
    "tiers": ["gold", "silver"],
    "store_tags": ["north"],
    "image_url": "https://cdn.example/winter.png",
    "deep_link": "acme://offers/winter",
    "segments": ["lapsed"],
    "schedule": {"start": "2026-12-10", "end": None, "days": [6, 7], "hours": [["10:00", "18:00"]]},
    "per_member_day": 1,
    "daily_budget": 100,
    "holdout_pct": 10,
}


@dataclass
class Api:
    server: EnrollmentApiServer
    records: SqliteLoyaltyRecords
    token: str

    async def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> HttpReply:
        if body is not None:
            kwargs["json_body"] = body
        elif "body_bytes" in kwargs:
            kwargs["body"] = kwargs.pop("body_bytes")
        elif method in ("POST", "PATCH"):
            kwargs["body"] = b""  # Content-Length: 0
        return await request(self.server.port, method, path, token=self.token, **kwargs)

    async def versions(self) -> dict[str, int]:
        return {s: (await self.records.campaigns(s)).version for s in STORES}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    path = tmp_path / "loyalty.db"
    records = await SqliteLoyaltyRecords.open(path, CHAIN, create=True, data_key=TEST_DATA_KEY)
    enrollment: SqliteEnrollment | None = None
    server: EnrollmentApiServer | None = None
    try:
        for store in STORES:
            await records.add_store(store, f"Store {store}")
        enrollment = await SqliteEnrollment.open(path, CHAIN, data_key=TEST_DATA_KEY)
        token = new_api_token()
        add_token_hash(tmp_path / "api-tokens", token_hash(token))
        server = await serve_api(
            enrollment,
            tmp_path / "api-tokens",
            "127.0.0.1",
            0,
            routes=api_routes(records, lambda: NOW),
        )
        yield Api(server, records, token)
    finally:
        if server is not None:
            await server.close()
        if enrollment is not None:
            await enrollment.close()
        await records.close()


async def test_a_marketer_creates_targets_and_reads_a_campaign(api: Api) -> None:
    reply = await api.call(
        "PATCH", "/v1/stores/s2", {"timezone": "Europe/Paris", "tags": ["north"]}
    )
    assert reply.status == 200
    assert reply.json() | {"location": None} == {
        "id": "s2",
        "name": "Store s2",
        "timezone": "Europe/Paris",
        "tags": ["north"],
        "location": None,
        "gateways": 0,
    }
    before = await api.versions()

    created = await api.call("POST", "/v1/campaigns", WINTER)
    assert created.status == 201, created.raw_body
    assert created.headers["location"] == "/v1/campaigns/winter"
    body = created.json()
    assert {k: body[k] for k in WINTER} == WINTER | {"holdout_pct": 10.0}
    assert (body["status"], body["created_at"], body["cooldown_s"]) == ("active", NOW, 86400.0)
    assert (body["code"], body["stores"], body["min_visits"]) == (None, [], None)

    shown = await api.call("GET", "/v1/campaigns/winter")
    listed = await api.call("GET", "/v1/campaigns")
    assert shown.status == 200 and shown.json() == body
    assert listed.json() == {"campaigns": [body]}
    after = await api.versions()
    assert after["s1"] == before["s1"] and after["s2"] > before["s2"]
    sync = await api.records.campaigns("s2")
    assert sync.timezone == "Europe/Paris" and [c.id for c in sync.campaigns] == ["winter"]
    schedule = sync.campaigns[0].schedule
    assert schedule is not None
    assert schedule.starts_at == datetime(2026, 12, 9, 23, tzinfo=UTC).timestamp()


async def test_patch_replaces_what_it_names_and_null_clears(api: Api) -> None:
    assert (await api.call("POST", "/v1/campaigns", WINTER)).status == 201
    reply = await api.call(
        "PATCH",
        "/v1/campaigns/winter",
        {"title": "Coats", "schedule": None, "daily_budget": None, "stores": ["s1"]},
    )
    assert reply.status == 200, reply.raw_body
    body = reply.json()
    assert (body["title"], body["schedule"], body["daily_budget"]) == ("Coats", None, None)
    assert body["stores"] == ["s1"] and body["store_tags"] == ["north"]
    assert body["per_member_day"] == 1 and body["holdout_pct"] == 10.0
    assert (await api.call("GET", "/v1/campaigns/winter")).json() == body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x", "colour": "red"}, "colour"),
        ({"status": "paused"}, "status"),
        ({"id": "spring"}, "id"),
        ({"priority": True}, "priority"),
        ({"priority": 1.0}, "priority"),
        ({"daily_budget": "10"}, "daily_budget"),
        ({"daily_budget": False}, "daily_budget"),
        ({"daily_budget": -1}, "daily_budget"),
        ({"per_member_week": -2}, "per_member_week"),
        ({"holdout_pct": 150}, "holdout_pct"),
        ({"holdout_pct": True}, "holdout_pct"),
        ({"holdout_pct": 10**400}, "holdout_pct"),  # too big for a float: not a 500
        ({"validity_s": -(10**400)}, "validity_s"),
        ({"tiers": "gold"}, "tiers"),
        ({"tiers": ["gold", 1]}, "tiers[1]"),
        ({"title": None}, "title"),
        ({"segments": None}, "segments"),
        ({"segments": ["vip"]}, "segments[0]"),
        ({"min_visits": 9, "max_visits": 3}, "min_visits"),
        ({"image_url": "http://cdn.example/a.png"}, "image_url"),
        ({"deep_link": "winter"}, "deep_link"),
        ({"code": "A B"}, "code"),
        ({"stores": ["s1", "s9"]}, "stores[1]"),
        ({"schedule": {"hours": [["09:00", "12:00"], ["11:30", "13:00"]]}}, "schedule.hours[1]"),
        ({"schedule": {"hours": [["09:00"]]}}, "schedule.hours[0]"),
        ({"schedule": {"days": [1, 1]}}, "schedule.days[1]"),
        ({"schedule": {"days": ["mon"]}}, "schedule.days"),
        ({"schedule": {"start": "2027-01-02", "end": "2027-01-01"}}, "schedule.end"),
        ({"schedule": {"end": "2026-11-30"}}, "schedule.end"),
        ({"schedule": {"from": "2027-01-01"}}, "schedule.from"),
        ({"schedule": "always"}, "schedule"),
        ({}, "update"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    assert (await api.call("POST", "/v1/campaigns", WINTER)).status == 201
    stored = (await api.call("GET", "/v1/campaigns/winter")).json()
    before = await api.versions()

    replies = [await api.call("PATCH", "/v1/campaigns/winter", body)]
    if field not in ("status", "id", "update"):
        replies.append(await api.call("POST", "/v1/campaigns", WINTER | {"id": "b"} | body))
    for reply in replies:
        assert reply.status == 400, reply.raw_body
        assert reply.json()["error"] == "invalid_field" and reply.json()["field"] == field
    assert (await api.call("GET", "/v1/campaigns/winter")).json() == stored
    assert len((await api.call("GET", "/v1/campaigns")).json()["campaigns"]) == 1
    assert await api.versions() == before


async def test_a_lone_surrogate_in_json_text_is_a_400_not_a_500(api: Api) -> None:
    # JSON may escape half a surrogate pair ("\\ud800"); Python decodes it, SQLite cannot store it.
    assert (await api.call("POST", "/v1/campaigns", WINTER)).status == 201
    stored = (await api.call("GET", "/v1/campaigns/winter")).json()
    for path, method, raw in (
        ("/v1/campaigns/winter", "PATCH", b'{"title": "Sale \\ud800"}'),
        ("/v1/campaigns/winter", "PATCH", b'{"image_url": "https://cdn.example/\\udc00"}'),
        ("/v1/campaigns", "POST", b'{"id": "b", "title": "\\ud800", "body": "b", "tiers": ["g"]}'),
    ):
        reply = await api.call(method, path, body=None, body_bytes=raw)
        assert reply.status == 400, reply.raw_body
        assert reply.json()["error"] == "invalid_field"
        assert "lone surrogate" in reply.json()["message"]
    assert (await api.call("GET", "/v1/campaigns/winter")).json() == stored


async def test_create_needs_the_required_fields_and_a_new_id(api: Api) -> None:
    reply = await api.call(
        "POST", "/v1/campaigns", {k: v for k, v in WINTER.items() if k != "tiers"}
    )
    assert (reply.status, reply.json()["field"]) == (400, "tiers")
    assert (await api.call("POST", "/v1/campaigns", WINTER)).status == 201
    again = await api.call("POST", "/v1/campaigns", WINTER)
    assert (again.status, again.json()["error"]) == (409, "already_exists")


async def test_pause_resume_archive_and_what_an_archived_campaign_refuses(api: Api) -> None:
    assert (await api.call("POST", "/v1/campaigns", WINTER | {"store_tags": []})).status == 201
    paused = await api.call("POST", "/v1/campaigns/winter/pause")
    assert paused.status == 200 and paused.json()["status"] == "paused"
    assert (await api.records.campaigns("s1")).campaigns == ()
    resumed = await api.call("POST", "/v1/campaigns/winter/resume", {})
    assert resumed.json()["status"] == "active"
    assert [c.id for c in (await api.records.campaigns("s1")).campaigns] == ["winter"]
    body = await api.call("POST", "/v1/campaigns/winter/pause", {"really": True})
    assert (body.status, body.json()["field"]) == (400, "really")
    assert (await api.call("POST", "/v1/campaigns/winter/archive")).json()["status"] == "archived"
    for method, path, sent in (
        ("PATCH", "/v1/campaigns/winter", {"title": "again"}),
        ("POST", "/v1/campaigns/winter/resume", None),
        ("POST", "/v1/campaigns/winter/archive", None),
        ("POST", "/v1/campaigns/winter/codes", {"codes": ["A1"]}),
    ):
        reply = await api.call(method, path, sent)
        assert (reply.status, reply.json()["error"]) == (409, "archived"), path


async def test_unknown_campaigns_and_stores_are_404(api: Api) -> None:
    for method, path, sent in (
        ("GET", "/v1/campaigns/nope", None),
        ("PATCH", "/v1/campaigns/nope", {"title": "x"}),
        ("POST", "/v1/campaigns/nope/pause", None),
        ("GET", "/v1/campaigns/nope/codes", None),
        ("POST", "/v1/campaigns/nope/codes", {"codes": ["A1"]}),
        ("PATCH", "/v1/stores/s9", {"timezone": "UTC"}),
    ):
        reply = await api.call(method, path, sent)
        assert (reply.status, reply.json()["error"]) == (404, "not_found"), path
    wrong = await api.call("DELETE", "/v1/campaigns/nope")
    assert wrong.status == 405 and wrong.headers["allow"] == "GET, PATCH"


async def test_code_pools_through_the_api(api: Api) -> None:
    assert (await api.call("POST", "/v1/campaigns", WINTER)).status == 201
    added = await api.call("POST", "/v1/campaigns/winter/codes", {"codes": ["W-1", "W-2"]})
    assert added.status == 200
    assert added.json() == {"campaign": "winter", "total": 2, "given_out": 0, "free": 2}
    for sent, field in (
        ({"codes": ["W-3", "W-1"]}, "codes[1]"),
        ({"codes": ["W-3", 4]}, "codes[1]"),
        ({"codes": "W-3"}, "codes"),
        ({"codes": ["W-3"], "more": 1}, "more"),
    ):
        reply = await api.call("POST", "/v1/campaigns/winter/codes", sent)
        assert (reply.status, reply.json()["field"]) == (400, field)
    counts = await api.call("GET", "/v1/campaigns/winter/codes")
    assert counts.json()["total"] == 2
    fixed = await api.call("PATCH", "/v1/campaigns/winter", {"code": "SHARED"})
    assert (fixed.status, fixed.json()["field"]) == (400, "code")


async def test_stores_list_and_bad_store_changes(api: Api) -> None:
    listed = await api.call("GET", "/v1/stores")
    assert [s["id"] for s in listed.json()["stores"]] == ["s1", "s2"]
    for sent, field in (
        ({"timezone": "Europe/Nowhere"}, "timezone"),
        ({"timezone": 1}, "timezone"),
        ({"tags": ["North"]}, "tags[0]"),
        ({"tags": "north"}, "tags"),
        ({"tags": ["north", 7]}, "tags[1]"),
        ({"name": "x"}, "name"),
        ({}, "timezone"),
    ):
        reply = await api.call("PATCH", "/v1/stores/s1", sent)
        assert (reply.status, reply.json()["field"]) == (400, field), sent
    assert (await api.call("GET", "/v1/stores")).json() == listed.json()


async def test_the_api_serves_its_openapi_description(api: Api) -> None:
    reply = await api.call("GET", "/v1/openapi.json")
    assert reply.status == 200
    assert reply.json() == openapi.document()
    described = reply.json()["paths"]
    for route in api.server.routes:
        for method in route.methods:
            assert any(
                method.lower() in item and route.pattern.match(re.sub(r"\{[^}]+\}", "x-1", path))
                for path, item in described.items()
            ), f"{method} {route.pattern.pattern} is not in the OpenAPI description"
