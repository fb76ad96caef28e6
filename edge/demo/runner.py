"""The demo: a private Mosquitto, the bridge with a seeded loyalty database and its enrollment API, one
gateway on a simulated store entrance (about half the app users on iPhones, checking in), and the
shoppers' apps stating their preferences. Prints a live view, then a summary checked against ground
truth.

Set up as an installer would: the bridge's signing key (`cloud-bridge keygen`), the gateway provisioned
(`edge-gateway provision`, keys sealed at rest) and registered (`cloud-bridge add-gateway`), and a
gateway config file naming the bridge's public key, all in the work directory. The enrollment API
serves HTTPS with a certificate from the demo's CA and one API token.

Then as the retailer runs it (issue 11): a marketer sets the store's time zone and the campaigns
through that API (edge/demo/marketer.py); offers to iPhones go by webhook to the retailer's push
service (a local receiver the demo starts, edge/demo/push_service.py), the others over MQTT; the
apps report what the shoppers did with them; tills report the codes redeemed (edge/demo/till.py);
and the run ends with the HTML report the marketer reads, in the work directory.

Shoppers walk in for `minutes`; the simulation then runs on for `tail_minutes` with passers-by only,
so the shoppers inside leave and their visits end (the gateway's visit timeout is 5 minutes of radio
time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_bridge.adapters.data_key import DATA_KEY_FILE_NAME, create_data_key_file
from cloud_bridge.adapters.http_api import add_token_hash, new_api_token, token_hash
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.app import Bridge
from cloud_bridge.cli_report import write_html_report
from cloud_bridge.config import (
    CHANNELS,
    ApiSection,
    BridgeConfig,
    BridgeSection,
    ByPlatformSection,
    DeliverySection,
    WebhookSection,
)
from cloud_bridge.core.admission import DEFAULT_MAX_AGE_S as _DEFAULT_AGE_S
from cloud_bridge.core.admission import DEFAULT_MAX_FUTURE_S as _DEFAULT_FUTURE_S
from cloud_bridge.core.holdout import in_holdout
from cloud_bridge.core.pseudonyms import Kind
from cloud_bridge.core.records import RecordOutcome
from cloud_bridge.errors import BridgeError
from cloud_bridge.seed import seed_preferences, seed_records
from edge.adapters.keystore import create_signing_key_file, provision_gateway_keys
from edge.adapters.mosquitto import MosquittoProcess
from edge.adapters.pki import LocalPki, TlsFiles, install_gateway_certificate, make_gateway_csr
from edge.adapters.simulated_checkin import SimulatedCheckinService
from edge.adapters.simulated_radio import SimulatedAdvertSource
from edge.app import Gateway
from edge.config import IdentitySection, load_config
from edge.core import bundle, wire
from edge.core.broker_identity import bridge_identity, gateway_identity, shopper_identity
from edge.core.wire import PLATFORMS, GatewayAddress
from edge.demo import intruders
from edge.demo.api_client import EnrollmentApiClient
from edge.demo.marketer import set_up_campaigns
from edge.demo.preferences import StatedPreferences
from edge.demo.push_service import DemoPushService, write_secret_file
from edge.demo.shopper_apps import ReceivedOffer, ShopperApps
from edge.demo.stats import percentile
from edge.demo.till import Redemption, Till, redeems
from edge.errors import EdgeError
from edge.services.tasks import cancel_and_wait
from edge.sim.entrance import EntranceConfig, GroundTruth, SimDevice, StoreEntrance

_LOGGER = logging.getLogger(__name__)

CHAIN = "demo-chain"
STORE = "store-001"
GATEWAY = "door-1"
DRAIN_TIMEOUT_S = 20.0
# The demo seals the gateway's keys with a key file in its work directory, wherever it runs.
DEMO_KEY_SOURCE = "file"
#: How long the gateway may take to receive the members' preferences (wall seconds).
PREFERENCES_SYNC_TIMEOUT_S = 30.0
#: The bridge looks for roster changes this often (wall s): preferences reach the gateway quickly.
DEMO_SYNC_INTERVAL_S = 1.0
#: iPhone users must be recognised at least this share of the rate of Android users (issue 10).
IOS_RECOGNITION_TARGET = 0.9
#: The median time in store the gateway measures must be within this share of the truth's.
TIME_IN_STORE_TOLERANCE = 0.1
#: How long the gateway may take to receive the marketer's campaigns (wall seconds).
CAMPAIGNS_SYNC_TIMEOUT_S = 30.0
#: The marketer's HTML report, in the work directory.
REPORT_FILE_NAME = "report.html"


class DemoError(EdgeError):
    """The demo could not set up what it measures (an API missing, preferences not synced)."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    minutes: float = 8.0  # shoppers walk in during these simulated minutes
    speed: float = 30.0
    seed: int = 7
    members: int = 300
    # A busy store: enough shoppers for per-platform rates to mean something (about 35 members
    # walk in with an iPhone, as many with an Android phone).
    arrivals_per_min: float = 25.0
    passers_per_min: float = 14.0
    live: bool = True
    workdir: Path | None = None
    start_unix_s: float | None = None  # when the simulation starts (default: now)
    # Then only passers-by, so the shoppers inside leave and their visits end (timeout 5 min).
    tail_minutes: float = 14.0
    ios_share: float = 0.5  # of app users: iPhones, which check in instead of advertising
    report_path: Path | None = None  # the HTML report (default: report.html in the workdir)

    @property
    def sim_minutes(self) -> float:
        """The whole simulated run."""
        return self.minutes + self.tail_minutes


def duration_text(seconds: float) -> str:
    """'4 min 05 s' (or '42 s')."""
    whole = max(0, round(seconds))
    return f"{whole // 60} min {whole % 60:02d} s" if whole >= 60 else f"{whole} s"


class LiveView:
    """A readable running commentary: entries (and how the member was heard), offers, exits with the
    time in store, people walking past, a heartbeat line."""

    def __init__(
        self,
        out: TextIO,
        start_s: float,
        enabled: bool,
        radio_now: Callable[[], float] | None = None,
    ) -> None:
        self._out = out
        self._start_s = start_s
        self._enabled = enabled
        self._radio_now = radio_now
        color = enabled and out.isatty()
        self._bold = "\033[1m" if color else ""
        self._green = "\033[32m" if color else ""
        self._dim = "\033[2m" if color else ""
        self._reset = "\033[0m" if color else ""

    def clock(self, t_s: float) -> str:
        elapsed = max(0, int(t_s - self._start_s))
        return f"{elapsed // 3600:02d}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"

    def line(self, t_s: float, tag: str, text: str, style: str = "") -> None:
        if self._enabled:
            print(f"  {self.clock(t_s)}  {style}{tag:<10}{self._reset} {text}", file=self._out)

    def events(self, events: Sequence[wire.Event]) -> None:
        for event in events:
            if isinstance(event, wire.Visit):
                self.line(
                    event.ts,
                    "ENTRY",
                    f"member {event.member[:8]}…  {event.tier:<6}  {event.platform or '?':<7}  "
                    f"device {event.device[:8]}…  {event.rssi_dbm:.0f} dBm",
                    self._bold,
                )
            elif isinstance(event, wire.VisitEnd):
                # Reported once the member has not been heard for the visit timeout: the line
                # comes at that time and says when they left.
                self.line(
                    event.ts if self._radio_now is None else self._radio_now(),
                    "EXIT",
                    f"member {event.member[:8]}…  {event.platform or '?':<7}  "
                    f"in store {duration_text(event.duration_s)}, left at {self.clock(event.ts)}"
                    + ("" if event.reason == "timeout" else f" ({event.reason})"),
                )
            elif isinstance(event, wire.OfferTrigger):
                self.line(
                    event.ts, "OFFER", f"member {event.member[:8]}…  campaign {event.campaign}"
                )

    def offer_received(self, received: ReceivedOffer, radio_now: float) -> None:
        pushed = received.channel == "webhook"
        code = f"  code {received.offer.code}" if received.offer.code else ""
        self.line(
            radio_now,
            "  ➜ PUSH" if pushed else "  ➜ PHONE",
            f'shopper {received.shopper[:8]}…  "{received.offer.title}"{code}  '
            + ("via the push service " if pushed else "")
            + f"({received.latency_ms:.0f} ms after the deciding advert)",
            self._green,
        )

    def held_out(self, t_s: float, trigger: wire.OfferTrigger) -> None:
        self.line(
            t_s,
            "HOLDOUT",
            f"member {trigger.member[:8]}…  campaign {trigger.campaign}: control group, "
            "recorded, not sent",
            self._dim,
        )

    def redeemed(self, t_s: float, redemption: Redemption) -> None:
        self.line(
            t_s,
            "REDEEMED",
            f"shopper {redemption.shopper[:8]}…  code {redemption.offer.code} at the till "
            f"({redemption.offer.campaign})",
            self._bold,
        )

    def passer(self, t_s: float, member: str, platform: str | None = None) -> None:
        carrying = f" ({platform})" if platform else ""
        self.line(
            t_s,
            "WALKS BY",
            f"member {member}{carrying} passed the door outside: not an entry",
            self._dim,
        )

    def heartbeat(self, t_s: float, text: str) -> None:
        self.line(t_s, "·", text, self._dim)


async def load_enrolled_devices(records: SqliteLoyaltyRecords) -> list[SimDevice]:
    """The enrolled devices as their apps and tags hold them (the demo's shoppers carry these)."""
    db = records.connection
    devices: list[SimDevice] = []
    async with db.execute(
        "SELECT id, member_id, identity_key, exponent, kind, sealed_key FROM devices ORDER BY id"
    ) as cursor:
        rows = [r async for r in cursor]
    for ref, member, key, exponent, kind, sealed in rows:
        key = records.open_identity_key(ref, bytes(key), None if sealed is None else bytes(sealed))
        devices.append(SimDevice(ref, member, key, exponent, kind))
    return devices


async def shopper_tokens(records: SqliteLoyaltyRecords) -> list[str]:
    """Every member's offer delivery token: one simulated app (and certificate) each."""
    return list((await member_tokens(records)).values())


async def member_tokens(records: SqliteLoyaltyRecords) -> dict[str, str]:
    """Every member's offer delivery token, by member id (in member order)."""
    async with records.connection.execute(
        "SELECT id, shopper_token FROM members ORDER BY id"
    ) as cursor:
        return {str(row[0]): str(row[1]) async for row in cursor}


def demo_entrance(
    options: DemoOptions, devices: Sequence[SimDevice], start_unix_s: float
) -> StoreEntrance:
    """The simulated entrance the demo's gateway hears; the same options give the same adverts."""
    return StoreEntrance(
        EntranceConfig(
            seed=options.seed,
            start_unix_s=start_unix_s,
            duration_s=options.sim_minutes * 60.0,
            arrivals_s=options.minutes * 60.0,
            arrivals_per_min=options.arrivals_per_min,
            passers_per_min=options.passers_per_min,
            ios_share=options.ios_share,
        ),
        devices,
    )


def summarise(
    truth: GroundTruth,
    visitors: Sequence[str | None],
    triggers: Sequence[wire.OfferTrigger],
    received: Sequence[ReceivedOffer],
    extra: dict[str, Any],
    visit_ends: Sequence[tuple[str | None, float]] = (),
) -> dict[str, Any]:
    """The demo's outcome, scored against what the simulated people really did.

    `visitors`: the member behind each visit, as the bridge maps the store's pseudonym back (None: a
    pseudonym the bridge never gave out). `visit_ends`: the member and time in store (s) of each
    visit end the gateway reported. The time in store is compared with the truth's for the same
    members (door in to door out).
    """
    present = {p.device.member for p in truth.people if p.device is not None}
    entered = truth.entered_members()
    passing = truth.passing_members()
    recognised = {v for v in visitors if v is not None}
    latencies = [r.latency_ms for r in received]
    p50 = percentile(latencies, 50)
    p99 = percentile(latencies, 99)
    by_platform = {}
    for platform in PLATFORMS:
        walked_in = truth.entered_members(platform=platform)
        by_platform[platform] = {
            "entered": len(walked_in),
            "recognised": len(walked_in & recognised),
        }
    stays = truth.stays_s()
    durations = [d for _, d in visit_ends]
    true_durations = [stays[m] for m, _ in visit_ends if m is not None and m in stays]
    return {
        "entered": len(visitors),
        "members_recognised": len(recognised & entered),
        "members_really_entered": len(entered),
        "by_platform": by_platform,
        "non_members_recognised": sum(1 for v in visitors if v is None or v not in present),
        "passers_by_entered": sum(1 for v in visitors if v in passing),
        "members_walked_past": len(passing),
        "offers_triggered": len(triggers),
        "offers_delivered": len(received),
        "latency_ms_p50": round(p50, 2) if p50 is not None else None,
        "latency_ms_p99": round(p99, 2) if p99 is not None else None,
        "visits_ended": len(visit_ends),
        "time_in_store_s_p50": round(statistics.median(durations), 1) if durations else None,
        "time_in_store_s_p50_truth": (
            round(statistics.median(true_durations), 1) if true_durations else None
        ),
        **extra,
    }


def failures(summary: dict[str, Any]) -> list[str]:
    """What a healthy run must show; empty when the demo worked."""
    problems = []
    if summary["members_recognised"] <= 0:
        problems.append("no member who walked in was recognised")
    if summary["offers_delivered"] <= 0:
        problems.append("no offer reached a shopper's app")
    if summary["non_members_recognised"]:
        problems.append(f"{summary['non_members_recognised']} non-members were recognised")
    if summary["passers_by_entered"]:
        problems.append(f"{summary['passers_by_entered']} passers-by were counted as entering")
    if summary.get("intruders_admitted"):
        problems.append(f"the broker let {summary['intruders_admitted']} intruder(s) in")
    # Offers to members in a campaign's holdout are recorded, never sent.
    expected = summary["offers_triggered"] - summary["offers_holdout"]
    if summary["offers_delivered"] < expected:
        problems.append(f"{expected - summary['offers_delivered']} offers did not arrive")
    for channel in CHANNELS:
        if summary["offers_by_channel"].get(channel, 0) <= 0:
            problems.append(f"no offer was delivered over {channel}")
    if summary["offers_holdout_received"]:
        problems.append(
            f"{summary['offers_holdout_received']} offers reached members in their campaign's "
            "holdout"
        )
    if summary["webhook_offers_not_pushed_once"]:
        problems.append(
            f"{summary['webhook_offers_not_pushed_once']} webhook offers did not reach the app "
            "exactly once through the push service"
        )
    if summary["webhook_refused"]:
        problems.append(f"the push service refused requests: {summary['webhook_refused']}")
    reported, recorded = summary["receipts_reported_by_apps"], summary["receipts"]
    for status in ("opened", "dismissed"):
        if recorded[status] < reported[status]:
            problems.append(
                f"{reported[status] - recorded[status]} '{status}' receipts the apps sent were "
                "not recorded"
            )
    if summary["redemptions"] <= 0:
        problems.append("no code was redeemed at the till")
    if summary["redemptions_refused"]:
        problems.append(f"the bridge refused redemptions: {summary['redemptions_refused']}")
    if summary["report_html_bytes"] <= 0:
        problems.append("the HTML report was not written")
    ios, android = summary["by_platform"]["ios"], summary["by_platform"]["android"]
    if ios["entered"] and android["entered"]:
        ios_rate = ios["recognised"] / ios["entered"]
        android_rate = android["recognised"] / android["entered"]
        if ios_rate < IOS_RECOGNITION_TARGET * android_rate:
            problems.append(
                f"iPhone users recognised at {ios_rate:.0%}, under {IOS_RECOGNITION_TARGET:.0%} "
                f"of Android users' {android_rate:.0%}"
            )
    if summary["offers_against_preferences"]:
        problems.append(
            f"{summary['offers_against_preferences']} offers went against what the shopper asked for"
        )
    if summary["offers_over_frequency_cap"]:
        problems.append(
            f"{summary['offers_over_frequency_cap']} offers came more often than the shopper wanted"
        )
    if summary["visits_ended"] <= 0:
        problems.append("no visit ended")
    else:
        measured, truth = summary["time_in_store_s_p50"], summary["time_in_store_s_p50_truth"]
        if truth is None:
            problems.append("no ended visit belongs to a shopper of the simulation")
        elif abs(measured - truth) > TIME_IN_STORE_TOLERANCE * truth:
            problems.append(
                f"median time in store {measured:.0f} s, more than "
                f"{TIME_IN_STORE_TOLERANCE:.0%} off the truth's {truth:.0f} s"
            )
    return problems


@dataclass(frozen=True, slots=True)
class BridgeFigures:
    """What the bridge's records say happened to the offers (read from its database)."""

    offers_by_channel: dict[str, int]  # offers the channel delivered (sent or received)
    webhook_offers: frozenset[str]  # their ids, for the webhook channel
    holdout_offers: frozenset[str]
    unsettled: int  # offers still pending, or sent without the app's receipt
    opened: int
    dismissed: int
    redemptions: int
    offers_by_campaign: dict[str, int]  # every offer decided, holdout included
    holdout_pct: dict[str, float]  # campaigns with a holdout


def read_bridge_figures(database: Path) -> BridgeFigures:
    """The offers' outcome from the loyalty database (read-only; the bridge may be writing)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        delivered = db.execute(
            "SELECT event_id, channel FROM offers WHERE delivery IN ('sent', 'received')"
        ).fetchall()
        by_channel = {channel: 0 for channel in CHANNELS}
        for _, channel in delivered:
            by_channel[channel] = by_channel.get(channel, 0) + 1
        holdout = db.execute("SELECT event_id FROM offers WHERE delivery = 'holdout'").fetchall()
        (unsettled,) = db.execute(
            "SELECT count(*) FROM offers WHERE delivery IN ('pending', 'sent')"
        ).fetchone()
        opened, dismissed = db.execute(
            "SELECT count(opened_at), count(dismissed_at) FROM offers"
        ).fetchone()
        (redemptions,) = db.execute("SELECT count(*) FROM redemptions").fetchone()
        by_campaign = dict(
            db.execute(
                "SELECT campaign_id, count(*) FROM offers GROUP BY campaign_id ORDER BY campaign_id"
            ).fetchall()
        )
        pct = dict(db.execute("SELECT id, holdout_pct FROM campaigns WHERE holdout_pct > 0"))
    return BridgeFigures(
        by_channel,
        frozenset(offer for offer, channel in delivered if channel == "webhook"),
        frozenset(offer for (offer,) in holdout),
        int(unsettled),
        int(opened),
        int(dismissed),
        int(redemptions),
        {str(k): int(v) for k, v in by_campaign.items()},
        {str(k): float(v) for k, v in pct.items()},
    )


def delivery_summary(
    figures: BridgeFigures,
    received: Sequence[ReceivedOffer],
    member_of_token: Mapping[str, str],
    pushed: Mapping[str, int],
    push_duplicates: int,
) -> dict[str, Any]:
    """The summary's issue 11 part: channels, holdout, the push service, receipts, redemptions.

    `pushed`: how many times the push service handed each offer to a phone; `push_duplicates`:
    pushed offers a phone got again. A received offer counts against the holdout when its member
    is in its campaign's holdout (cloud_bridge.core.holdout, on the member id) or the bridge
    recorded it as held out.
    """
    against_holdout = sum(
        1
        for r in received
        if r.offer.offer_id in figures.holdout_offers
        or in_holdout(
            r.offer.campaign,
            member_of_token.get(r.shopper, ""),
            figures.holdout_pct.get(r.offer.campaign, 0.0),
        )
    )
    not_once = (
        len(figures.webhook_offers ^ pushed.keys())
        + sum(n - 1 for n in pushed.values() if n > 1)
        + push_duplicates
    )
    return {
        "offers_by_channel": dict(figures.offers_by_channel),
        "offers_by_campaign": dict(figures.offers_by_campaign),
        "offers_holdout": len(figures.holdout_offers),
        "offers_holdout_received": against_holdout,
        "webhook_offers_pushed": len(pushed),
        "webhook_offers_not_pushed_once": not_once,
        "receipts": {"opened": figures.opened, "dismissed": figures.dismissed},
        "redemptions": figures.redemptions,
    }


async def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Run the whole demo and return its summary."""
    with contextlib.ExitStack() as stack:
        if options.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="threshold-")))
        else:
            workdir = options.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        # TLS with the generated ACL, as in production: a certificate per identity from a CA
        # made for the run (edge/adapters/pki.py).
        broker = MosquittoProcess(workdir / "broker", pki=LocalPki(workdir / "pki", CHAIN))
        await asyncio.to_thread(broker.start)
        stack.callback(broker.stop)
        # The retailer's push service, sharing the webhook secret with the bridge (a 0600 file,
        # as `umask 077; openssl rand -hex 32` makes it); it hands offers to the apps.
        secret_file = workdir / "webhook-secret"
        secret = await asyncio.to_thread(write_secret_file, secret_file)
        push_service = await DemoPushService(secret).start()
        try:
            return await _run(options, workdir, broker, push_service, secret_file, out)
        finally:
            await push_service.close()
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow


async def _run(
    options: DemoOptions,
    workdir: Path,
    broker: MosquittoProcess,
    push_service: DemoPushService,
    secret_file: Path,
    out: TextIO,
) -> dict[str, Any]:
    wall_start = time.monotonic()
    # As `cloud-bridge create-db` would: the database and the data key sealing its identity keys.
    data_key, _ = await asyncio.to_thread(create_data_key_file, workdir / DATA_KEY_FILE_NAME)
    records = await SqliteLoyaltyRecords.open(
        workdir / "loyalty.sqlite", CHAIN, create=True, data_key=data_key
    )
    sim_start = time.time() if options.start_unix_s is None else options.start_unix_s
    await seed_records(
        records, members=options.members, seed=options.seed, stores=(STORE,), joined_at=sim_start
    )
    devices = await load_enrolled_devices(records)
    member_of = await unmasker(records, STORE)
    tokens = await member_tokens(records)
    member_of_token = {token: member for member, token in tokens.items()}
    stated = {
        member: StatedPreferences.from_json(member, body)
        for member, body in seed_preferences(tokens, options.seed).items()
    }
    # As `cloud-bridge api-token` and `cloud-bridge ca server-cert` would: the app backend's token
    # and the API's HTTPS certificate.
    api_token, api_files = await asyncio.to_thread(api_credentials, workdir, broker.pki)
    signing_key_file = workdir / "bridge-signing.key"
    signing_key, _ = await asyncio.to_thread(create_signing_key_file, signing_key_file)
    try:
        # The bridge reads the webhook secret from its file, as in production.
        bridge = Bridge(
            BridgeConfig(
                BridgeSection(
                    chain=CHAIN,
                    database=str(records.path),
                    offer_resend_s=5.0,
                    signing_key_file=str(signing_key_file),
                    # Simulated time runs `speed` times faster than the bridge's clock, from sim_start:
                    # the whole simulation is inside the bridge's tolerance, nothing is quarantined.
                    event_max_future_s=_DEFAULT_FUTURE_S
                    + options.sim_minutes * 60
                    + max(0.0, sim_start - time.time()),
                    event_max_age_s=max(_DEFAULT_AGE_S, time.time() - sim_start + 86400),
                    data_key_file=str(workdir / DATA_KEY_FILE_NAME),
                    sync_interval_s=DEMO_SYNC_INTERVAL_S,
                ),
                broker.mqtt_section(bridge_identity(CHAIN, BridgeSection().id)),
                ApiSection(
                    enabled=True,
                    host="127.0.0.1",
                    port=0,
                    tokens_file=str(workdir / "api-tokens"),
                    tls_cert_file=str(api_files.cert_file),
                    tls_key_file=str(api_files.key_file),
                ),
                # iPhones are reached through the retailer's push service (APNs), the rest over MQTT.
                delivery=DeliverySection(by_platform=ByPlatformSection(ios="webhook")),
                webhook=WebhookSection(url=push_service.url, secret_file=str(secret_file)),
            ),
            records,
            records,
            signing_key,
            data_key=data_key,
        )
    except BaseException:
        await records.close()
        raise
    entrance = demo_entrance(options, devices, sim_start)
    truth = entrance.truth
    # When each member who walks in walks out again (radio time): the till comes before.
    leaves_at = {
        p.device.member: p.exit_time_s
        for p in truth.people
        if p.role == "entering" and p.device is not None and p.exit_time_s is not None
    }
    go = asyncio.Event()
    source = SimulatedAdvertSource(entrance.stream(), options.speed, start=go)
    config_path = await provision_demo_gateway(records, workdir, broker, signing_key)
    try:
        gateway = await Gateway.open(load_config(config_path), source)
    except BaseException:
        await records.close()
        raise
    # The iPhones' check-ins reach the gateway as BlueZ's GATT service would hand them over.
    checkins = SimulatedCheckinService(gateway)
    source.serve_checkins(checkins.deliver)
    view = LiveView(out, sim_start, options.live, gateway.radio_now)
    visits: list[wire.Visit] = []
    triggers: list[wire.OfferTrigger] = []
    ends: list[wire.VisitEnd] = []
    tills: list[Till] = []

    def on_events(events: Sequence[wire.Event]) -> None:
        visits.extend(e for e in events if isinstance(e, wire.Visit))
        triggers.extend(e for e in events if isinstance(e, wire.OfferTrigger))
        ends.extend(e for e in events if isinstance(e, wire.VisitEnd))
        view.events(events)

    def on_offer(received: ReceivedOffer) -> None:
        now = gateway.radio_now()
        view.offer_received(received, now)
        offer = received.offer
        if offer.code is None or not tills or not redeems(offer.offer_id):
            return
        # At the till before leaving: halfway through the rest of the visit.
        leaves = leaves_at.get(member_of_token.get(received.shopper, ""), now + 240.0)
        tills[0].schedule(Redemption(now + max(0.0, leaves - now) / 2, offer, received.shopper))

    def on_outcome(outcome: RecordOutcome) -> None:
        sent = {d.offer_id for d in outcome.deliveries}
        unsent = [t for t in outcome.new_offers if t.event_id not in sent]
        if outcome.holdout and len(unsent) == outcome.holdout:
            for trigger in unsent:
                view.held_out(gateway.radio_now(), trigger)

    gateway.listeners.append(on_events)
    bridge.outcome_listeners.append(on_outcome)
    apps = ShopperApps(
        lambda token: broker.client_settings(shopper_identity(CHAIN, token)),
        CHAIN,
        list(tokens.values()),
        on_offer=on_offer,
        preferences={tokens[member]: prefs for member, prefs in stated.items()},
    )
    push_service.on_push = apps.push
    if options.live:
        print(
            f"Threshold demo: {options.minutes:g} simulated minutes of shoppers walking in, then "
            f"{options.tail_minutes:g} more for their visits to end, at {options.speed:g}x; "
            f"{len(devices)} enrolled devices (about {options.ios_share:.0%} of app users on "
            f"iPhones), broker on {broker.host}:{broker.port} "
            "(TLS, a certificate per identity, the generated ACL); offers to iPhones by webhook "
            f"to the retailer's push service on {push_service.url}\n",
            file=out,
        )
    tasks = [
        asyncio.create_task(bridge.run(), name="demo-bridge"),
        asyncio.create_task(apps.run(), name="demo-apps"),
        asyncio.create_task(gateway.run(), name="demo-gateway"),
    ]
    try:
        async with asyncio.timeout(30):
            await bridge.mqtt.wait_connected()
            await apps.wait_connected()
            await gateway.sync.synced.wait()
            api_port = await _api_port(bridge, tasks[0])
        client = EnrollmentApiClient(
            "127.0.0.1",
            api_port,
            api_token,
            ssl.create_default_context(cafile=str(api_files.ca_file)),
        )
        # The marketer sets up the store and the campaigns through the API alone; the bridge
        # signs the new set and the gateway gets it at the next sync.
        plan = await set_up_campaigns(client, STORE, sim_start)
        for text in plan.lines:
            view.line(sim_start, "MARKETER", text)
        # Members state their preferences in the app; the app backend sends them to the bridge,
        # whose next sync takes them to the gateway, with the campaigns.
        await apps.state_preferences(client)
        await _campaigns_synced(records, gateway)
        await _preferences_synced(gateway, member_of, stated)
        view.line(
            sim_start,
            "PREFS",
            f"{len(stated)} of {len(tokens)} members stated preferences in their app; the "
            f"gateway has them and the marketer's campaigns (v{gateway.sync.campaigns_version})",
        )
        apps.receipts_api = client  # the retailer's backend relays pushed offers' receipts
        till = Till(
            client,
            STORE,
            gateway.radio_now,
            lambda r, _: view.redeemed(gateway.radio_now(), r),
        )
        tills.append(till)
        tasks.append(asyncio.create_task(till.run(), name="demo-till"))
        # The broker speaks TLS only to the chain's certificates, under the generated ACL.
        knocks = await intruders.knock(broker, workdir, gateway.address)
        for k in knocks:
            view.line(sim_start, "ADMITTED" if k.admitted else "REFUSED", f"{k.who} ({k.how})")
        go.set()
        await _watch(source, gateway, truth, view)
        await _drain(gateway, apps, triggers, till, records.path)
    finally:
        try:
            await cancel_and_wait(tasks)
        finally:
            await gateway.close()
            await bridge.close()
    figures = await asyncio.to_thread(read_bridge_figures, records.path)
    report = options.report_path or workdir / REPORT_FILE_NAME
    # As of the simulation's end (its clock ran ahead of the wall's): every visit is in it.
    report_now = max(time.time(), sim_start + options.sim_minutes * 60.0 + 1.0)
    try:
        await asyncio.to_thread(write_html_report, records.path, report, report_now)
    except (OSError, BridgeError) as exc:
        _LOGGER.error("the HTML report was not written to %s: %s", report, exc)
    summary = summarise(
        truth,
        [member_of(v.member) for v in visits],
        triggers,
        list(apps.received.values()),
        {
            "offers_against_preferences": apps.offers_against_preferences(),
            "offers_over_frequency_cap": apps.offers_over_frequency_cap(),
            "members_stating_preferences": apps.preferences_stated,
            **delivery_summary(
                figures,
                list(apps.received.values()),
                member_of_token,
                push_service.pushed,
                apps.push_duplicates,
            ),
            "webhook_repeats_answered": push_service.repeats,
            "webhook_refused": dict(push_service.refused),
            "receipts_reported_by_apps": dict(apps.reported),
            "receipt_errors": apps.receipt_errors,
            "redemptions_refused": dict(till.refused),
            "report_html": str(report),
            "report_html_bytes": report.stat().st_size if report.is_file() else 0,
            "checkins": {
                "accepted": gateway.checkin.accepted,
                "refused": {r.value: n for r, n in gateway.checkin.refused.items() if n},
            },
            "adverts": gateway.pipeline.counters.adverts,
            "adverts_resolved": gateway.pipeline.counters.resolved,
            "adverts_unresolved_eid": gateway.pipeline.counters.unresolved,
            "offer_duplicates_seen_by_apps": apps.duplicates,
            "events_recorded_by_bridge": bridge.recorded,
            "intruders_refused": sum(not k.admitted for k in knocks),
            "intruders_admitted": sum(k.admitted for k in knocks),
            "sim_minutes": options.sim_minutes,
            "wall_s": round(time.monotonic() - wall_start, 2),
            "seed": options.seed,
        },
        visit_ends=[(member_of(e.member), e.duration_s) for e in ends],
    )
    if options.live:
        print(f"\nThe marketer's report: {report}", file=out)
    return summary


def api_credentials(workdir: Path, pki: LocalPki) -> tuple[str, TlsFiles]:
    """An API token (its hash in the tokens file) and the API's HTTPS certificate from the CA."""
    token = new_api_token()
    add_token_hash(workdir / "api-tokens", token_hash(token))
    directory = workdir / "api-tls"
    directory.mkdir(mode=0o700, exist_ok=True)
    files = TlsFiles(pki.ca_file, directory / "api.crt", directory / "api.key")
    if not files.cert_file.exists():
        with contextlib.suppress(FileNotFoundError):
            files.key_file.unlink()  # a key without its certificate: a run interrupted
        pki.ca.issue_files(
            "threshold-enrollment-api", files.cert_file, files.key_file, server_names=("127.0.0.1",)
        )
    return token, files


async def _api_port(bridge: Bridge, bridge_task: asyncio.Task[None]) -> int:
    """The port the bridge's enrollment API listens on, once it does."""
    while bridge.api_server is None:
        if bridge_task.done():
            bridge_task.result()  # its failure, if it failed
            raise DemoError("the bridge stopped before its enrollment API started")
        await asyncio.sleep(0.05)
    return bridge.api_server.port


async def _preferences_synced(
    gateway: Gateway,
    member_of: Callable[[str], str | None],
    stated: Mapping[str, StatedPreferences],
) -> None:
    """Wait until the gateway's roster carries every stated member's preferences."""
    deadline = time.monotonic() + PREFERENCES_SYNC_TIMEOUT_S
    while True:
        carried = {
            member_of(d.member) for d in gateway.sync.roster_devices() if d.prefs is not None
        }
        missing = stated.keys() - carried
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise DemoError(
                f"after {PREFERENCES_SYNC_TIMEOUT_S:g} s the gateway's roster (version "
                f"{gateway.sync.roster_version}) still lacks the preferences of {len(missing)} of "
                f"the {len(stated)} members who stated them: the bridge does not send them, or "
                "this gateway cannot read them"
            )
        await asyncio.sleep(0.2)


async def unmasker(records: SqliteLoyaltyRecords, store: str) -> Callable[[str], str | None]:
    """Maps `store`'s member pseudonyms back to member ids, as only the bridge can: for scoring."""
    by_serial = {serial: member for member, serial in (await records.serials()).members.items()}
    pseudonyms = records.pseudonyms(store)

    def member_of(pseudonym: str) -> str | None:
        serial = pseudonyms.decode(Kind.MEMBER, pseudonym)
        return None if serial is None else by_serial.get(serial)

    return member_of


async def provision_demo_gateway(
    records: SqliteLoyaltyRecords,
    workdir: Path,
    broker: MosquittoProcess,
    signing_key: Ed25519PrivateKey,
) -> Path:
    """Provision the gateway, register it with the bridge, write its config; return the config's path."""
    data_dir = workdir / "gw"
    keys, _ = await asyncio.to_thread(
        provision_gateway_keys, data_dir, DEMO_KEY_SOURCE, IdentitySection().otp_command
    )
    await records.add_gateway(STORE, GATEWAY, keys.public_key, time.time())
    signer = bundle.key_to_text(bundle.public_key_bytes(signing_key))
    # The gateway's TLS key and CSR as `edge-gateway provision` makes them, signed by the CA as
    # `cloud-bridge add-gateway --csr` does and installed as `edge-gateway install-cert` does.
    identity = gateway_identity(GatewayAddress(CHAIN, STORE, GATEWAY))
    csr_path, _ = await asyncio.to_thread(make_gateway_csr, data_dir, identity)
    pki = broker.pki
    cert_pem = pki.ca.sign_gateway_csr(
        csr_path.read_bytes(), GatewayAddress(CHAIN, STORE, GATEWAY), str(csr_path)
    )
    install_gateway_certificate(
        data_dir, cert_pem, pki.ca_file.read_bytes(), identity, "the demo's certificate"
    )
    mqtt_lines = ["[mqtt]", f"host = {json.dumps(broker.host)}", f"port = {broker.port}"]
    lines = [
        "# The demo gateway's config, written by `edge-gateway demo`.",
        "[gateway]",
        f"chain = {json.dumps(CHAIN)}",
        f"store = {json.dumps(STORE)}",
        f"id = {json.dumps(GATEWAY)}",
        f"data_dir = {json.dumps(str(data_dir))}",
        *mqtt_lines,
        "[uplink]",
        "ack_timeout_s = 5.0",
        "status_interval_s = 5.0",
        "[identity]",
        f"trusted_signers = [{json.dumps(signer)}]",
        f"key_source = {json.dumps(DEMO_KEY_SOURCE)}",
    ]
    path = workdir / "gateway.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def _watch(
    source: SimulatedAdvertSource, gateway: Gateway, truth: GroundTruth, view: LiveView
) -> None:
    """Until the simulation ends: announce members walking past, and a heartbeat line."""
    passers = sorted(
        (p.door_time_s, p.device.member, p.platform)
        for p in truth.people
        if p.role == "passing" and p.device is not None
    )
    next_heartbeat = time.monotonic() + 3.0
    while not source.finished:
        await asyncio.sleep(0.1)
        now = gateway.radio_now()
        while passers and passers[0][0] <= now:
            view.passer(*passers.pop(0))
        if time.monotonic() >= next_heartbeat:
            next_heartbeat += 3.0
            c = gateway.pipeline.counters
            view.heartbeat(
                now,
                f"{gateway.status().radio['adverts_per_s']:.0f} adverts/s heard, "
                f"{c.adverts} so far ({c.resolved} from members), "
                f"{gateway.checkin.accepted} iPhone check-ins, "
                f"{gateway.pipeline.presence.inside()} members inside",
            )


async def _campaigns_synced(records: SqliteLoyaltyRecords, gateway: Gateway) -> None:
    """Wait until the gateway holds the store's campaigns as the marketer left them."""
    async with records.connection.execute(
        "SELECT campaigns_version FROM stores WHERE id = ?", (STORE,)
    ) as cursor:
        row = await cursor.fetchone()
    version = 0 if row is None else int(row[0])
    deadline = time.monotonic() + CAMPAIGNS_SYNC_TIMEOUT_S
    while gateway.sync.campaigns_version < version:
        if time.monotonic() >= deadline:
            raise DemoError(
                f"after {CAMPAIGNS_SYNC_TIMEOUT_S:g} s the gateway holds campaigns "
                f"v{gateway.sync.campaigns_version}, not the marketer's v{version}: the bridge "
                "does not publish them, or this gateway refuses them (see its log)"
            )
        await asyncio.sleep(0.1)


async def _drain(
    gateway: Gateway,
    apps: ShopperApps,
    triggers: list[wire.OfferTrigger],
    till: Till,
    database: Path,
) -> None:
    """Give the last events time to reach the bridge, the last offers the phones, the last
    receipts and redemptions the bridge (the shoppers have all left: the tills report the rest)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        await till.flush()
        if await gateway.store.count() == 0 and not apps.receipts_pending() and not till.pending:
            figures = await asyncio.to_thread(read_bridge_figures, database)
            if figures.unsettled == 0 and all(
                t.event_id in apps.received or t.event_id in figures.holdout_offers
                for t in triggers
            ):
                return
        await asyncio.sleep(0.1)


def print_summary(summary: dict[str, Any], out: TextIO) -> None:
    print("\nSummary", file=out)
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value}", file=out)


def write_summary_json(summary: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
