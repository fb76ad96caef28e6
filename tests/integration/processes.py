"""The gateway and the bridge as real processes (`python -m edge run`, `python -m cloud_bridge run`),
with a systemd notification socket of the test's own: READY=1 says a process is up.

`inject` is Python run in the child before the command starts (a monkeypatch: an exception or a
stall put into a loop); a file named by THRESHOLD_TEST_TRIGGER can arm it while the process runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge.adapters.keystore import create_signing_key_file, provision_gateway_keys
from edge.core import bundle
from edge.core.broker_identity import (
    BrokerIdentity,
    bridge_identity,
    gateway_identity,
)
from edge.core.wire import GatewayAddress
from tests.fakes.broker import MosquittoProcess

ROOT = Path(__file__).resolve().parents[2]
CHAIN, STORE, GATEWAY = "demo-chain", "store-001", "door-1"


@dataclass
class Notifications:
    """A bound SOCK_DGRAM socket standing in for systemd's NOTIFY_SOCKET."""

    path: str
    sock: socket.socket
    received: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, datagram)

    def poll(self, timeout_s: float) -> None:
        """Read what arrives within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            self.received.append((time.monotonic(), data.decode()))

    def wait_for(self, field_: str, timeout_s: float) -> float:
        """Wait until a datagram holding `field_` (a line, e.g. READY=1) arrives; when it did."""
        deadline = time.monotonic() + timeout_s
        seen = len(self.received)
        while True:
            for at, message in self.received[seen:]:
                if field_ in message.split("\n"):
                    return at
            seen = len(self.received)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {field_} within {timeout_s} s; got {self.messages()}")
            self.poll(min(left, 0.2))

    def messages(self) -> list[str]:
        return [m for _, m in self.received]


@contextlib.contextmanager
def notify_socket(tmp_path: Path, abstract: bool = False) -> Iterator[Notifications]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"threshold-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        path = "@" + name
    else:
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
    try:
        yield Notifications(path, sock)
    finally:
        sock.close()


class Process:
    """One child process, its output in a file (never an unread pipe)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            argv, stdout=self._out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )

    def wait(self, timeout_s: float, notify: Notifications | None = None) -> int:
        """Its exit code; reading `notify` meanwhile, as systemd does (a full socket drops)."""
        deadline = time.monotonic() + timeout_s
        while (code := self.popen.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"still running after {timeout_s} s; its log ends:\n{self.output()[-3000:]}"
                )
            if notify is not None:
                notify.poll(0.1)
            else:
                time.sleep(0.1)
        if notify is not None:
            notify.poll(0.1)
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def last_line(self) -> str:
        lines = self.output().strip().splitlines()
        return lines[-1] if lines else ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)
        self._out.close()


def _command(module: str, config: Path, inject: str) -> list[str]:
    if not inject:
        return [sys.executable, "-m", module, "run", "--config", str(config)]
    main = "edge.cli" if module == "edge" else "cloud_bridge.cli"
    argv = ["run", "--config", str(config)]
    code = f"import sys\n{inject}\nfrom {main} import entry\nsys.argv[1:] = {argv!r}\nentry()\n"
    return [sys.executable, "-c", code]


@contextlib.contextmanager
def running(
    module: str,
    config: Path,
    notify: Notifications,
    *,
    watchdog_usec: int = 0,
    inject: str = "",
    trigger: Path | None = None,
) -> Iterator[Process]:
    """`python -m MODULE run --config CONFIG`, killed at the end if still running."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NOTIFY_SOCKET": notify.path,
        "THRESHOLD_TEST_TRIGGER": str(trigger or ""),
    }
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    process = Process(_command(module, config, inject), config.parent / f"{module}.log", env)
    try:
        yield process
    finally:
        process.stop()


def gateway_config(workdir: Path, broker: MosquittoProcess) -> Path:
    """A provisioned gateway (simulated radio, key file) trusting a fresh bridge key."""
    workdir.mkdir(parents=True, exist_ok=True)
    signing_key, _ = create_signing_key_file(workdir / "bridge-signing.key")
    data_dir = workdir / "gw"
    provision_gateway_keys(data_dir, "file", "rpi-otp-private-key")
    trusted = bundle.key_to_text(bundle.public_key_bytes(signing_key))
    path = workdir / "gateway.toml"
    path.write_text(
        f'[gateway]\nchain = "{CHAIN}"\nstore = "{STORE}"\nid = "{GATEWAY}"\n'
        f'data_dir = "{data_dir}"\n'
        f"{mqtt_toml(broker, gateway_identity(GatewayAddress(CHAIN, STORE, GATEWAY)))}"
        '[radio]\nsource = "simulated"\n[radio.simulated]\nmembers = 20\nspeed = 20.0\n'
        f'[identity]\nkey_source = "file"\ntrusted_signers = ["{trusted}"]\n'
        "[uplink]\nstatus_interval_s = 1.0\n"
    )
    return path


def bridge_config(workdir: Path, broker: MosquittoProcess) -> Path:
    """A bridge on a seeded loyalty database."""
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "db" / "loyalty.sqlite"  # its directory made by `seed`
    subprocess.run(
        [sys.executable, "-m", "cloud_bridge", "seed", str(database), "--members", "30"],
        check=True,
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    create_signing_key_file(workdir / "bridge-signing.key")
    path = workdir / "bridge.toml"
    path.write_text(
        f'[bridge]\nchain = "{CHAIN}"\ndatabase = "{database}"\n'
        f'signing_key_file = "{workdir / "bridge-signing.key"}"\n'
        f'data_key_file = "{database.parent / "bridge-data.key"}"\n'  # made by `seed`
        "sync_interval_s = 1.0\nstatus_grace_s = 0.2\n"
        f"{mqtt_toml(broker, bridge_identity(CHAIN, 'bridge-1'))}"
    )
    return path


def mqtt_toml(broker: MosquittoProcess, identity: BrokerIdentity) -> str:
    """The [mqtt] section for `identity` on `broker`: TLS with its own certificate."""
    section = broker.mqtt_section(identity)
    lines = ["[mqtt]", f"host = {json.dumps(section.host)}", f"port = {section.port}"]
    for name in ("ca_file", "cert_file", "key_file"):
        lines.append(f"{name} = {json.dumps(getattr(section, name))}")
    return "\n".join(lines) + "\n"
