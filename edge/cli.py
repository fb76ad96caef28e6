"""The `edge-gateway` command: run, provision keys, check a config, run the demo, scan, replay."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from edge.config import GatewayConfig
from edge.core.broker_identity import gateway_identity
from edge.errors import EdgeError
from edge.logredact import install_redaction

if TYPE_CHECKING:
    from edge.app import AdvertSource
    from edge.tools.scan import ScanDisplay, ScanView

DEFAULT_CONFIG = Path("/etc/threshold/gateway.toml")

_LOGGER = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway", description="Threshold in-store BLE entry gateway."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway with a config file")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", type=Path)

    provision = sub.add_parser(
        "provision",
        help="create this gateway's key pair and print the public key to register with the bridge",
        description="Create the gateway's X25519 key pair in [gateway] data_dir, sealed at rest "
        "(docs/security.md), mode 0600, and print its public key and key id with the "
        "`cloud-bridge add-gateway` line to run on the bridge. Run it once, as the user the "
        "gateway runs as; run again, it changes nothing and prints the same key.",
    )
    provision.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    install = sub.add_parser(
        "install-cert",
        help="install the broker certificate the bridge signed for this gateway's CSR",
        description="Check that CERT is for this gateway's TLS key and CN and was signed by the "
        "CA certificate given, then copy both to [gateway] data_dir/tls/ (where [mqtt] looks by "
        "default). Restart the gateway afterwards.",
    )
    install.add_argument(
        "cert", type=Path, help="the certificate `cloud-bridge add-gateway --csr` wrote"
    )
    install.add_argument("--ca", type=Path, required=True, help="the chain CA certificate (ca.crt)")
    install.add_argument("--config", type=Path, default=DEFAULT_CONFIG)

    demo = sub.add_parser("demo", help="a simulated store entrance, end to end")
    demo.add_argument(
        "--minutes",
        type=float,
        default=8.0,
        help="simulated minutes of shoppers walking in (default 8)",
    )
    demo.add_argument(
        "--tail-minutes",
        type=float,
        default=14.0,
        help="simulated minutes after that, for the shoppers inside to leave and their visits to "
        "end (default 14; the gateway ends a visit 5 minutes after the member was last heard)",
    )
    demo.add_argument("--speed", type=float, default=30.0, help="simulated s per wall s")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--members", type=int, default=300, help="members in the loyalty database")
    demo.add_argument("--summary-json", type=Path, help="also write the summary as JSON here")
    demo.add_argument("--quiet", action="store_true", help="no live view, summary only")
    demo.add_argument("--workdir", type=Path, help="keep broker, databases and logs here")
    demo.add_argument(
        "--report-html",
        type=Path,
        help="write the marketer's HTML report here (default: report.html in --workdir, or "
        "threshold-demo-report.html in the current directory without one)",
    )

    from edge.tools.scan import FRAME_TYPES

    scan = sub.add_parser(
        "scan",
        help="live view of what the gateway hears (installer diagnostic)",
        description="A live view of what the gateway's radio hears: device address, frame type, "
        "smoothed RSSI, adverts/s, enrolled or not. Addresses are shown on screen only: scan "
        "never logs or stores them anywhere except the --record file you name.",
    )
    scan.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    scan.add_argument(
        "--filter-enrolled", action="store_true", help="show only devices of the roster"
    )
    scan.add_argument(
        "--filter-type",
        choices=FRAME_TYPES,
        metavar="TYPE",
        help=f"show one frame type: {', '.join(FRAME_TYPES)}",
    )
    scan.add_argument(
        "--record",
        type=Path,
        metavar="FILE.jsonl",
        help="also save every advert heard (unfiltered, with device addresses) to this capture "
        "file (docs/capture.md); the only place scan writes addresses",
    )
    scan.add_argument(
        "--roster",
        type=Path,
        metavar="ROSTER.json",
        help="a roster file (the `roster` payload of docs/mqtt.md, holding identity keys in "
        "clear: keep it safe) to tell enrolled devices apart",
    )
    scan.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="radio source from here")

    tools = sub.add_parser("tools", help="installer's tools")
    tools_sub = tools.add_subparsers(dest="tool", required=True)
    eid = tools_sub.add_parser(
        "eid",
        help="the Eddystone-EID a device should broadcast at a time",
        description="Print the EID (hex) a device with this identity key and rotation exponent "
        "broadcasts at a Unix time (the EID counter is Unix seconds mod 2**32).",
    )
    eid.add_argument("--identity-key", required=True, help="16-byte identity key, hex")
    eid.add_argument("--exponent", type=int, required=True, help="rotation exponent K, 0..15")
    eid.add_argument("--time", type=int, required=True, help="Unix time in seconds")

    replay = sub.add_parser(
        "replay",
        help="run a capture through the pipeline as fast as possible",
        description="Run a capture (docs/capture.md) through the gateway's pipeline on the "
        "capture's own clock. Broken lines are reported on stderr with their line number and "
        "skipped.",
    )
    replay.add_argument("capture", type=Path, metavar="FILE.jsonl")
    replay.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    replay.add_argument(
        "--roster",
        type=Path,
        metavar="ROSTER.json",
        help="a roster file (the `roster` payload of docs/mqtt.md); without it nothing resolves",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_redaction()  # no MAC address, EID or key in any log line (edge/logredact.py)
    try:
        if args.command == "check-config":
            from edge.config import load_config

            config = load_config(args.config)
            print(f"{args.config}: OK (gateway {config.address.prefix})")
            if not config.identity.trusted_signers and not config.identity.trusted_signers_file:
                print(
                    f"{args.config}: note: [identity] trusted_signers is empty: `run` refuses to "
                    "start until it names the bridge's public key (`cloud-bridge keygen`)"
                )
            if config.serves_checkin and not config.store_beacon.enabled:
                print(
                    f"{args.config}: note: iPhone check-in is served but [store_beacon] is off: "
                    "backgrounded iPhone apps wake only by their own scan (docs/iphone-checkin.md)"
                )
            tls = config.mqtt_tls
            if tls is None:
                print(f"{args.config}: note: [mqtt] insecure_plaintext: MQTT without TLS")
            for path in () if tls is None else (tls.ca_file, tls.cert_file, tls.key_file):
                if not path.exists():
                    print(
                        f"{args.config}: note: {path} is missing: `run` cannot connect until "
                        "the certificate is installed (`edge-gateway provision`, then "
                        "`edge-gateway install-cert`)"
                    )
            return 0
        if args.command == "run":
            logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
            from edge.config import load_config

            config = load_config(args.config)  # a bad file stops here: exit 2, nothing started
            return _run(config)
        if args.command == "provision":
            return _provision(args.config)
        if args.command == "install-cert":
            return _install_cert(args)
        if args.command == "tools":
            return _tool_eid(args)
        if args.command == "replay":
            return _replay(args)
        if args.command == "scan":
            return _scan(args)
        return _demo(args)
    except EdgeError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 2


def _provision(config_path: Path) -> int:
    from edge.adapters.keystore import SEAL_KEY_FILE, provision_gateway_keys
    from edge.adapters.pki import make_gateway_csr
    from edge.config import load_config
    from edge.core.bundle import key_to_text

    config = load_config(config_path)
    identity = config.identity
    keys, created = provision_gateway_keys(
        config.data_dir, identity.key_source, identity.otp_command
    )
    sealed = (
        "sealed with this Pi's OTP key"
        if keys.source == "otp"
        else f"sealed with the key file {config.data_dir / SEAL_KEY_FILE} "
        "(weaker: a copy of the card opens it; see docs/security.md)"
    )
    public = key_to_text(keys.public_key)
    address = config.address
    broker_identity = gateway_identity(address)
    csr_path, tls_created = make_gateway_csr(config.data_dir, broker_identity)
    print(
        f"gateway {address.prefix}: key {'created' if created else 'already provisioned'}, {sealed}"
    )
    print(f"public key: {public}")
    print(f"key id:     {keys.key_id}")
    print(
        f"TLS key:    {csr_path.with_name('client.key')} "
        f"({'created, mode 0600' if tls_created else 'kept'})"
    )
    print(f"CSR:        {csr_path} (CN {broker_identity.common_name})")
    print("Register it on the bridge (the bridge's [bridge] database), with the CSR copied there:")
    print(
        f"  cloud-bridge add-gateway /var/lib/threshold/loyalty.sqlite {address.store} "
        f"{address.gateway} --chain {address.chain} --public-key {public} --csr {csr_path.name}"
    )
    print(
        "Then copy the certificate it writes back here and run: "
        f"edge-gateway install-cert CERT --ca ca.crt --config {config_path}"
    )
    if not identity.trusted_signers and not identity.trusted_signers_file:
        print(
            "Then add the bridge's public key (`cloud-bridge keygen` prints it) to "
            f'{config_path}: [identity] trusted_signers = ["..."]'
        )
    return 0


def _install_cert(args: argparse.Namespace) -> int:
    from edge.adapters.pki import PkiError, install_gateway_certificate
    from edge.config import load_config

    config = load_config(args.config)
    try:
        cert_pem = args.cert.read_bytes()
        ca_pem = args.ca.read_bytes()
    except OSError as exc:
        print(f"edge-gateway: {exc.filename}: cannot read it: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        files = install_gateway_certificate(
            config.data_dir, cert_pem, ca_pem, gateway_identity(config.address), str(args.cert)
        )
    except PkiError as exc:
        print(f"edge-gateway: {exc.reason}", file=sys.stderr)
        return 2
    print(f"{files.cert_file}: installed; {files.ca_file}: the CA the broker must be signed by")
    print("Restart the gateway: it connects to the broker with TLS ([mqtt] port 8883).")
    return 0


def _tool_eid(args: argparse.Namespace) -> int:
    from edge.core.eid import compute_eid, counter_at

    try:
        key = bytes.fromhex(args.identity_key)
        print(compute_eid(key, args.exponent, counter_at(args.time)).hex())
    except ValueError as exc:
        print(f"edge-gateway tools eid: {exc}", file=sys.stderr)
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    from edge.demo.runner import (
        DemoOptions,
        failures,
        print_summary,
        run_demo,
        write_summary_json,
    )

    options = DemoOptions(
        minutes=args.minutes,
        tail_minutes=args.tail_minutes,
        speed=args.speed,
        seed=args.seed,
        members=args.members,
        live=not args.quiet,
        workdir=args.workdir,
        # Without --workdir the work directory is removed at the end: the report stays here.
        report_path=args.report_html
        or (None if args.workdir else Path("threshold-demo-report.html").absolute()),
    )
    summary = asyncio.run(run_demo(options))
    print_summary(summary, sys.stdout)
    if args.summary_json:
        write_summary_json(summary, args.summary_json)
    problems = failures(summary)
    for problem in problems:
        print(f"demo check failed: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _replay(args: argparse.Namespace) -> int:
    import json

    from edge.core.capture import CaptureError
    from edge.tools import ToolError, load_roster
    from edge.tools.replay import print_report, replay_lines

    devices = load_roster(args.roster) if args.roster is not None else ()

    def broken(exc: CaptureError) -> None:
        print(f"{args.capture}: {exc}; line skipped", file=sys.stderr)

    try:
        with args.capture.open(encoding="utf-8", errors="replace") as lines:
            report = replay_lines(lines, devices, broken)
    except OSError as exc:
        raise ToolError(f"{args.capture}: cannot be read: {exc.strerror}") from None
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        enrolled = len(devices) if args.roster is not None else None
        print_report(report, str(args.capture), enrolled, sys.stdout)
    return 0


def _scan(args: argparse.Namespace) -> int:
    import shutil

    from edge.app import build_radio
    from edge.config import load_config
    from edge.core.frames import FrameKind
    from edge.core.resolver import EidResolver
    from edge.tools import ToolError, load_roster
    from edge.tools.scan import ScanDisplay, ScanView

    config = load_config(args.config)
    resolver = None
    if args.roster is not None:
        resolver = EidResolver(load_roster(args.roster), time.time(), config.identity.skew_windows)
    elif args.filter_enrolled:
        print("edge-gateway: --filter-enrolled needs --roster ROSTER.json", file=sys.stderr)
        return 2
    view = ScanView(
        resolver,
        filter_enrolled=args.filter_enrolled,
        filter_type=FrameKind(args.filter_type) if args.filter_type else None,
    )
    with contextlib.ExitStack() as stack:
        record = None
        if args.record is not None:
            try:
                # Owner-only: a capture holds the addresses of everyone near the door.
                fd = os.open(args.record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                record = stack.enter_context(open(fd, "w", encoding="utf-8"))
            except OSError as exc:
                raise ToolError(f"{args.record}: cannot be written: {exc.strerror}") from None
        source = build_radio(config)
        tty = sys.stdout.isatty()
        size = shutil.get_terminal_size()
        display = ScanDisplay(
            sys.stdout,
            source.name,
            tty=tty,
            max_rows=max(1, size.lines - 4) if tty else 50,
            width=max(20, size.columns - 1) if tty else None,
        )
        asyncio.run(_scan_until_stopped(source, view, display, args.seconds, record, tty))
    recorded = f"; {view.adverts:,} recorded to {args.record}" if args.record else ""
    print(f"scan: {view.adverts:,} adverts heard, {view.devices:,} devices in view{recorded}")
    return 0


async def _scan_until_stopped(
    source: AdvertSource,
    view: ScanView,
    display: ScanDisplay,
    seconds: float | None,
    record: TextIO | None,
    tty: bool,
) -> None:
    from edge.tools.scan import run_scan

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_scan(
            source,
            view,
            display,
            seconds=seconds,
            record=record,
            refresh_s=1.0 if tty else 5.0,
            stop=stop,
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _run(config: GatewayConfig) -> int:
    """`run`: the exit code says why it stopped (edge/process.py, README "Exit codes")."""
    from edge.app import run_gateway
    from edge.process import ExitCode, classify

    umask = os.umask(0o077)  # every file and directory the gateway creates is its own (0600, 0700)
    try:
        failure = asyncio.run(run_gateway(config))
    except Exception as exc:  # before the loops ran: keys, trusted signers, database
        failure = classify("start", exc)
        if failure.code is ExitCode.INTERNAL:
            _LOGGER.exception("the gateway failed to start")
    finally:
        os.umask(umask)
    if failure is None:
        return ExitCode.OK
    print(f"edge-gateway: {failure.reason}", file=sys.stderr)
    return failure.code


def entry() -> None:
    """The console script: `main()`, then an exit that no lingering thread can hold up."""
    from edge.process import exit_for_good

    exit_for_good(main())
