"""The README's "same from the HTTP API alone" walk-through, step by step, against a real bridge API
on a real loyalty database: every `curl` of that block must answer 2xx, and afterwards the campaign
is there as the steps left it (targeted by tag, scheduled, capped, with a holdout and codes) and the
report answers for it. If the README and the API drift apart, this fails."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.adapters.http_api import (
    EnrollmentApiServer,
    add_token_hash,
    new_api_token,
    serve_api,
    token_hash,
)
from cloud_bridge.adapters.sqlite_deliveries import SqliteDeliveries
from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.app import api_routes
from tests.factories import TEST_DATA_KEY
from tests.fakes.http import request

README = Path(__file__).resolve().parents[2] / "README.md"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()


def walkthrough() -> list[tuple[str, str, Any]]:
    """(method, path?query, JSON body or None) of each curl in the README's API walk-through."""
    text = README.read_text(encoding="utf-8")
    start = text.index("**The same from the HTTP API alone.**")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block is not None, "README: the API walk-through has no sh block"
    steps = []
    for line in block.group(1).splitlines():
        argv = shlex.split(line.split(" #", 1)[0])
        if not argv or argv[0] != "curl":
            continue
        method, body = "GET", None
        if "-X" in argv:
            method = argv[argv.index("-X") + 1]
        if "-d" in argv:
            body = json.loads(argv[argv.index("-d") + 1])
        url = next(a for a in argv if a.startswith("$API"))
        steps.append((method, url.removeprefix("$API"), body))
    return steps


@pytest.fixture
async def served(
    tmp_path: Path,
) -> AsyncIterator[tuple[EnrollmentApiServer, str, SqliteLoyaltyRecords]]:
    path = tmp_path / "loyalty.db"
    records = await SqliteLoyaltyRecords.open(path, "acme", create=True, data_key=TEST_DATA_KEY)
    enrollment: SqliteEnrollment | None = None
    server: EnrollmentApiServer | None = None
    try:
        await records.add_store("store-001", "Store 1")
        await records.sync_preference_terms(("womenswear", "menswear"), ("discount", "event"))
        enrollment = await SqliteEnrollment.open(path, "acme", data_key=TEST_DATA_KEY)
        token = new_api_token()
        add_token_hash(tmp_path / "api-tokens", token_hash(token))
        routes = api_routes(records, lambda: NOW, SqliteDeliveries(records))
        server = await serve_api(enrollment, tmp_path / "api-tokens", "127.0.0.1", 0, routes=routes)
        yield server, token, records
    finally:
        if server is not None:
            await server.close()
        if enrollment is not None:
            await enrollment.close()
        await records.close()


def test_the_walkthrough_covers_each_step_a_marketer_takes() -> None:
    paths = [f"{method} {path.split('?')[0]}" for method, path, _ in walkthrough()]
    assert paths == [
        "PATCH /v1/stores/store-001",
        "POST /v1/campaigns",
        "PATCH /v1/campaigns/winter-coats",
        "PATCH /v1/campaigns/winter-coats",
        "POST /v1/campaigns/winter-coats/codes",
        "POST /v1/campaigns/winter-coats/pause",
        "POST /v1/campaigns/winter-coats/resume",
        "GET /v1/report",
    ]


async def test_every_step_of_the_readme_walkthrough_works_on_the_real_api(
    served: tuple[EnrollmentApiServer, str, SqliteLoyaltyRecords],
) -> None:
    server, token, records = served
    for method, path, body in walkthrough():
        kwargs: dict[str, Any] = {"token": token}
        if body is not None:
            kwargs["json_body"] = body
        reply = await request(server.port, method, path, **kwargs)
        assert 200 <= reply.status < 300, (method, path, reply.status, reply.body[:300])
    campaign = await records.campaign("winter-coats")
    assert campaign is not None and campaign.status == "active"
    definition = campaign.to_json()
    assert definition["store_tags"] == ["region-north"]
    assert definition["holdout_pct"] == 10 and definition["daily_budget"] == 500
    assert definition["schedule"]["hours"] == [["09:00", "12:00"], ["17:00", "21:00"]]
    sync = await records.campaigns("store-001")
    assert sync.timezone == "Europe/Paris"
    assert [c.id for c in sync.campaigns] == ["winter-coats"]
    assert sync.campaigns[0].schedule is not None and sync.campaigns[0].per_member_day == 1
