"""`GET /v1/report`: the report through the bridge's authenticated API, the same figures as
`cloud-bridge report --json` (or one CSV table). The queries run on a worker thread over their own
read-only connection, so a long report never holds up the bridge's loop or its writer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloud_bridge.adapters.http_api import HttpProblem, HttpResponse, Request, Route
from cloud_bridge.adapters.sqlite_report import build_report
from cloud_bridge.core.report import (
    DEFAULT_RETURN_DAYS,
    MAX_RETURN_DAYS,
    InvalidReportQuery,
    report_query,
)
from cloud_bridge.core.report_render import CSV_SECTIONS, to_csv
from cloud_bridge.errors import RecordsError

QUERY = ("from", "to", "store", "campaign", "return_days", "format", "section")
FORMATS = ("json", "csv")
#: Reports built at once: each reads a whole period (seconds on a year of a chain) on a worker
#: thread; more would take every worker thread the bridge has and the disk with them.
MAX_CONCURRENT_REPORTS = 2
BUSY_RETRY_AFTER_S = 5


class ReportApi:
    """The report endpoint over the loyalty database at `database`."""

    def __init__(self, database: Path, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock
        self._building = 0  # reports being built now (at most MAX_CONCURRENT_REPORTS)

    async def report(self, request: Request, _: str) -> HttpResponse:
        params = request.query
        fmt = params.get("format", "json")
        if fmt not in FORMATS:
            raise _bad(request, "format", f"{fmt[:20]!r} is not one of {', '.join(FORMATS)}")
        section = params.get("section")
        if section is not None and (fmt != "csv" or section not in CSV_SECTIONS):
            raise _bad(
                request,
                "section",
                f"goes with format=csv and is one of {', '.join(sorted(CSV_SECTIONS))}",
            )
        raw_days = params.get("return_days", str(DEFAULT_RETURN_DAYS))
        if not (raw_days.isascii() and raw_days.isdigit()) or len(raw_days) > 4:
            raise _bad(request, "return_days", f"{raw_days[:20]!r} is not a whole number of days")
        try:
            query = report_query(
                params.get("from"),
                params.get("to"),
                _list(params.get("store")),
                _list(params.get("campaign")),
                int(raw_days),
            )
        except InvalidReportQuery as exc:
            raise _bad(request, exc.field, exc.problem) from None
        if self._building >= MAX_CONCURRENT_REPORTS:
            raise HttpProblem(
                503,
                "busy",
                f"{request.where}: {self._building} reports are being built; retry in "
                f"{BUSY_RETRY_AFTER_S} s",
                headers=(("Retry-After", str(BUSY_RETRY_AFTER_S)),),
            )
        self._building += 1
        try:
            report = await asyncio.to_thread(build_report, self.database, query, self.clock())
        except InvalidReportQuery as exc:
            raise _bad(request, exc.field, exc.problem) from None
        except RecordsError as exc:
            raise HttpProblem(
                503,
                "records_unavailable",
                f"{request.where}: {exc}",
                headers=(("Retry-After", "5"),),
            ) from None
        finally:
            self._building -= 1
        if fmt == "csv":
            return HttpResponse(
                200,
                {},
                raw=to_csv(report, section).encode("utf-8"),
                content_type="text/csv; charset=utf-8",
            )
        return HttpResponse(200, report.to_json())

    def routes(self) -> tuple[Route, ...]:
        return (Route.of(r"^/v1/report$", {"GET": self.report}, query=QUERY),)


def routes(database: Path, clock: Callable[[], float] = time.time) -> tuple[Route, ...]:
    """The report's endpoints over the loyalty database at `database` (for `routes=`)."""
    return ReportApi(database, clock).routes()


def _list(value: str | None) -> list[str]:
    return [] if value is None else value.split(",")


def _bad(request: Request, field: str, problem: str) -> HttpProblem:
    return HttpProblem(
        400, "invalid_parameter", f"{request.where}: {field}: {problem}", field=field
    )


_STRING = {"type": "string"}
OPENAPI_PATHS: dict[str, Any] = {
    "/v1/report": {
        "get": {
            "summary": "The report: visits, members, time in store, campaign funnels and lift",
            "description": "The same figures as `cloud-bridge report --json` (docs/reports.md "
            "defines each). Dates are each store's local dates; `to`'s date is included.",
            "parameters": [
                {
                    "name": "from",
                    "in": "query",
                    "schema": _STRING,
                    "description": "YYYY-MM-DD or YYYY-MM-DDTHH:MM (each store's local time) or "
                    "an ISO instant with offset; default: the first visit",
                },
                {
                    "name": "to",
                    "in": "query",
                    "schema": _STRING,
                    "description": "as `from`; a date is included; default: now",
                },
                {
                    "name": "store",
                    "in": "query",
                    "schema": _STRING,
                    "description": "store ids, comma-separated; default: every store",
                },
                {
                    "name": "campaign",
                    "in": "query",
                    "schema": _STRING,
                    "description": "campaign ids, comma-separated; default: every campaign",
                },
                {
                    "name": "return_days",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_RETURN_DAYS},
                    "description": "'came back' means within this many days (default 30)",
                },
                {
                    "name": "format",
                    "in": "query",
                    "schema": {"type": "string", "enum": list(FORMATS)},
                },
                {
                    "name": "section",
                    "in": "query",
                    "schema": {"type": "string", "enum": sorted(CSV_SECTIONS)},
                    "description": "with format=csv: only this table",
                },
            ],
            "responses": {
                "200": {
                    "description": "The report",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                "400": {"description": "A bad parameter; `field` names it"},
                "401": {"description": "No valid API token"},
                "503": {
                    "description": (
                        "The loyalty database cannot be read (records_unavailable), or two "
                        "reports are being built already (busy); retry after Retry-After"
                    )
                },
            },
        }
    }
}
