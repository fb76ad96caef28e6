"""The demo: a private Mosquitto, the bridge with a seeded loyalty database, one gateway on a simulated
store entrance, and the shoppers' apps. Prints a live view, then a summary checked against ground truth.

Set up as an installer would: the bridge's signing key (`cloud-bridge keygen`), the gateway provisioned
(`edge-gateway provision`, keys sealed at rest) and registered (`cloud-bridge add-gateway`), and a
gateway config file naming the bridge's public key, all in the work directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_bridge.adapters.data_key import DATA_KEY_FILE_NAME, create_data_key_file
from cloud_bridge.adapters.sqlite_records import SqliteLoyaltyRecords
from cloud_bridge.app import Bridge
from cloud_bridge.config import BridgeConfig, BridgeSection
from cloud_bridge.core.admission import DEFAULT_MAX_AGE_S as _DEFAULT_AGE_S
from cloud_bridge.core.admission import DEFAULT_MAX_FUTURE_S as _DEFAULT_FUTURE_S
from cloud_bridge.core.pseudonyms import Kind
from cloud_bridge.seed import seed_records
from edge.adapters.keystore import create_signing_key_file, provision_gateway_keys
from edge.adapters.mosquitto import MosquittoProcess
from edge.adapters.pki import LocalPki, install_gateway_certificate, make_gateway_csr
from edge.adapters.simulated_radio import SimulatedAdvertSource
from edge.app import Gateway
from edge.config import IdentitySection, load_config
from edge.core import bundle, wire
from edge.core.broker_identity import bridge_identity, gateway_identity, shopper_identity
from edge.core.wire import GatewayAddress
from edge.demo import intruders
from edge.demo.shopper_apps import ReceivedOffer, ShopperApps
from edge.demo.stats import percentile
from edge.services.tasks import cancel_and_wait
from edge.sim.entrance import EntranceConfig, GroundTruth, SimDevice, StoreEntrance

CHAIN = "demo-chain"
STORE = "store-001"
GATEWAY = "door-1"
DRAIN_TIMEOUT_S = 20.0
# The demo seals the gateway's keys with a key file in its work directory, wherever it runs.
DEMO_KEY_SOURCE = "file"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    minutes: float = 8.0
    speed: float = 30.0
    seed: int = 7
    members: int = 300
    arrivals_per_min: float = 6.0
    passers_per_min: float = 14.0
    live: bool = True
    workdir: Path | None = None
    start_unix_s: float | None = None  # when the simulation starts (default: now)


class LiveView:
    """A readable running commentary: entries, offers, people walking past, a heartbeat line."""

    def __init__(self, out: TextIO, start_s: float, enabled: bool) -> None:
        self._out = out
        self._start_s = start_s
        self._enabled = enabled
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
                    f"member {event.member[:8]}…  {event.tier:<6}  "
                    f"device {event.device[:8]}…  {event.rssi_dbm:.0f} dBm",
                    self._bold,
                )
            elif isinstance(event, wire.OfferTrigger):
                self.line(
                    event.ts, "OFFER", f"member {event.member[:8]}…  campaign {event.campaign}"
                )

    def offer_received(self, received: ReceivedOffer, radio_now: float) -> None:
        self.line(
            radio_now,
            "  ➜ PHONE",
            f'shopper {received.shopper[:8]}…  "{received.offer.title}"  '
            f"({received.latency_ms:.0f} ms after the deciding advert)",
            self._green,
        )

    def passer(self, t_s: float, member: str) -> None:
        self.line(
            t_s, "WALKS BY", f"member {member} passed the door outside: not an entry", self._dim
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
    async with records.connection.execute(
        "SELECT shopper_token FROM members ORDER BY id"
    ) as cursor:
        return [str(row[0]) async for row in cursor]


def demo_entrance(
    options: DemoOptions, devices: Sequence[SimDevice], start_unix_s: float
) -> StoreEntrance:
    """The simulated entrance the demo's gateway hears; the same options give the same adverts."""
    return StoreEntrance(
        EntranceConfig(
            seed=options.seed,
            start_unix_s=start_unix_s,
            duration_s=options.minutes * 60.0,
            arrivals_per_min=options.arrivals_per_min,
            passers_per_min=options.passers_per_min,
        ),
        devices,
    )


def summarise(
    truth: GroundTruth,
    visitors: Sequence[str | None],
    triggers: Sequence[wire.OfferTrigger],
    received: Sequence[ReceivedOffer],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The demo's outcome, scored against what the simulated people really did.

    `visitors`: the member behind each visit, as the bridge maps the store's pseudonym back (None: a
    pseudonym the bridge never gave out).
    """
    present = {p.device.member for p in truth.people if p.device is not None}
    entered = truth.entered_members()
    passing = truth.passing_members()
    recognised = {v for v in visitors if v is not None}
    latencies = [r.latency_ms for r in received]
    p50 = percentile(latencies, 50)
    p99 = percentile(latencies, 99)
    return {
        "entered": len(visitors),
        "members_recognised": len(recognised & entered),
        "members_really_entered": len(entered),
        "non_members_recognised": sum(1 for v in visitors if v is None or v not in present),
        "passers_by_entered": sum(1 for v in visitors if v in passing),
        "members_walked_past": len(passing),
        "offers_triggered": len(triggers),
        "offers_delivered": len(received),
        "latency_ms_p50": round(p50, 2) if p50 is not None else None,
        "latency_ms_p99": round(p99, 2) if p99 is not None else None,
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
    if summary["offers_delivered"] < summary["offers_triggered"]:
        problems.append(
            f"{summary['offers_triggered'] - summary['offers_delivered']} offers did not arrive"
        )
    return problems


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
        return await _run(options, workdir, broker, out)
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow


async def _run(
    options: DemoOptions, workdir: Path, broker: MosquittoProcess, out: TextIO
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
    signing_key_file = workdir / "bridge-signing.key"
    signing_key, _ = await asyncio.to_thread(create_signing_key_file, signing_key_file)
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
                + options.minutes * 60
                + max(0.0, sim_start - time.time()),
                event_max_age_s=max(_DEFAULT_AGE_S, time.time() - sim_start + 86400),
                data_key_file=str(workdir / DATA_KEY_FILE_NAME),
            ),
            broker.mqtt_section(bridge_identity(CHAIN, BridgeSection().id)),
        ),
        records,
        records,
        signing_key,
        data_key=data_key,
    )
    entrance = demo_entrance(options, devices, sim_start)
    truth = entrance.truth
    go = asyncio.Event()
    source = SimulatedAdvertSource(entrance.adverts(), options.speed, start=go)
    config_path = await provision_demo_gateway(records, workdir, broker, signing_key)
    try:
        gateway = await Gateway.open(load_config(config_path), source)
    except BaseException:
        await records.close()
        raise
    view = LiveView(out, sim_start, options.live)
    visits: list[wire.Visit] = []
    triggers: list[wire.OfferTrigger] = []

    def on_events(events: Sequence[wire.Event]) -> None:
        visits.extend(e for e in events if isinstance(e, wire.Visit))
        triggers.extend(e for e in events if isinstance(e, wire.OfferTrigger))
        view.events(events)

    gateway.listeners.append(on_events)
    apps = ShopperApps(
        lambda token: broker.client_settings(shopper_identity(CHAIN, token)),
        CHAIN,
        await shopper_tokens(records),
        on_offer=lambda r: view.offer_received(r, gateway.radio_now()),
    )
    if options.live:
        print(
            f"Threshold demo: {options.minutes:g} simulated minutes at {options.speed:g}x, "
            f"{len(devices)} enrolled devices, broker on {broker.host}:{broker.port} "
            "(TLS, a certificate per identity, the generated ACL)\n",
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
        # The broker speaks TLS only to the chain's certificates, under the generated ACL.
        knocks = await intruders.knock(broker, workdir, gateway.address)
        for k in knocks:
            view.line(sim_start, "ADMITTED" if k.admitted else "REFUSED", f"{k.who} ({k.how})")
        go.set()
        await _watch(source, gateway, truth, view)
        await _drain(gateway, apps, triggers)
    finally:
        try:
            await cancel_and_wait(tasks)
        finally:
            await gateway.close()
            await bridge.close()
    summary = summarise(
        truth,
        [member_of(v.member) for v in visits],
        triggers,
        list(apps.received.values()),
        {
            "adverts": gateway.pipeline.counters.adverts,
            "adverts_resolved": gateway.pipeline.counters.resolved,
            "adverts_unresolved_eid": gateway.pipeline.counters.unresolved,
            "offer_duplicates_seen_by_apps": apps.duplicates,
            "events_recorded_by_bridge": bridge.recorded,
            "intruders_refused": sum(not k.admitted for k in knocks),
            "intruders_admitted": sum(k.admitted for k in knocks),
            "sim_minutes": options.minutes,
            "wall_s": round(time.monotonic() - wall_start, 2),
            "seed": options.seed,
        },
    )
    return summary


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
        (p.door_time_s, p.device.member)
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
                f"{gateway.pipeline.presence.inside()} members inside",
            )


async def _drain(gateway: Gateway, apps: ShopperApps, triggers: list[wire.OfferTrigger]) -> None:
    """Give the last events time to reach the bridge and the last offers the phones."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if await gateway.store.count() == 0 and all(t.event_id in apps.received for t in triggers):
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
