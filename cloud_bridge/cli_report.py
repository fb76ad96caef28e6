"""`cloud-bridge report DATABASE`: visits, members, time in store, campaign funnels and holdout lift
as text (default), JSON, CSV or one self-contained HTML file. Wiring only: the queries are
cloud_bridge/adapters/sqlite_report.py, the figures cloud_bridge/core/report.py, the formats
cloud_bridge/core/report_render.py; docs/reports.md defines every figure."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cloud_bridge.core.report import DEFAULT_RETURN_DAYS, InvalidReportQuery, report_query
from cloud_bridge.core.report_render import CSV_SECTIONS, to_csv, to_html, to_text

COMMAND = "cloud-bridge report"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report",
        help="visits, members, time in store, campaign funnels and lift against the holdout",
        description="Report on the loyalty database (read-only: it can run beside the bridge). "
        "Dates are each store's local dates; --to's date is included. docs/reports.md defines "
        "every figure.",
    )
    report.add_argument("database", type=Path)
    report.add_argument(
        "--from",
        dest="start",
        metavar="WHEN",
        help="start: YYYY-MM-DD, YYYY-MM-DDTHH:MM (local) or an ISO instant (default: the first "
        "visit)",
    )
    report.add_argument(
        "--to", dest="end", metavar="WHEN", help="end (a date is included; default: now)"
    )
    report.add_argument("--store", action="append", default=[], help="a store id (repeatable)")
    report.add_argument(
        "--campaign", action="append", default=[], help="a campaign id (repeatable)"
    )
    report.add_argument(
        "--return-days",
        type=int,
        default=DEFAULT_RETURN_DAYS,
        help="'came back' means within this many days (default %(default)s)",
    )
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the report as JSON")
    output.add_argument("--csv", action="store_true", help="print the report as CSV tables")
    output.add_argument(
        "--html", type=Path, metavar="FILE", help="write the report as one HTML file"
    )
    report.add_argument(
        "--section", choices=sorted(CSV_SECTIONS), help="with --csv: only this table"
    )


def run(args: argparse.Namespace, clock: Callable[[], float] = time.time) -> int:
    """Build and print (or write) the report; exit 2 with one line for bad input."""
    from cloud_bridge.adapters.sqlite_report import build_report
    from cloud_bridge.errors import RecordsError

    if args.section is not None and not args.csv:
        print(f"{COMMAND}: --section: goes with --csv", file=sys.stderr)
        return 2
    if args.html is not None and _same_file(args.html, args.database):
        # `--html $DB` would replace the loyalty records with a web page.
        print(
            f"{COMMAND}: --html: {args.html} is the loyalty database; name another file",
            file=sys.stderr,
        )
        return 2
    try:
        query = report_query(args.start, args.end, args.store, args.campaign, args.return_days)
        report = build_report(args.database, query, clock())
    except InvalidReportQuery as exc:
        option = {"from": "--from", "to": "--to", "return_days": "--return-days"}.get(
            exc.field, f"--{exc.field}"
        )
        print(f"{COMMAND}: {option}: {exc.problem}", file=sys.stderr)
        return 2
    except RecordsError as exc:
        print(f"{COMMAND}: DATABASE: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    elif args.csv:
        sys.stdout.write(to_csv(report, args.section))
    elif args.html is not None:
        try:
            _write_file(args.html, to_html(report))
        except OSError as exc:
            print(
                f"{COMMAND}: --html: cannot write {args.html}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2
        print(f"{COMMAND}: wrote {args.html}")
    else:
        sys.stdout.write(to_text(report))
    return 0


def _same_file(path: Path, database: Path) -> bool:
    """Whether `path` is the database or one of its journals (by file, through links too)."""
    for name in (database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))):
        try:
            if path.resolve() == name.resolve() or os.path.samefile(path, name):
                return True
        except OSError:  # one of them is not there: not the same file
            continue
    return False


def _write_file(path: Path, text: str) -> None:
    """Write `path` whole or not at all (a temporary file renamed over it)."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_html_report(database: Path, out: Path, now: float) -> Path:
    """The whole history's HTML report of `database`, written to `out` (for the demo)."""
    from cloud_bridge.adapters.sqlite_report import build_report

    _write_file(out, to_html(build_report(database, report_query(None, None, (), (), 30), now)))
    return out
