"""Campaign revisions and their history (issue 11), on a real SQLite file, through the records, the
real HTTP API server on loopback and the CLI: every change moves the revision by one and writes
its history row in the same transaction; a refused or failed change writes neither; a stale
If-Match is 412 with nothing written; a database from before keeps its campaigns at revision 1."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.adapters.sqlite_records import (
    _MIGRATIONS,
    SCHEMA_VERSION,
    SqliteLoyaltyRecords,
)
from cloud_bridge.app import api_routes
from cloud_bridge.cli import main
from cloud_bridge.core.campaigns import (
    ArchivedCampaign,
    CampaignChange,
    CampaignDefinition,
    CampaignRevision,
    InvalidCampaign,
    StaleRevision,
    UnknownCampaign,
)
from cloud_bridge.errors import RecordsError
from tests.factories import TEST_DATA_KEY
from tests.fakes.http import HttpReply, request

CHAIN = "acme"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()
STORES = ("s1", "s2")
BASE = CampaignDefinition(
    id="winter",
    title="Winter sale",
    body="30% off coats",
    tiers=("gold",),
    cooldown_s=3600.0,
    priority=1,
    validity_s=900.0,
)
CREATED = ("id", "title", "body", "tiers", "cooldown_s", "priority", "validity_s")


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[SqliteLoyaltyRecords]:
    opened = await SqliteLoyaltyRecords.open(tmp_path / "loyalty.db", CHAIN, create=True)
    try:
        for store in STORES:
            await opened.add_store(store, f"Store {store}")
        yield opened
    finally:
        await opened.close()


async def versions(records: SqliteLoyaltyRecords) -> dict[str, int]:
    return {store: (await records.campaigns(store)).version for store in STORES}


async def revision_of(records: SqliteLoyaltyRecords, campaign: str = "winter") -> int:
    found = await records.campaign(campaign)
    assert found is not None
    return found.revision


# --- the records ----------------------------------------------------------------------------------


async def test_each_change_moves_the_revision_by_one_and_writes_what_it_changed(
    records: SqliteLoyaltyRecords,
) -> None:
    created = await records.create_campaign(BASE, NOW)
    assert created.revision == 1 and created.to_json()["revision"] == 1
    updated = await records.update_campaign(
        "winter", CampaignChange(title="Big winter sale", body="30% off coats"), NOW + 1
    )
    assert updated.revision == 2  # the body given as it was is not a changed field
    paused = await records.set_campaign_status("winter", "pause", NOW + 2, source="api")
    assert paused.revision == 3
    await records.add_campaign_codes("winter", ["W-1", "W-2"], NOW + 3, source="api")
    resumed = await records.set_campaign_status("winter", "resume", NOW + 4)
    assert resumed.revision == 5
    same = await records.update_campaign("winter", CampaignChange(priority=1), NOW + 5)
    assert same.revision == 6  # asked for and written, though it changed nothing
    archived = await records.set_campaign_status("winter", "archive", NOW + 6)

    assert archived.revision == 7 and await revision_of(records) == 7
    assert await records.campaign_history("winter") == [
        CampaignRevision("winter", 1, NOW, "create", CREATED, "cli"),
        CampaignRevision("winter", 2, NOW + 1, "update", ("title",), "cli"),
        CampaignRevision("winter", 3, NOW + 2, "pause", ("status",), "api"),
        CampaignRevision("winter", 4, NOW + 3, "codes", ("codes",), "api"),
        CampaignRevision("winter", 5, NOW + 4, "resume", ("status",), "cli"),
        CampaignRevision("winter", 6, NOW + 5, "update", (), "cli"),
        CampaignRevision("winter", 7, NOW + 6, "archive", ("status",), "cli"),
    ]
    listed = {c.definition.id: c.revision for c in await records.campaign_list()}
    assert listed == {"winter": 7}


async def test_a_new_campaign_lists_the_fields_it_sets(records: SqliteLoyaltyRecords) -> None:
    full = dataclasses.replace(BASE, stores=("s1",), holdout_pct=10.0, daily_budget=50)
    await records.create_campaign(full, NOW)
    (first,) = await records.campaign_history("winter")
    assert first.fields == (*CREATED, "stores", "daily_budget", "holdout_pct")


async def test_a_refused_change_writes_neither_revision_nor_history(
    records: SqliteLoyaltyRecords,
) -> None:
    await records.create_campaign(BASE, NOW)
    await records.create_campaign(dataclasses.replace(BASE, id="other", code="TAKEN"), NOW)
    start = await versions(records)

    with pytest.raises(InvalidCampaign) as bad_store:
        await records.update_campaign("winter", CampaignChange(stores=("s9",)), NOW + 1)
    with pytest.raises(StaleRevision) as stale:
        await records.update_campaign(
            "winter", CampaignChange(title="late"), NOW + 1, if_revision=3
        )
    with pytest.raises(StaleRevision):
        await records.set_campaign_status("winter", "pause", NOW + 1, if_revision=2)
    with pytest.raises(InvalidCampaign) as taken:
        await records.add_campaign_codes("winter", ["W-1", "TAKEN"], NOW + 1)

    assert (bad_store.value.field, taken.value.field) == ("stores[0]", "codes[1]")
    assert stale.value.field == "revision" and stale.value.current == 1
    assert "at revision 1, not 3" in stale.value.problem
    current = await records.campaign("winter")
    assert current is not None and (current.revision, current.status) == (1, "active")
    assert current.definition.title == "Winter sale"
    assert [r.revision for r in await records.campaign_history("winter")] == [1]
    assert (await records.campaign_code_counts("winter")).total == 0
    assert await versions(records) == start

    # The revision read is the one the change applies to.
    applied = await records.update_campaign(
        "winter", CampaignChange(title="on time"), NOW + 2, if_revision=1
    )
    assert applied.revision == 2
    await records.set_campaign_status("winter", "archive", NOW + 3, if_revision=2)
    with pytest.raises(ArchivedCampaign):
        await records.update_campaign("winter", CampaignChange(title="after"), NOW + 4)
    assert [r.revision for r in await records.campaign_history("winter")] == [1, 2, 3]


async def test_a_failure_after_the_campaign_is_written_undoes_the_revision_too(
    records: SqliteLoyaltyRecords,
) -> None:
    """The history row is written in the change's transaction: when it cannot be (a row planted by
    hand at the next revision), the campaign, its revision and the stores' syncs stay as they were."""
    await records.create_campaign(BASE, NOW)
    await records.connection.execute(
        "INSERT INTO campaign_changes VALUES ('winter', 2, 0, 'update', '[]', 'cli')"
    )
    await records.connection.commit()
    start = await versions(records)

    with pytest.raises(RecordsError, match="cannot store campaign 'winter'"):
        await records.update_campaign("winter", CampaignChange(stores=("s1",)), NOW + 1)
    with pytest.raises(RecordsError, match="cannot store campaign 'winter'"):
        await records.set_campaign_status("winter", "pause", NOW + 1)
    with pytest.raises(RecordsError, match="cannot add codes to 'winter'"):
        await records.add_campaign_codes("winter", ["W-1"], NOW + 1)

    current = await records.campaign("winter")
    assert current is not None and (current.revision, current.status) == (1, "active")
    assert current.definition.stores == ()
    assert (await records.campaign_code_counts("winter")).total == 0
    assert await versions(records) == start


async def test_a_hand_damaged_history_row_is_named(records: SqliteLoyaltyRecords) -> None:
    await records.create_campaign(BASE, NOW)
    await records.connection.execute("UPDATE campaign_changes SET fields = 'title'")
    await records.connection.commit()
    with pytest.raises(RecordsError, match=r"campaign_changes row \('winter', revision 1\)"):
        await records.campaign_history("winter")
    with pytest.raises(UnknownCampaign):
        await records.campaign_history("nobody")


async def test_a_schema_16_database_keeps_its_campaigns_at_revision_1(tmp_path: Path) -> None:
    path = tmp_path / "v16.db"
    conn = sqlite3.connect(path)
    for migration in _MIGRATIONS[:16]:
        conn.executescript(migration)
    conn.execute("PRAGMA user_version = 16")
    conn.executemany("INSERT INTO stores (id, name) VALUES (?, '')", [(s,) for s in STORES])
    conn.execute(
        "INSERT INTO campaigns (id, store_id, title, body, tiers, cooldown_s, status, "
        "updated_at, created_at) VALUES ('old', NULL, 't', 'b', 'gold', 60, 'active', 5, 5)"
    )
    conn.commit()
    conn.close()

    records = await SqliteLoyaltyRecords.open(path, CHAIN)
    try:
        (version,) = await records.connection.execute_fetchall("PRAGMA user_version")
        assert version[0] == SCHEMA_VERSION
        assert await revision_of(records, "old") == 1
        assert await records.campaign_history("old") == []
        await records.update_campaign("old", CampaignChange(title="new"), NOW, if_revision=1)
        assert await revision_of(records, "old") == 2
        assert await records.campaign_history("old") == [
            CampaignRevision("old", 2, NOW, "update", ("title",), "cli")
        ]
    finally:
        await records.close()


# --- the HTTP API -------------------------------------------------------------------------------


@dataclass
class Api:
    server: EnrollmentApiServer
    records: SqliteLoyaltyRecords
    token: str

    async def call(
        self, method: str, path: str, body: Any = None, if_match: str | None = None
    ) -> HttpReply:
        kwargs: dict[str, Any] = {"token": self.token}
        if body is not None:
            kwargs["json_body"] = body
        elif method in ("POST", "PATCH"):
            kwargs["body"] = b""
        if if_match is not None:
            kwargs["headers"] = {"If-Match": if_match}
        return await request(self.server.port, method, path, **kwargs)


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


NEW = {"id": "winter", "title": "Winter sale", "body": "30% off coats", "tiers": ["gold"]}


async def test_the_api_answers_the_revision_as_etag_and_refuses_a_stale_if_match(api: Api) -> None:
    created = await api.call("POST", "/v1/campaigns", NEW)
    assert created.status == 201 and created.headers["etag"] == '"1"'
    shown = await api.call("GET", "/v1/campaigns/winter")
    assert shown.headers["etag"] == '"1"' and shown.json()["revision"] == 1

    first = await api.call("PATCH", "/v1/campaigns/winter", {"title": "Mine"}, if_match='"1"')
    assert first.status == 200, first.raw_body
    assert first.headers["etag"] == '"2"' and first.json()["revision"] == 2
    start = {s: (await api.records.campaigns(s)).version for s in STORES}

    # A second editor still holding revision 1: refused, nothing written.
    late = await api.call("PATCH", "/v1/campaigns/winter", {"title": "Theirs"}, if_match='"1"')
    assert late.status == 412
    assert late.json()["error"] == "precondition_failed"
    assert late.json()["field"] == "If-Match"
    assert "at revision 2, not 1" in late.json()["message"]
    assert late.headers["etag"] == '"2"'
    paused = await api.call("POST", "/v1/campaigns/winter/pause", if_match='W/"1"')
    assert paused.status == 412
    current = (await api.call("GET", "/v1/campaigns/winter")).json()
    assert (current["title"], current["status"], current["revision"]) == ("Mine", "active", 2)
    assert {s: (await api.records.campaigns(s)).version for s in STORES} == start

    assert (await api.call("POST", "/v1/campaigns/winter/pause", if_match='"2"')).status == 200
    assert (await api.call("POST", "/v1/campaigns/winter/resume", if_match="*")).status == 200
    unguarded = await api.call("PATCH", "/v1/campaigns/winter", {"priority": 3})
    assert unguarded.status == 200 and unguarded.headers["etag"] == '"5"'
    codes = await api.call("POST", "/v1/campaigns/winter/codes", {"codes": ["W-1"]})
    assert codes.status == 200

    history = await api.call("GET", "/v1/campaigns/winter/history")
    assert history.status == 200
    assert history.json()["campaign"] == "winter"
    assert [
        (r["revision"], r["action"], r["fields"], r["source"], r["changed_at"])
        for r in history.json()["revisions"]
    ] == [
        (1, "create", list(CREATED), "api", NOW),
        (2, "update", ["title"], "api", NOW),
        (3, "pause", ["status"], "api", NOW),
        (4, "resume", ["status"], "api", NOW),
        (5, "update", ["priority"], "api", NOW),
        (6, "codes", ["codes"], "api", NOW),
    ]


async def test_a_malformed_if_match_is_a_400_naming_the_header(api: Api) -> None:
    assert (await api.call("POST", "/v1/campaigns", NEW)).status == 201
    for sent in ("1", '"abc"', '"0"', '"1", "2"', '"' + "9" * 30 + '"'):
        reply = await api.call("PATCH", "/v1/campaigns/winter", {"title": "x"}, if_match=sent)
        assert reply.status == 400, sent
        assert reply.json()["field"] == "If-Match"
    sent_in_body = await api.call("PATCH", "/v1/campaigns/winter", {"revision": 1})
    assert sent_in_body.status == 400 and sent_in_body.json()["field"] == "revision"
    assert "If-Match" in sent_in_body.json()["message"]
    assert (await api.call("GET", "/v1/campaigns/winter")).json()["revision"] == 1
    missing = await api.call("GET", "/v1/campaigns/nobody/history")
    assert missing.status == 404


# --- the CLI ------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["campaign", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_campaign_history_prints_each_revision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "loyalty.db")
    assert main(["seed", db, "--members", "2", "--seed", "1", "--store", "s1"]) == 0
    create = ["create", db, "--id", "spring", "--title", "Spring", "--body", "b", "--tiers", "gold"]
    code, out, _ = run(capsys, *create)
    assert code == 0 and "created (revision 1)" in out
    assert run(capsys, "update", db, "spring", "--title", "Spring!", "--days", "sat")[0] == 0
    assert run(capsys, "pause", db, "spring")[0] == 0

    code, out, _ = run(capsys, "history", db, "spring")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[0].startswith("revision 1, ") and "create (cli): id, title, body" in lines[0]
    assert lines[1].endswith("update (cli): title, schedule")
    assert lines[2].endswith("pause (cli): status")
    code, out, _ = run(capsys, "history", db, "spring", "--json")
    assert code == 0 and [r["revision"] for r in json.loads(out)] == [1, 2, 3]
    assert json.loads(run(capsys, "show", db, "spring", "--json")[1])["revision"] == 3

    code, out, err = run(capsys, "history", db, "nobody")
    assert code == 2 and out == ""
    assert err.startswith("cloud-bridge campaign history: id: no campaign 'nobody'")
