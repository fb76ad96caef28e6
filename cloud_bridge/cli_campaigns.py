"""`cloud-bridge campaign ...` and `cloud-bridge store ...`: campaigns a marketer runs and the
stores they target (issue 11). Wiring only: the rules are cloud_bridge/core/campaigns.py's, the
storage cloud_bridge/adapters/sqlite_records.py's. Bad input exits 2 with one line naming the
field: `cloud-bridge campaign create: schedule.hours[1]: overlaps 09:00-12:00`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloud_bridge.core.campaigns import (
    CLEARABLE,
    Campaign,
    CampaignChange,
    CampaignDefinition,
    CampaignRevision,
    CampaignSchedule,
    InvalidCampaign,
    StoreFacts,
    UnknownCampaign,
    parse_days,
    parse_hours,
)
from cloud_bridge.errors import RecordsError

if TYPE_CHECKING:
    from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords

COMMANDS = ("campaign", "store")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: What `campaign update --clear` takes: the core's clearable fields, and the lists it empties.
_CLEAR_CHOICES = (*(f.replace("_", "-") for f in CLEARABLE), "store-tags", "segments")
_SCHEDULE_OPTIONS = ("start", "end", "days", "hours")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`campaign create | list | show | update | pause | resume | archive | codes | history` and
    `store set | list`."""
    campaign = sub.add_parser(
        "campaign",
        help="create, list, show, change, pause, resume or archive campaigns; their code pools and "
        "history",
        description="Manage the chain's campaigns. Each change is synced, signed, to the gateways "
        "of the stores whose campaigns it changes; only active campaigns are in it. Archiving is "
        "final. Schedules are in each store's local time (`cloud-bridge store set --timezone`).",
    )
    actions = campaign.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="add an active campaign")
    update = actions.add_parser(
        "update", help="change a campaign: each option given replaces its value"
    )
    for parser, required in ((create, True), (update, False)):
        _add_definition_options(parser, required)
    update.add_argument(
        "--every-store", action="store_true", help="name no store (instead of --store)"
    )
    update.add_argument(
        "--clear",
        action="append",
        default=[],
        choices=_CLEAR_CHOICES,
        metavar="FIELD",
        help="remove a field's value (repeatable): " + ", ".join(_CLEAR_CHOICES),
    )
    listing = actions.add_parser("list", help="list every campaign, archived ones too")
    listing.add_argument("database", type=Path)
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    show = actions.add_parser("show", help="show one campaign")
    show.add_argument("database", type=Path)
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print it as JSON")
    for action, what in (
        ("pause", "stop offering it (it leaves the gateways' sync) until resumed"),
        ("resume", "offer a paused campaign again"),
        ("archive", "end a campaign for good (it cannot be resumed)"),
    ):
        status = actions.add_parser(action, help=what)
        status.add_argument("database", type=Path)
        status.add_argument("id")
    codes = actions.add_parser(
        "codes",
        help="a campaign's code pool: `codes add DATABASE ID FILE` adds one code per line; "
        "`codes DATABASE ID` counts them",
        description="`cloud-bridge campaign codes add DATABASE ID FILE` adds the codes in FILE "
        "(one per line; blank lines and # comments skipped; - for stdin) to the campaign's pool, "
        "all or none: each offer then carries one code of its own. Codes are unique in the "
        "chain. `cloud-bridge campaign codes DATABASE ID` prints how many there are, how many "
        "were given out and how many are free.",
    )
    codes.add_argument("words", nargs="+", metavar="[add] DATABASE ID [FILE]")
    codes.add_argument("--json", action="store_true", help="print the counts as JSON")
    history = actions.add_parser(
        "history",
        help="a campaign's revisions: what each changed, when, through the CLI or the API",
    )
    history.add_argument("database", type=Path)
    history.add_argument("id")
    history.add_argument("--json", action="store_true", help="print them as JSON")

    store = sub.add_parser("store", help="a store's time zone and tags (campaigns use them)")
    store_actions = store.add_subparsers(dest="action", required=True)
    setting = store_actions.add_parser(
        "set",
        help="set a store's IANA time zone and/or its tags",
        description="Set a store's time zone (schedules and local days are read in it) and its "
        "tags (campaigns target stores by tag, e.g. region-north). The stores whose campaign "
        "sync changes get it at the next sync.",
    )
    setting.add_argument("database", type=Path)
    setting.add_argument("store")
    setting.add_argument("--timezone", default=None, help="IANA name, e.g. Europe/Paris")
    tags = setting.add_mutually_exclusive_group()
    tags.add_argument(
        "--tag", action="append", default=None, help="a tag (repeatable); replaces its tags"
    )
    tags.add_argument("--no-tags", action="store_true", help="remove every tag")
    stores = store_actions.add_parser("list", help="list the stores, their time zones and tags")
    stores.add_argument("database", type=Path)
    stores.add_argument("--json", action="store_true", help="print them as JSON")


def _add_definition_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("database", type=Path)
    if required:
        parser.add_argument("--id", required=True, help="campaign id (a-z, 0-9, '-', '_')")
    else:
        parser.add_argument("id", help="the campaign's id")
    parser.add_argument("--title", required=required, help="the offer's title")
    parser.add_argument("--body", required=required, help="the offer's text")
    parser.add_argument(
        "--tiers", required=required, help="comma-separated member tiers, e.g. gold,silver"
    )
    parser.add_argument(
        "--promotion-type",
        default=None,
        help="one of the chain's promotion types" + ("" if required else " ('' for none)"),
    )
    parser.add_argument(
        "--interests", default=None, help="comma-separated interests ('' or none: any)"
    )
    parser.add_argument(
        "--cooldown-s",
        type=float,
        default=86400.0 if required else None,
        help="seconds before a member may get it again"
        + (" (default %(default)s)" if required else ""),
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=0 if required else None,
        help="higher wins when several apply" + (" (default 0)" if required else ""),
    )
    parser.add_argument(
        "--validity-s",
        type=float,
        default=3600.0 if required else None,
        help="seconds an offer stays valid after it is issued"
        + (" (default %(default)s)" if required else ""),
    )
    parser.add_argument(
        "--store",
        action="append",
        default=None,
        help="a store id it runs at (repeatable; with no --store and no --store-tag: every store)",
    )
    parser.add_argument(
        "--store-tag",
        action="append",
        default=None,
        help="runs at every store with this tag (repeatable), e.g. region-north",
    )
    parser.add_argument("--image-url", default=None, help="the offer's image (https)")
    parser.add_argument(
        "--deep-link", default=None, help="where the app opens, a URI with a scheme (myapp://...)"
    )
    parser.add_argument(
        "--code", default=None, help="one redemption code for every offer (or a pool: `codes add`)"
    )
    parser.add_argument(
        "--segments", default=None, help="comma-separated: new, regular, lapsed (none: everyone)"
    )
    parser.add_argument(
        "--min-visits", type=int, default=None, help="visits in the last year, at least"
    )
    parser.add_argument(
        "--max-visits", type=int, default=None, help="visits in the last year, at most"
    )
    clear = "" if required else " ('' removes it)"
    parser.add_argument(
        "--start", default=None, help="local start, YYYY-MM-DD or YYYY-MM-DDTHH:MM" + clear
    )
    parser.add_argument(
        "--end", default=None, help="local end (exclusive), YYYY-MM-DD or YYYY-MM-DDTHH:MM" + clear
    )
    parser.add_argument(
        "--days", default=None, help="weekdays it runs, mon,tue or 1,2" + (clear or " (all)")
    )
    parser.add_argument(
        "--hours",
        default=None,
        help="local hours it runs, 09:00-12:00,17:00-21:00 (end 24:00 for midnight)"
        + (clear or " (all day)"),
    )
    parser.add_argument(
        "--per-member-day", type=int, default=None, help="offers of it per member per local day"
    )
    parser.add_argument(
        "--per-member-week", type=int, default=None, help="offers of it per member in 7 days"
    )
    parser.add_argument(
        "--daily-budget",
        type=int,
        default=None,
        help="offers of it per local day at all its stores (split between their gateways)",
    )
    parser.add_argument(
        "--holdout-pct",
        type=float,
        default=None,
        help="percent of members held out as the control group (0..100)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `campaign ...` or `store ...`; 2 with one line naming the field for bad input."""
    command = f"cloud-bridge {args.command} {args.action}"
    try:
        return asyncio.run(_run(args))
    except InvalidCampaign as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2


def _split(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated option: None if not given; '' is no terms."""
    if value is None:
        return None
    return tuple(t.strip() for t in value.split(",") if t.strip())


async def _open(database: Path) -> SqliteLoyaltyRecords:
    from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords

    if not await asyncio.to_thread(database.is_file):
        raise RecordsError(
            f"{database}: no loyalty database there; check the path, or create one with "
            f"`cloud-bridge create-db {database}`"
        )
    return await SqliteLoyaltyRecords.open(database, "-")


async def _run(args: argparse.Namespace) -> int:
    if args.command == "store":
        return await _store(args)
    if args.action == "codes":
        return await _codes(args)
    if args.action == "history":
        return await _history(args)
    records = await _open(args.database)
    try:
        now_s = time.time()
        result: Campaign | None
        if args.action == "create":
            result = await records.create_campaign(_definition(args), now_s)
        elif args.action == "update":
            current = await records.campaign(args.id)
            schedule = None if current is None else current.definition.schedule
            # A schedule option is merged into the one read above: applied only to that revision.
            built_on = current.revision if current is not None and _schedule_given(args) else None
            result = await records.update_campaign(
                args.id, _change(args, schedule), now_s, if_revision=built_on
            )
        elif args.action in ("pause", "resume", "archive"):
            result = await records.set_campaign_status(args.id, args.action, now_s)
        elif args.action == "show":
            result = await records.campaign(args.id)
            if result is None:
                raise InvalidCampaign("id", f"no campaign {args.id!r} in {args.database}")
        else:
            campaigns = await records.campaign_list()
            result = None
    finally:
        await records.close()
    if result is None:
        if args.json:
            print(json.dumps([c.to_json() for c in campaigns], indent=2))
        elif not campaigns:
            print("no campaigns")
        for c in [] if args.json else campaigns:
            print(describe_campaign(c))
        return 0
    if getattr(args, "json", False):
        print(json.dumps(result.to_json(), indent=2))
    elif args.action == "show":
        for key, value in result.to_json().items():
            print(f"{key}: {_shown(key, value)}")
    else:
        done = {"create": "created", "update": "updated", "pause": "paused"}
        done |= {"resume": "resumed", "archive": "archived"}
        print(
            f"{describe_campaign(result)}: {done[args.action]} (revision {result.revision}); the "
            "stores' gateways get it at the next campaign sync"
        )
    return 0


def _schedule_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, name) is not None for name in _SCHEDULE_OPTIONS)


def _schedule(args: argparse.Namespace, base: CampaignSchedule | None) -> CampaignSchedule:
    """The schedule options over `base` (an update keeps what is not given; '' removes it)."""
    base = base or CampaignSchedule()
    return CampaignSchedule(
        start=base.start if args.start is None else (args.start or None),
        end=base.end if args.end is None else (args.end or None),
        days=base.days if args.days is None else parse_days(args.days),
        hours=base.hours if args.hours is None else parse_hours(args.hours),
    )


def _definition(args: argparse.Namespace) -> CampaignDefinition:
    return CampaignDefinition(
        id=args.id,
        title=args.title,
        body=args.body,
        tiers=_split(args.tiers) or (),
        cooldown_s=args.cooldown_s,
        priority=args.priority,
        validity_s=args.validity_s,
        promotion_type=args.promotion_type or None,
        interests=_split(args.interests) or (),
        stores=tuple(args.store or ()),
        image_url=args.image_url,
        deep_link=args.deep_link,
        code=args.code,
        store_tags=tuple(args.store_tag or ()),
        segments=_split(args.segments) or (),
        min_visits=args.min_visits,
        max_visits=args.max_visits,
        schedule=_schedule(args, None) if _schedule_given(args) else None,
        per_member_day=args.per_member_day,
        per_member_week=args.per_member_week,
        daily_budget=args.daily_budget,
        holdout_pct=0.0 if args.holdout_pct is None else args.holdout_pct,
    )


def _change(args: argparse.Namespace, schedule: CampaignSchedule | None) -> CampaignChange:
    if args.every_store and args.store:
        raise InvalidCampaign("stores", "give --store or --every-store, not both")
    cleared = {name.replace("-", "_") for name in args.clear}
    lists: dict[str, tuple[str, ...] | None] = {
        "store_tags": tuple(args.store_tag) if args.store_tag else None,
        "segments": _split(args.segments),
    }
    for name in ("store_tags", "segments"):
        if name in cleared:
            if lists[name] is not None:
                raise InvalidCampaign(name, "is both given and cleared; do one")
            lists[name] = ()
            cleared.discard(name)
    if "schedule" in cleared and _schedule_given(args):
        raise InvalidCampaign("schedule", "is both given and cleared; do one")
    return CampaignChange(
        title=args.title,
        body=args.body,
        tiers=_split(args.tiers),
        cooldown_s=args.cooldown_s,
        priority=args.priority,
        validity_s=args.validity_s,
        promotion_type=args.promotion_type,
        interests=_split(args.interests),
        stores=() if args.every_store else (tuple(args.store) if args.store else None),
        image_url=args.image_url,
        deep_link=args.deep_link,
        code=args.code,
        store_tags=lists["store_tags"],
        segments=lists["segments"],
        min_visits=args.min_visits,
        max_visits=args.max_visits,
        schedule=_schedule(args, schedule) if _schedule_given(args) else None,
        per_member_day=args.per_member_day,
        per_member_week=args.per_member_week,
        daily_budget=args.daily_budget,
        holdout_pct=args.holdout_pct,
        clear=frozenset(cleared),
    )


def describe_campaign(campaign: Campaign) -> str:
    """One line: id, status, where, title."""
    d = campaign.definition
    where = [*d.stores, *(f"tag {t}" for t in d.store_tags)]
    return f"campaign {d.id} ({campaign.status}, {', '.join(where) or 'every store'}): {d.title}"


def describe_revision(revision: CampaignRevision) -> str:
    """One line: `revision 3, 2026-12-06 11:20:05 UTC, update (api): title, body`."""
    when = datetime.fromtimestamp(revision.changed_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    what = ", ".join(revision.fields) or "nothing"
    return f"revision {revision.revision}, {when}, {revision.action} ({revision.source}): {what}"


async def _history(args: argparse.Namespace) -> int:
    records = await _open(args.database)
    try:
        found = await records.campaign_history(args.id)
    except UnknownCampaign as exc:
        raise InvalidCampaign("id", exc.problem) from None
    finally:
        await records.close()
    if args.json:
        print(json.dumps([r.to_json() for r in found], indent=2))
        return 0
    if not found:
        print(f"campaign {args.id}: no history (unchanged since before revisions were kept)")
    for revision in found:
        print(describe_revision(revision))
    return 0


def describe_schedule(schedule: dict[str, Any]) -> str:
    """A schedule's JSON as a person reads it: `from 2026-12-01 to 2027-01-01, mon,tue, ...`."""
    parts = []
    if schedule["start"] or schedule["end"]:
        parts.append(f"from {schedule['start'] or 'now'} to {schedule['end'] or 'no end'}")
    days = schedule["days"]
    parts.append(",".join(_WEEKDAYS[d - 1] for d in days) if days else "every day")
    hours = schedule["hours"]
    parts.append(",".join(f"{a}-{b}" for a, b in hours) if hours else "all day")
    return ", ".join(parts) + " (local time)"


def _shown(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "schedule":
        return describe_schedule(value)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _read_codes(path: str) -> tuple[list[str], list[int]]:
    """The codes in a file (one per line; blank and # lines skipped) and each one's line."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidCampaign("FILE", f"{path}: cannot be read ({exc})") from None
    codes, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            codes.append(line)
            lines.append(number)
    return codes, lines


async def _codes(args: argparse.Namespace) -> int:
    words = args.words
    adding = words[0] == "add"
    if (adding and len(words) != 4) or (not adding and len(words) != 2):
        raise InvalidCampaign("codes", "give `codes add DATABASE ID FILE` or `codes DATABASE ID`")
    database, campaign = Path(words[-3 if adding else 0]), words[-2 if adding else 1]
    codes, lines = _read_codes(words[3]) if adding else ([], [])
    records = await _open(database)
    try:
        if adding:
            try:
                counts = await records.add_campaign_codes(campaign, codes, time.time())
            except InvalidCampaign as exc:
                where = exc.field.removeprefix("codes[").removesuffix("]")
                if where.isdigit() and int(where) < len(lines):
                    raise InvalidCampaign(
                        f"{words[3]} line {lines[int(where)]}", f"{exc.problem}; nothing added"
                    ) from None
                raise
        else:
            counts = await records.campaign_code_counts(campaign)
    finally:
        await records.close()
    if args.json:
        print(json.dumps(counts.to_json(), indent=2))
    else:
        added = f"{len(codes)} codes added; " if adding else ""
        print(
            f"campaign {campaign}: {added}{counts.total} codes, {counts.given_out} given out, "
            f"{counts.free} free"
        )
    return 0


def describe_store(store: StoreFacts) -> str:
    tags = ", ".join(store.tags) or "no tags"
    return f"store {store.id} ({store.timezone}; {tags}; {store.gateways} gateways)"


async def _store(args: argparse.Namespace) -> int:
    records = await _open(args.database)
    try:
        if args.action == "list":
            stores = await records.store_list()
            if args.json:
                print(json.dumps([s.to_json() for s in stores], indent=2))
            for s in [] if args.json else stores:
                print(describe_store(s))
            return 0
        tags = () if args.no_tags else (tuple(args.tag) if args.tag else None)
        if args.timezone is None and tags is None:
            raise InvalidCampaign("store", "give --timezone, --tag or --no-tags")
        facts = await records.set_store(args.store, timezone=args.timezone, tags=tags)
    finally:
        await records.close()
    print(f"{describe_store(facts)}: set; its gateways get the change at the next campaign sync")
    return 0
