"""`cloud-bridge ca ...` and `cloud-bridge broker-config`: the chain CA, certificates, the broker's
configuration and ACL. Wiring only: naming rules live in edge/core/broker_identity.py, the files
and crypto in edge/adapters/pki.py, the broker's config text in edge/core/broker_acl.py."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge.adapters.pki import CA_CERT_NAME, CertificateAuthority, PkiError, write_public_file
from edge.core.broker_acl import (
    BrokerListener,
    BrokerSettings,
    BrokerTlsFiles,
    ChainAcl,
    acl_text,
    mosquitto_config_text,
)
from edge.core.broker_identity import (
    IdentityError,
    bridge_identity,
    monitor_identity,
    shopper_identity,
)
from edge.core.wire import GatewayAddress, WireError, check_id

DEFAULT_CA_DIR = Path("/var/lib/threshold/ca")  # owned by the bridge user, like its signing key


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = sub.add_parser("ca", help="the chain's certificate authority for broker TLS")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)
    init = ca_sub.add_parser(
        "init",
        help="create the CA (directory 0700, key 0600); never replaces one",
    )
    init.add_argument("--dir", type=Path, default=DEFAULT_CA_DIR, help="default %(default)s")
    init.add_argument("--chain", default="demo-chain")
    server = ca_sub.add_parser(
        "server-cert", help="a certificate and key for the broker (serverAuth, SAN names/IPs)"
    )
    server.add_argument("--dir", type=Path, default=DEFAULT_CA_DIR, help="the CA directory")
    server.add_argument(
        "--host",
        action="append",
        required=True,
        help="a name or IP address clients use for the broker (repeatable)",
    )
    server.add_argument("--out", type=Path, required=True, help="directory for server.crt/.key")
    client = ca_sub.add_parser(
        "client-cert",
        help="a certificate and key for a bridge instance, an IT monitor or a shopper app",
    )
    client.add_argument("--dir", type=Path, default=DEFAULT_CA_DIR, help="the CA directory")
    client.add_argument("--chain", default="demo-chain")
    client.add_argument("--kind", choices=("bridge", "monitor", "shopper"), required=True)
    client.add_argument("--name", required=True, help="bridge id, monitor name or shopper token")
    client.add_argument(
        "--out",
        type=Path,
        required=True,
        help="directory for client.crt/.key and ca.crt ([mqtt] defaults: bridge-tls/ beside "
        "the bridge's database)",
    )
    broker = sub.add_parser(
        "broker-config",
        help="write the Mosquitto config and ACL for the chain (TLS, client certificates)",
    )
    broker.add_argument("--chain", default="demo-chain")
    broker.add_argument(
        "--bridge-id", action="append", required=True, help="a bridge instance id (repeatable)"
    )
    broker.add_argument("--monitor", action="append", default=[], help="an IT monitor name")
    broker.add_argument("--out", type=Path, required=True, help="directory for the two files")
    broker.add_argument("--port", type=int, default=8883)
    broker.add_argument("--bind", default="", help="address to listen on (default: all)")
    broker.add_argument("--cafile", default="", help="default OUT/ca.crt")
    broker.add_argument("--certfile", default="", help="default OUT/server.crt")
    broker.add_argument("--keyfile", default="", help="default OUT/server.key")
    broker.add_argument("--persistence-location", default="/var/lib/mosquitto/")


def run(args: argparse.Namespace) -> int:
    """Run `ca ...` or `broker-config`; errors are printed with what to do, exit code 2."""
    try:
        if args.command == "broker-config":
            return _broker_config(args)
        if args.ca_command == "init":
            check_id(args.chain, "chain")  # the chain the CA is named for, as every config has it
            ca = CertificateAuthority.init(args.dir, args.chain)
            print(f"{args.dir}: CA created (key {args.dir / 'ca.key'}, mode 0600)")
            print(f"CA certificate: {ca.cert_path} (give it to the broker and every client)")
            return 0
        ca = CertificateAuthority.load(args.dir)
        if args.ca_command == "server-cert":
            return _issue(ca, "threshold-broker", args.out, "server", server_names=args.host)
        maker = {"bridge": bridge_identity, "monitor": monitor_identity}.get(
            args.kind, shopper_identity
        )
        identity = maker(args.chain, args.name)
        return _issue(ca, identity.common_name, args.out, "client", server_names=())
    except (PkiError, IdentityError, WireError) as exc:
        print(f"cloud-bridge: {exc.reason}", file=sys.stderr)
        return 2


def _issue(
    ca: CertificateAuthority, cn: str, out: Path, stem: str, *, server_names: list[str] | tuple[()]
) -> int:
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"{out}: cannot create it: {exc.strerror}") from None
    cert_path, key_path = out / f"{stem}.crt", out / f"{stem}.key"
    cert = ca.issue_files(cn, cert_path, key_path, server_names=server_names)
    write_public_file(out / CA_CERT_NAME, ca.cert_path.read_bytes())
    print(f"{cert_path}: certificate for {cn!r}, valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    print(f"{key_path}: its private key (mode 0600)")
    print(f"{out / CA_CERT_NAME}: the CA certificate")
    return 0


def _broker_config(args: argparse.Namespace) -> int:
    chain = ChainAcl(args.chain, tuple(args.bridge_id), tuple(args.monitor))
    out: Path = args.out
    try:
        out.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"{out}: cannot create it: {exc.strerror}") from None
    acl_path = out / "threshold.acl"
    conf_path = out / "threshold.conf"
    tls = BrokerTlsFiles(
        args.cafile or str(out / "ca.crt"),
        args.certfile or str(out / "server.crt"),
        args.keyfile or str(out / "server.key"),
    )
    conf = mosquitto_config_text(
        BrokerSettings(
            listener=BrokerListener(args.port, args.bind, tls),
            acl_file=str(acl_path),
            persistence_location=args.persistence_location,
        )
    )
    for path, text in ((acl_path, acl_text([chain])), (conf_path, conf)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    print(f"{conf_path}: Mosquitto config (TLS on port {args.port}, client certificates)")
    print(f"{acl_path}: its ACL")
    print(
        f"It is a whole broker config (persistence and logging included), not a conf.d snippet: "
        f"run `mosquitto -c {conf_path}`, or make it /etc/mosquitto/mosquitto.conf"
    )
    return 0


def sign_gateway_csr(csr_file: Path, ca_dir: Path, address: GatewayAddress, out: Path) -> Path:
    """`add-gateway --csr`: sign the gateway's CSR with the CA; write its certificate to `out`."""
    ca = CertificateAuthority.load(ca_dir)
    try:
        csr_pem = csr_file.read_bytes()
    except OSError as exc:
        raise PkiError(f"{csr_file}: cannot read the CSR: {exc.strerror}") from None
    cert_pem = ca.sign_gateway_csr(csr_pem, address, str(csr_file))
    write_public_file(out, cert_pem)
    return out
