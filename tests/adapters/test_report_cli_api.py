"""`cloud-bridge report` and `GET /v1/report` on a real SQLite database with the designed history,
the API on a real loopback server with real tokens."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cloud_bridge.adapters import http_report
from cloud_bridge.adapters.http_api import (
    EnrollmentApiServer,
    add_token_hash,
    new_api_token,
    serve_api,
    token_hash,
)
from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
from cloud_bridge.adapters.sqlite_report import build_report
from cloud_bridge.cli import main
from cloud_bridge.cli_report import write_html_report
from cloud_bridge.core.report import ReportQuery, report_query
from cloud_bridge.core.report_render import CSV_SECTIONS
from tests.fakes.http import HttpReply, request
from tests.report_history import (
    HOSTILE_TITLE,
    NOW,
    build_history,
    expected_by_day,
    expected_funnel,
    write_history,
)

HISTORY = build_history()
FROM, TO = "2026-10-20", "2026-11-10"


@pytest.fixture
async def database(tmp_path: Path) -> Path:
    path = tmp_path / "loyalty.db"
    await write_history(path, HISTORY)
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def expected_json(database: Path, query: ReportQuery, now: float) -> dict[str, Any]:
    return build_report(database, query, now).to_json()


def _now_of(body: dict[str, Any]) -> float:
    return datetime.fromisoformat(body["generated_at"].replace("Z", "+00:00")).timestamp()


def test_cli_json_is_the_report(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, str(database), "--from", FROM, "--to", TO, "--json")

    assert code == 0, err
    body = json.loads(out)
    query = report_query(FROM, TO, (), (), 30)
    assert body == expected_json(database, query, _now_of(body))
    hold = {c["campaign"]: c for c in body["campaigns"]}["c-hold"]
    e = expected_funnel(HISTORY, "c-hold")
    assert hold["offers"]["decided"] == e["decided"] and hold["offers"]["sent"] == e["sent"]
    ny = {s["store"]: s for s in body["visits"]["stores"]}["ny"]
    assert {d["date"]: d["visits"] for d in ny["by_day"] if d["visits"]} == expected_by_day(
        HISTORY
    )["ny"]


def test_cli_text_csv_and_html(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, _ = run_cli(capsys, str(database), "--from", FROM, "--to", TO, "--store", "ny")
    assert code == 0
    assert "Visits per store" in text and "c-hold" in text and "berlin" not in text

    code, out, _ = run_cli(capsys, str(database), "--csv", "--section", "visits_by_hour")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert tuple(rows[0]) == CSV_SECTIONS["visits_by_hour"] and len(rows) == 1 + 3 * 24

    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    code, out, _ = run_cli(capsys, str(database), "--from", FROM, "--to", TO, "--html", str(page))
    assert code == 0 and str(page) in out
    html = page.read_text()
    assert "<svg" in html and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and HOSTILE_TITLE not in html
    assert list(page.parent.iterdir()) == [page]  # no temporary file left


def test_cli_html_never_replaces_the_database_and_says_when_it_cannot_write(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = database.read_bytes()
    link = tmp_path / "link.db"
    link.symlink_to(database)
    for target in (database, link, database.with_name(database.name + "-wal")):
        code, out, err = run_cli(capsys, str(database), "--html", str(target))
        assert code == 2 and out == ""
        assert err.startswith("cloud-bridge report: --html: ") and "loyalty database" in err
    assert database.read_bytes() == original

    missing_dir = tmp_path / "no-such-dir" / "report.html"
    code, out, err = run_cli(capsys, str(database), "--html", str(missing_dir))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"cloud-bridge report: --html: cannot write {missing_dir}")
    directory = tmp_path / "a-directory"
    directory.mkdir()
    code, _, err = run_cli(capsys, str(database), "--html", str(directory))
    assert code == 2 and "cannot write" in err
    assert list(tmp_path.glob(".*.tmp")) == []  # no temporary file left behind


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--from", "soon"], "--from"),
        (["--to", "2026-02-30"], "--to"),
        (["--from", "2026-11-02", "--to", "2026-11-01"], "--to"),
        (["--store", "mars"], "--store"),
        (["--campaign", "c-nope"], "--campaign"),
        (["--return-days", "0"], "--return-days"),
        (["--section", "lift"], "--section"),
    ],
)
def test_cli_bad_input_is_one_line_naming_the_option(
    database: Path, capsys: pytest.CaptureFixture[str], args: list[str], option: str
) -> None:
    code, out, err = run_cli(capsys, str(database), *args)

    assert code == 2 and out == ""
    assert err.startswith(f"cloud-bridge report: {option}: ") and err.count("\n") == 1


def test_cli_never_creates_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "loyalty.db"

    code, _, err = run_cli(capsys, str(missing))

    assert code == 2 and "no loyalty database" in err and not missing.exists()


@dataclass
class Api:
    server: EnrollmentApiServer
    token: str

    async def get(self, path: str, **kwargs: Any) -> HttpReply:
        kwargs.setdefault("token", self.token)
        return await request(self.server.port, "GET", path, **kwargs)


@pytest.fixture
async def api(database: Path, tmp_path: Path) -> AsyncIterator[Api]:
    enrollment = await SqliteEnrollment.open(database, "acme")
    server: EnrollmentApiServer | None = None
    try:
        token = new_api_token()
        tokens = tmp_path / "api-tokens"
        add_token_hash(tokens, token_hash(token))
        routes = http_report.ReportApi(database, clock=lambda: NOW).routes()
        server = await serve_api(enrollment, tokens, "127.0.0.1", 0, routes=routes)
        yield Api(server, token)
    finally:
        if server is not None:
            await server.close()
        await enrollment.close()


async def test_the_api_serves_the_same_figures_as_the_cli(api: Api, database: Path) -> None:
    reply = await api.get(f"/v1/report?from={FROM}&to={TO}&store=ny,delhi&return_days=14")

    assert reply.status == 200, reply.raw_body
    assert reply.headers["content-type"] == "application/json"
    query = report_query(FROM, TO, ["ny", "delhi"], [], 14)
    assert reply.json() == expected_json(database, query, NOW)
    assert [s["store"] for s in reply.json()["visits"]["stores"]] == ["delhi", "ny"]


async def test_the_api_serves_csv(api: Api) -> None:
    reply = await api.get("/v1/report?format=csv&section=lift&campaign=c-hold")

    assert reply.status == 200
    assert reply.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(reply.raw_body.decode())))
    assert tuple(rows[0]) == CSV_SECTIONS["lift"]
    assert [r[0] for r in rows[1:]] == ["c-hold"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=tomorrow", "from"),
        ("to=2026-11-31", "to"),
        ("store=mars", "store"),
        ("campaign=c-nope", "campaign"),
        ("return_days=0", "return_days"),
        ("return_days=ten", "return_days"),
        ("return_days=%D9%A1%D9%A0", "return_days"),  # Arabic-Indic digits: "10", not ASCII
        ("format=pdf", "format"),
        ("section=lift", "section"),
        ("format=csv&section=everything", "section"),
        ("colour=red", "colour"),
    ],
)
async def test_the_api_refuses_a_bad_parameter_naming_it(api: Api, query: str, field: str) -> None:
    reply = await api.get(f"/v1/report?{query}")

    assert reply.status == 400, reply.raw_body
    assert reply.json()["field"] == field


async def test_the_report_needs_a_token(api: Api) -> None:
    reply = await api.get("/v1/report", token=None)

    assert reply.status == 401


async def test_the_api_says_when_the_database_is_gone(api: Api, database: Path) -> None:
    os.rename(database, database.with_name("moved.db"))

    reply = await api.get("/v1/report")

    assert reply.status == 503 and reply.json()["error"] == "records_unavailable"


def test_the_openapi_paths_describe_every_query_parameter() -> None:
    get = http_report.OPENAPI_PATHS["/v1/report"]["get"]

    assert {p["name"] for p in get["parameters"]} == set(http_report.QUERY)
    assert {"200", "400", "401"} <= set(get["responses"])


def test_the_demo_writes_the_whole_historys_page(database: Path, tmp_path: Path) -> None:
    out = write_html_report(database, tmp_path / "report.html", NOW)

    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 5
    assert f"{len(HISTORY.visits):,}" in page  # the whole history: every visit designed


async def test_at_most_two_reports_are_built_at_once_the_third_is_told_to_retry(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each report reads a whole period on a worker thread: a third at once would take the
    bridge's worker threads and its disk; it gets 503 `busy` with Retry-After, and once one
    finishes the next is built."""
    release = threading.Event()
    started = threading.Semaphore(0)
    real = http_report.build_report

    def held(*args: Any) -> Any:
        started.release()
        release.wait(30)
        return real(*args)

    monkeypatch.setattr(http_report, "build_report", held)
    first = asyncio.create_task(api.get("/v1/report"))
    second = asyncio.create_task(api.get("/v1/report"))
    for _ in range(2):
        assert await asyncio.to_thread(started.acquire, True, 30)
    try:
        third = await api.get("/v1/report")
        assert third.status == 503, third.raw_body
        assert third.json()["error"] == "busy" and third.headers["retry-after"] == "5"
    finally:
        release.set()
    assert (await first).status == 200 and (await second).status == 200
    assert (await api.get("/v1/report")).status == 200
