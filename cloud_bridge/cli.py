"""The `cloud-bridge` command: run the bridge, keys and gateways, a demo database, enrollment."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cloud_bridge import cli_campaigns, cli_deliveries, cli_pki, cli_redemptions, cli_report
from cloud_bridge.core.enrollment import DEFAULT_EXPONENT
from cloud_bridge.errors import BridgeError, RecordsError
from edge.errors import DatabaseFileError, EdgeError, StorageError
from edge.logredact import install_redaction

if TYPE_CHECKING:
    from cloud_bridge.adapters.data_key import DataKey
    from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment

_LOGGER = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloud-bridge", description="Threshold cloud bridge.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the bridge with a config file")
    run.add_argument("--config", type=Path, default=Path("/etc/threshold/bridge.toml"))
    seed = sub.add_parser("seed", help="create a seeded demo loyalty database")
    seed.add_argument("database", type=Path)
    seed.add_argument("--members", type=int, default=300)
    seed.add_argument("--seed", type=int, default=7)
    seed.add_argument("--chain", default="demo-chain")
    seed.add_argument("--store", action="append", default=None, help="store id (repeatable)")
    _add_data_key_option(seed)
    store = sub.add_parser("add-store", help="add a store (its gateways get the roster)")
    store.add_argument("database", type=Path)
    store.add_argument("store", help="store id, as in the gateways' [gateway] store")
    store.add_argument("--name", default="", help="a readable name")
    store.add_argument("--chain", default="demo-chain")
    _add_location_options(store)
    where = sub.add_parser(
        "set-store-location",
        help="set where a store is (for cloned-tag detection), or --clear it",
    )
    where.add_argument("database", type=Path)
    where.add_argument("store")
    where.add_argument("--clear", action="store_true", help="forget the store's location")
    where.add_argument("--chain", default="demo-chain")
    _add_location_options(where)
    clones = sub.add_parser(
        "clones",
        help="list open clone alerts (devices seen at two stores too far apart); revoke or dismiss",
        description="List the open clone alerts: devices seen at two stores too far apart for the "
        "time between. --revoke revokes the alert's device (as `cloud-bridge revoke` does: it "
        "leaves every gateway's roster at the next sync); --dismiss closes a false alarm.",
    )
    clones.add_argument("database", type=Path)
    clones.add_argument("--all", action="store_true", help="also revoked and dismissed alerts")
    clones.add_argument("--json", action="store_true", help="print the alerts as JSON")
    quarantine = sub.add_parser(
        "quarantine",
        help="list events kept out of the records (quarantined, or forged visit ends), newest first",
        description="List the events the bridge quarantined: their ts or detected_at were outside "
        "[bridge] event_max_future_s / event_max_age_s of the bridge's clock (a gateway's clock "
        "wrong, or forged), or they were visit ends that contradict themselves or their visit "
        "(reasons visit_end_*). They were acknowledged and are not counted as visits, ends or "
        "offers.",
    )
    quarantine.add_argument("database", type=Path)
    quarantine.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")
    quarantine.add_argument("--json", action="store_true", help="print them as JSON")
    act = clones.add_mutually_exclusive_group()
    act.add_argument("--revoke", type=int, metavar="ALERT_ID", help="revoke the alert's device")
    act.add_argument("--dismiss", type=int, metavar="ALERT_ID", help="dismiss the alert")
    _add_key_commands(sub)
    _add_enrollment_commands(sub)
    cli_campaigns.add_commands(sub)
    _add_database_commands(sub)
    cli_pki.add_commands(sub)
    cli_report.add_commands(sub)
    cli_deliveries.add_commands(sub)
    cli_redemptions.add_commands(sub)
    return parser


def _add_location_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lat", type=float, default=None, help="latitude, decimal degrees (-90..90, north +)"
    )
    parser.add_argument(
        "--lon", type=float, default=None, help="longitude, decimal degrees (-180..180, east +)"
    )


def _add_key_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The bridge's signing key and the registry of gateways it seals rosters to."""
    from cloud_bridge.config import BridgeSection

    keygen = sub.add_parser(
        "keygen",
        help="create the bridge's roster signing key (0600); prints its public key",
        description="Create the Ed25519 key that signs every roster bundle, mode 0600, and print "
        "its public key for every gateway's [identity] trusted_signers. An existing key is never "
        "replaced: its public key is printed again.",
    )
    keygen.add_argument(
        "--key",
        type=Path,
        default=Path(BridgeSection().signing_key_file),
        help="the key file ([bridge] signing_key_file; default %(default)s)",
    )
    add = sub.add_parser(
        "add-gateway",
        help="register a gateway's public key: it gets its store's roster, sealed to that key",
    )
    add.add_argument("database", type=Path)
    add.add_argument("store", help="store id, as in the gateway's [gateway] store")
    add.add_argument("gateway", help="gateway id, as in its [gateway] id")
    add.add_argument(
        "--public-key",
        required=True,
        help="the public key `edge-gateway provision` printed (base64 or hex)",
    )
    add.add_argument("--chain", default="demo-chain")
    add.add_argument(
        "--csr",
        type=Path,
        default=None,
        help="the CSR `edge-gateway provision` wrote: sign it with the CA (its CN must be "
        "chain/store/gateway)",
    )
    add.add_argument(
        "--ca-dir",
        type=Path,
        default=cli_pki.DEFAULT_CA_DIR,
        help="the CA made by `cloud-bridge ca init` (default %(default)s)",
    )
    add.add_argument(
        "--cert-out",
        type=Path,
        default=None,
        help="where to write the signed certificate (default: STORE-GATEWAY.crt here)",
    )
    remove = sub.add_parser(
        "remove-gateway",
        help="forget a gateway: no more rosters for it (and its retained one is cleared)",
    )
    remove.add_argument("database", type=Path)
    remove.add_argument("store")
    remove.add_argument("gateway")
    remove.add_argument("--chain", default="demo-chain")
    listing = sub.add_parser("gateways", help="list the registered gateways and their key ids")
    listing.add_argument("database", type=Path)
    listing.add_argument("--chain", default="demo-chain")


def _add_enrollment_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Enrollment from the command line: the same operations as the enrollment API."""
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database", type=Path, required=True, help="the bridge's loyalty database"
    )
    enroll = sub.add_parser(
        "enroll",
        parents=[database],
        help="enroll a device for a member; prints its identity key, once",
    )
    enroll.add_argument("member", help="member id (created if --tier is given and it is new)")
    enroll.add_argument("--kind", choices=("app", "tag"), required=True)
    enroll.add_argument("--tier", default=None, help="the tier of a new member")
    enroll.add_argument(
        "--exponent", type=int, default=DEFAULT_EXPONENT, help="EID rotation exponent, 0..15"
    )
    enroll.add_argument(
        "--consent",
        action="store_true",
        help="the member agreed to be recognised in stores (required: consent first)",
    )
    enroll.add_argument("--chain", default="demo-chain", help="chain id, for the offer topic")
    _add_data_key_option(enroll)
    revoke = sub.add_parser("revoke", parents=[database], help="revoke a device (erases its key)")
    revoke.add_argument("device")
    withdraw = sub.add_parser(
        "withdraw-consent",
        parents=[database],
        help="record a member's withdrawn consent and deactivate all their devices",
    )
    withdraw.add_argument("member")
    member = sub.add_parser(
        "member", parents=[database], help="print a member's status as JSON (no keys)"
    )
    member.add_argument("member")
    prefs = sub.add_parser(
        "preferences",
        parents=[database],
        help="show, set or forget a member's preferences (as PUT /v1/members/M/preferences)",
        description="A member's interests, promotion types and how many offers they want. `set` "
        "replaces them all: give every --interest and --promotion-type (none: no preference), "
        "and --per-day with --per-week, or --no-offers. Terms must be ones the bridge's "
        "[preferences] accepts; the member must have consented.",
    )
    prefs.add_argument("action", choices=("show", "set", "forget"))
    prefs.add_argument("member")
    prefs.add_argument(
        "--interest", action="append", default=[], help="an interest term (repeatable)"
    )
    prefs.add_argument(
        "--promotion-type", action="append", default=[], help="a promotion type (repeatable)"
    )
    prefs.add_argument("--per-day", type=int, default=None, help="most offers in any 24 h, 0..24")
    prefs.add_argument(
        "--per-week", type=int, default=None, help="most offers in any 7 days, 0..100"
    )
    prefs.add_argument(
        "--no-offers", action="store_true", help="no offers at all (visits still recorded)"
    )
    token = sub.add_parser(
        "api-token", help="create an enrollment API token; prints it once, stores its hash"
    )
    token.add_argument("--tokens-file", type=Path, required=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_redaction()  # no MAC address, EID or key in any log line (edge/logredact.py)
    try:
        if args.command == "seed":
            return asyncio.run(_seed(args))
        if args.command in ("enroll", "revoke", "withdraw-consent", "member", "preferences"):
            return asyncio.run(_enrollment(args))
        if args.command in ("add-store", "set-store-location"):
            return asyncio.run(_add_store(args))
        if args.command == "clones":
            return asyncio.run(_clones(args))
        if args.command in cli_campaigns.COMMANDS:
            return cli_campaigns.run(args)
        if args.command == "quarantine":
            return asyncio.run(_quarantine(args))
        if args.command == "keygen":
            return _keygen(args.key)
        if args.command in ("add-gateway", "remove-gateway", "gateways"):
            return asyncio.run(_gateways(args))
        if args.command == "api-token":
            return _api_token(args.tokens_file)
        if args.command == "create-db":
            return _create_db(args)
        if args.command == "data-key":
            return _create_data_key(args.key)
        if args.command in ("ca", "broker-config"):
            return cli_pki.run(args)
        if args.command == "report":
            return cli_report.run(args)
        if args.command == "deliveries":
            return cli_deliveries.run(args)
        if args.command == "redeem":
            return cli_redemptions.run(args)
        return _run(args.config)
    except (BridgeError, EdgeError) as exc:
        print(f"cloud-bridge: {exc}", file=sys.stderr)
        return 2


async def _add_store(args: argparse.Namespace) -> int:
    """`add-store` and `set-store-location`: a store and where it is."""
    from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
    from cloud_bridge.core.clones import LocationError, location_from
    from edge.core.broker_identity import IdentityError, check_store_id
    from edge.core.wire import WireError, check_id

    command = f"cloud-bridge {args.command}"
    try:
        check_id(args.store, "store")
        check_store_id(args.store)
        location = location_from(args.lat, args.lon)
    except (WireError, IdentityError) as exc:
        print(f"{command}: {exc.reason}", file=sys.stderr)
        return 2
    except LocationError as exc:
        option = "--lat" if exc.field == "latitude" else "--lon"
        print(f"{command}: {option}: {exc.field} {exc.problem}", file=sys.stderr)
        return 2
    setting = args.command == "set-store-location"
    if setting and (location is None) != args.clear:
        print(
            f"{command}: give --lat and --lon, or --clear to forget the location", file=sys.stderr
        )
        return 2
    if setting and not args.database.is_file():
        raise RecordsError(f"{args.database}: no loyalty database there; check the path")
    records = await SqliteLoyaltyRecords.open(args.database, args.chain)
    try:
        if setting:
            found = await records.set_store_location(args.store, location)
            existed = True
        else:
            found = True
            existed = not await records.add_store(
                args.store, args.name or f"Store {args.store}", location
            )
            if existed and location is not None:
                found = await records.set_store_location(args.store, location)
        location = await records.store_location(args.store)
    finally:
        await records.close()
    if not found:
        print(
            f"{command}: store {args.store!r} is not in {args.database}: add it first "
            f"(`cloud-bridge add-store {args.database} {args.store} --lat LAT --lon LON`)",
            file=sys.stderr,
        )
        return 2
    where = f"at {location.lat:.5f}, {location.lon:.5f}" if location else "location unknown"
    if setting:
        print(f"store {args.store}: {where}")
    else:
        print(f"store {args.store}: {'already there' if existed else 'added'}, {where}")
    return 0


async def _clones(args: argparse.Namespace) -> int:
    from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
    from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
    from cloud_bridge.services.clones import describe, dismiss_alert, revoke_for_alert

    if not args.database.is_file():
        raise RecordsError(f"{args.database}: no loyalty database there; check the path")
    records = await SqliteLoyaltyRecords.open(args.database, "-")
    try:
        if args.revoke is not None:
            enrollment = await SqliteEnrollment.open(args.database, "-")
            try:
                alert = await revoke_for_alert(records, enrollment, args.revoke, time.time())
            finally:
                await enrollment.close()
            print(f"{describe(alert)}: device revoked; it leaves every roster at the next sync")
            return 0
        if args.dismiss is not None:
            alert = await dismiss_alert(records, args.dismiss, time.time())
            print(f"{describe(alert)}: dismissed")
            return 0
        alerts = await records.clone_alerts(include_closed=args.all)
    finally:
        await records.close()
    if args.json:
        print(json.dumps([a.to_json() for a in alerts], indent=2))
    elif not alerts:
        print("no clone alerts" if args.all else "no open clone alerts")
    for alert in [] if args.json else alerts:
        print(describe(alert))
    return 0


async def _quarantine(args: argparse.Namespace) -> int:
    from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords

    if not args.database.is_file():
        raise RecordsError(f"{args.database}: no loyalty database there; check the path")
    records = await SqliteLoyaltyRecords.open(args.database, "-")
    try:
        total = await records.count("quarantine")
        held = await records.quarantined(max(1, args.limit))
    finally:
        await records.close()
    if args.json:
        print(json.dumps([q.to_json() for q in held], indent=2))
        return 0
    print(f"{total} quarantined event(s)" + (f", newest {len(held)}:" if held else ""))
    for q in held:
        print(
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(q.received_at))}Z {q.reason}: "
            f"{q.kind} {q.event_id} from {q.store}/{q.gateway}, ts {q.ts}, detected_at "
            f"{q.detected_at}"
        )
    return 0


def _keygen(path: Path) -> int:
    from edge.adapters.keystore import create_signing_key_file
    from edge.core.bundle import key_id, key_to_text, public_key_bytes

    key, created = create_signing_key_file(path)
    public = key_to_text(public_key_bytes(key))
    print(f"{path}: {'created (mode 0600)' if created else 'exists, kept'}")
    print(f"public key: {public}")
    print(f"key id:     {key_id(key)}")
    print("Put it in every gateway's config, then restart them:")
    print(f'  [identity]\n  trusted_signers = ["{public}"]')
    return 0


async def _gateways(args: argparse.Namespace) -> int:
    from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
    from edge.adapters.pki import PkiError
    from edge.core.broker_identity import IdentityError, check_store_id
    from edge.core.bundle import KeyFormatError, key_id, load_gateway_public_key
    from edge.core.wire import GatewayAddress, WireError, check_id

    public_key = b""
    try:
        if args.command != "gateways":
            check_id(args.store, "store")
            check_id(args.gateway, "gateway")
        if args.command == "add-gateway":
            check_store_id(args.store)
            public_key = load_gateway_public_key(args.public_key, "--public-key").public_bytes_raw()
    except (WireError, KeyFormatError, IdentityError) as exc:
        print(f"cloud-bridge {args.command}: {exc.reason}", file=sys.stderr)
        return 2
    if not args.database.is_file():
        raise RecordsError(f"{args.database}: no loyalty database there; check the path")
    cert_path = None
    if args.command == "add-gateway" and args.csr is not None:
        # Signed before the gateway is registered: a CSR for another gateway registers nothing.
        address = GatewayAddress(args.chain, args.store, args.gateway)
        out = args.cert_out or Path(f"{args.store}-{args.gateway}.crt")
        try:
            cert_path = cli_pki.sign_gateway_csr(args.csr, args.ca_dir, address, out)
        except PkiError as exc:
            print(f"cloud-bridge add-gateway: {exc.reason}", file=sys.stderr)
            return 2
    records = await SqliteLoyaltyRecords.open(args.database, args.chain)
    try:
        if args.command == "add-gateway":
            outcome = await records.add_gateway(args.store, args.gateway, public_key, time.time())
            print(f"gateway {args.store}/{args.gateway}: {outcome} (key id {key_id(public_key)})")
            if outcome != "unchanged":
                print("The running bridge sends it a full roster within [bridge] sync_interval_s.")
            if cert_path is not None:
                print(
                    f"{cert_path}: its broker certificate. On the gateway: edge-gateway "
                    f"install-cert {cert_path.name} --ca {args.ca_dir / 'ca.crt'}"
                )
        elif args.command == "remove-gateway":
            removed = await records.remove_gateway(args.store, args.gateway)
            print(f"gateway {args.store}/{args.gateway}: {'removed' if removed else 'not there'}")
        else:
            for gateway in await records.gateways():
                print(f"{gateway.store}\t{gateway.gateway}\t{key_id(gateway.public_key)}")
    finally:
        await records.close()
    return 0


async def _seed(args: argparse.Namespace) -> int:
    from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
    from cloud_bridge.seed import seed_records

    # A demo database: seeding creates it, as create-db would.
    records = await SqliteLoyaltyRecords.open(
        args.database, args.chain, create=True, data_key=_data_key(args, create=True)
    )
    try:
        added = await seed_records(
            records,
            members=args.members,
            seed=args.seed,
            stores=tuple(args.store or ["store-001"]),
            joined_at=time.time(),
        )
    finally:
        await records.close()
    print(
        f"{args.database}: {added} members added" if added else f"{args.database}: already seeded"
    )
    return 0


async def _enrollment(args: argparse.Namespace) -> int:
    from cloud_bridge.adapters.sqlite_enrollment import SqliteEnrollment
    from cloud_bridge.core.enrollment import EnrollRequest

    request: EnrollRequest | None = None
    if args.command == "enroll":
        if not args.consent:
            print(
                "cloud-bridge: enroll: --consent is required: enroll a device only after the "
                "member agreed to be recognised in stores",
                file=sys.stderr,
            )
            return 2
        request = EnrollRequest(args.member, args.kind, args.tier, args.exponent)
    if not args.database.is_file():
        raise RecordsError(
            f"{args.database}: no loyalty database there; check --database, or create one with "
            f"`cloud-bridge create-db {args.database}`"
        )
    enrollment = await SqliteEnrollment.open(
        args.database,
        getattr(args, "chain", "-"),
        data_key=_data_key(args) if request is not None else None,
    )
    try:
        result: dict[str, object]
        if request is not None:
            result = (await enrollment.enroll(request)).to_json()
        elif args.command == "revoke":
            result = (await enrollment.revoke(args.device)).to_json()
        elif args.command == "withdraw-consent":
            result = (await enrollment.withdraw_consent(args.member)).to_json()
        elif args.command == "preferences":
            result = await _preferences(enrollment, args)
        else:
            result = (await enrollment.member_status(args.member)).to_json()
    finally:
        await enrollment.close()
    print(json.dumps(result, indent=2))
    return 0


async def _preferences(enrollment: SqliteEnrollment, args: argparse.Namespace) -> dict[str, object]:
    """`preferences show | set | forget`: the same JSON as the API's GET, PUT and DELETE."""
    from cloud_bridge.core.preferences import not_stated, parse_preferences_request

    if args.action == "set":
        body: dict[str, object] = {
            "interests": args.interest,
            "promotion_types": args.promotion_type,
        }
        if args.no_offers:
            body["no_offers"] = True
        for name, value in (
            ("max_offers_per_day", args.per_day),
            ("max_offers_per_week", args.per_week),
        ):
            if value is not None:
                body[name] = value
        request = parse_preferences_request(args.member, body)
        return (await enrollment.set_preferences(request)).to_json()
    if args.action == "forget":
        forgotten = await enrollment.forget_preferences(args.member)
        return {**not_stated(args.member), "forgotten": forgotten}
    stated = await enrollment.preferences(args.member)
    return not_stated(args.member) if stated is None else stated.to_json()


def _api_token(tokens_file: Path) -> int:
    from cloud_bridge.adapters.http_api import add_token_hash, new_api_token, token_hash

    token = new_api_token()
    try:
        add_token_hash(tokens_file, token_hash(token))
    except OSError as exc:
        print(f"cloud-bridge: {tokens_file}: cannot add the token: {exc.strerror}", file=sys.stderr)
        return 2
    print(token)
    print(
        f"{tokens_file}: token hash added. The token is shown only now: store it in the app "
        "backend's secrets; delete its hash line from the file to revoke it.",
        file=sys.stderr,
    )
    return 0


def _run(config_path: Path) -> int:
    """`run`: the exit code says why it stopped (edge/process.py, README "Exit codes")."""
    from cloud_bridge.app import run_bridge
    from cloud_bridge.config import load_bridge_config
    from edge.process import ExitCode, classify

    config = load_bridge_config(config_path)  # a bad file stops here: exit 2, nothing started
    umask = os.umask(0o077)  # every file and directory the bridge creates is its own (0600, 0700)
    try:
        failure = asyncio.run(run_bridge(config))
    except Exception as exc:  # before the loops ran: signing key, database, tokens file
        failure = classify("start", exc, runtime=(BridgeError,))
        if failure.code is ExitCode.INTERNAL:
            _LOGGER.exception("the bridge failed to start")
        elif isinstance(exc, (BridgeError, EdgeError)):
            # At start, a person must act (a file, a key, a certificate): not restarted. Only an
            # I/O failure of a database that is there and looks right may pass: restarted.
            cause = exc if isinstance(exc, StorageError) else exc.__cause__
            passing = isinstance(cause, StorageError) and not isinstance(cause, DatabaseFileError)
            code = ExitCode.STORAGE if passing else ExitCode.CONFIG
            failure = dataclasses.replace(failure, code=code)
    finally:
        os.umask(umask)
    if failure is None:
        return ExitCode.OK
    print(f"cloud-bridge: {failure.reason}", file=sys.stderr)
    return failure.code


def _add_database_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Creating the loyalty database (the only command that may: the bridge refuses a missing one)
    and its data key."""
    create = sub.add_parser(
        "create-db",
        help="create an empty loyalty database and its data key (the bridge never creates them)",
        description="Create the loyalty database (mode 0600, directory 0700) and the data key that "
        "seals its identity keys (0600; unless $THRESHOLD_DATA_KEY is set). The bridge refuses to "
        "start on a missing database rather than create an empty one and acknowledge the "
        "gateways' backlog into it. An existing database or key is checked and kept, never "
        "replaced.",
    )
    create.add_argument("database", type=Path, help="the file ([bridge] database)")
    _add_data_key_option(create)
    key = sub.add_parser(
        "data-key",
        help="create the data key file (0600) that seals identity keys in the database",
        description="Create the data key ([bridge] data_key_file), mode 0600, for a database made "
        "before identity keys were sealed: the bridge seals them with it at its next start. An "
        "existing key is never replaced (the sealed keys would be lost).",
    )
    key.add_argument("--key", type=Path, required=True, help="the key file to create")


def _add_data_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-key-file",
        type=Path,
        default=None,
        help="the data key ([bridge] data_key_file; default: bridge-data.key beside the database; "
        "$THRESHOLD_DATA_KEY wins when set)",
    )


def _data_key(args: argparse.Namespace, create: bool = False) -> DataKey:
    """The data key for a command that seals or opens identity keys (created if `create`)."""
    from cloud_bridge.adapters.data_key import (
        DATA_KEY_ENV,
        create_data_key_file,
        default_data_key_file,
        load_data_key,
    )

    path = args.data_key_file or default_data_key_file(args.database)
    if create and DATA_KEY_ENV not in os.environ:
        return create_data_key_file(path)[0]
    return load_data_key(path)


def _create_db(args: argparse.Namespace) -> int:
    from cloud_bridge.adapters.data_key import (
        DATA_KEY_ENV,
        create_data_key_file,
        default_data_key_file,
        load_data_key,
    )

    path: Path = args.database
    # An empty file (e.g. made by an installer's `touch`) holds nothing to keep: made a database.
    existed = path.exists() and not (path.is_file() and path.stat().st_size == 0)
    if not existed:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path = args.data_key_file or default_data_key_file(path)
    if DATA_KEY_ENV in os.environ:
        data_key, key_note = load_data_key(key_path), f"data key from ${DATA_KEY_ENV}"
    else:
        data_key, created = create_data_key_file(key_path)
        key_note = f"data key {key_path}: {'created (mode 0600)' if created else 'exists, kept'}"
    if not existed:
        # 0600 before SQLite writes a byte: the members are in it.
        path.touch(mode=0o600)
        path.chmod(0o600)
    asyncio.run(_open_new_db(path, existed, data_key))
    print(f"{path}: {'exists, checked and kept' if existed else 'created (mode 0600)'}")
    print(key_note)
    return 0


async def _open_new_db(path: Path, existed: bool, data_key: DataKey) -> None:
    from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords

    records = await SqliteLoyaltyRecords.open(path, "-", create=not existed, data_key=data_key)
    await records.close()


def _create_data_key(path: Path) -> int:
    from cloud_bridge.adapters.data_key import create_data_key_file

    _, created = create_data_key_file(path)
    print(f"{path}: {'created (mode 0600)' if created else 'exists, kept'}")
    return 0


def entry() -> None:
    """The console script: `main()`, then an exit that no lingering thread can hold up."""
    from edge.process import exit_for_good

    exit_for_good(main())
