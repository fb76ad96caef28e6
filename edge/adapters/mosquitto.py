"""A private Mosquitto broker run as a child process, for tests and the demo.

It runs the configuration and ACL `cloud-bridge broker-config` writes (edge/core/broker_acl.py):
TLS with a client certificate per identity from its own CA (`client_settings()` gives a client's
settings in one call), or plain TCP only when asked (`plaintext=True`). It listens on loopback
only, persists its state in its own work directory (saved every second, so a `kill()` loses at
most the last second, see shared/RECIPES.md) and is killed or restarted by its own PID for fault
tests. A restart reuses the same port, so clients reconnect to the same address.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from edge.adapters.mqtt import MqttSettings
from edge.adapters.pki import LocalPki
from edge.config import MqttSection
from edge.core.broker_acl import (
    BrokerListener,
    BrokerSettings,
    BrokerTlsFiles,
    ChainAcl,
    acl_text,
    mosquitto_config_text,
)
from edge.core.broker_identity import BrokerIdentity
from edge.errors import EdgeError

_FALLBACK_BINARY = Path("/usr/sbin/mosquitto")
_LOG_TAIL_CHARS = 2000
_STOP_GRACE_S = 5.0
#: The chains, bridge instances and IT monitors the tests' and demo's brokers know by name.
LOCAL_CHAINS = (
    ChainAcl("test-chain", ("bridge-1", "bridge-2"), ("it", "it-2", "it-3")),
    ChainAcl("demo-chain", ("bridge-1",), ("it",)),
)


class MosquittoError(EdgeError):
    """The broker could not be found, started or stopped; `reason` says which and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def find_mosquitto() -> Path:
    """The mosquitto binary on PATH or in /usr/sbin; raises MosquittoError naming the package."""
    found = shutil.which("mosquitto")
    if found is not None:
        return Path(found)
    if os.access(_FALLBACK_BINARY, os.X_OK):
        return _FALLBACK_BINARY
    raise MosquittoError(
        "mosquitto not found on PATH or at /usr/sbin/mosquitto: install the Debian package "
        "`mosquitto` (apt-get install mosquitto mosquitto-clients)"
    )


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """Write a Mosquitto password file for `users` (name → password) with `mosquitto_passwd -b`."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.access(tool, os.X_OK):
        raise MosquittoError(
            "mosquitto_passwd not found: install the Debian package `mosquitto` to create "
            f"password file {path}"
        )
    path.write_text("")  # `mosquitto_passwd -b` only appends to an existing file
    for user, password in users.items():
        done = subprocess.run(
            [tool, "-b", str(path), user, password], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise MosquittoError(
                f"mosquitto_passwd could not add user {user!r} to {path}: "
                f"{(done.stderr or done.stdout).strip()}"
            )
    return path


class MosquittoProcess:
    """One Mosquitto child process on 127.0.0.1 with its config, data and log in `workdir`."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        plaintext: bool = False,
        pki: LocalPki | None = None,
        chains: Sequence[ChainAcl] = LOCAL_CHAINS,
        acl_extra: Sequence[str] = (),
        password_file: Path | None = None,
        extra_config: Sequence[str] = (),
    ) -> None:
        self._workdir = workdir
        self._port = port if port is not None else free_loopback_port()
        self._plaintext = plaintext
        self._pki = None if plaintext else (pki or LocalPki(workdir / "pki"))
        self._chains = tuple(chains)
        self._acl_extra = tuple(acl_extra)  # more ACL lines (tests: a scratch topic tree)
        self._password_file = password_file
        self._extra_config = tuple(extra_config)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pki(self) -> LocalPki:
        """The CA whose certificates this broker accepts (not for a plaintext broker)."""
        if self._pki is None:
            raise MosquittoError("this broker runs plain TCP: it has no certificates")
        return self._pki

    def client_settings(
        self, identity: BrokerIdentity | str, client_id: str = "", **overrides: object
    ) -> MqttSettings:
        """A client's settings for this broker: TLS with a certificate for `identity` (made on
        first use), or plain TCP on a plaintext broker. The broker uses the certificate's CN as
        client id, whatever `client_id` says."""
        tls = None if self._pki is None else self._pki.client_files(identity)
        fields: dict[str, object] = {
            "host": self.host,
            "port": self._port,
            "client_id": client_id,
            "tls": tls,
            "identity": None if tls is None else str(identity),
            "connect_timeout_s": 5.0,
            **overrides,
        }
        return MqttSettings(**fields)  # type: ignore[arg-type]

    def mqtt_section(self, identity: BrokerIdentity | str) -> MqttSection:
        """A config [mqtt] section for this broker with `identity`'s certificate files."""
        if self._pki is None:
            return MqttSection(host=self.host, port=self._port, insecure_plaintext=True)
        files = self._pki.client_files(identity)
        return MqttSection(
            host=self.host,
            port=self._port,
            ca_file=str(files.ca_file),
            cert_file=str(files.cert_file),
            key_file=str(files.key_file),
        )

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int | None:
        """The PID of the running broker, or None when it is not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def config_path(self) -> Path:
        return self._workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self._workdir / "mosquitto.log"

    @property
    def _output_path(self) -> Path:
        # What mosquitto prints before its own logging is set up (config errors, bind failures).
        return self._workdir / "mosquitto.out"

    @property
    def acl_path(self) -> Path:
        return self._workdir / "acl"

    def config_text(self) -> str:
        """The generated configuration (edge/core/broker_acl.py says why each line is there)."""
        tls = None
        if self._pki is not None:
            server = self._pki.server_files(("localhost", self.host))
            tls = BrokerTlsFiles(str(server.ca_file), str(server.cert_file), str(server.key_file))
        extra = list(self._extra_config)
        if os.geteuid() == 0:
            # As root mosquitto drops to user `mosquitto` and then cannot read files in our workdir.
            extra.insert(0, "user root")
        return mosquitto_config_text(
            BrokerSettings(
                listener=BrokerListener(self._port, "127.0.0.1", tls),
                acl_file=None if self._plaintext else str(self.acl_path),
                persistence_location=str(self._workdir),
                log_lines=(
                    f"log_dest file {self.log_path}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    "connection_messages true",
                    "log_timestamp_format %Y-%m-%dT%H:%M:%S",
                ),
                password_file=None if self._password_file is None else str(self._password_file),
                extra=tuple(extra),
            )
        )

    def start(self, timeout_s: float = 10.0) -> None:
        """Spawn the broker; return once its port accepts TCP, else raise with its log."""
        if self.running:
            raise MosquittoError(
                f"mosquitto on port {self._port} is already running (pid {self.pid})"
            )
        self._reap()
        binary = find_mosquitto()
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        if not self._plaintext:
            extra = "".join(f"{line}\n" for line in self._acl_extra)
            self.acl_path.write_text(extra + acl_text(self._chains))
        with self._output_path.open("ab") as output:
            self._proc = subprocess.Popen(
                [str(binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in a terminal is ours to handle, not its
            )
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise MosquittoError(
                    f"mosquitto exited with code {code} while starting on port {self._port} "
                    f"(config {self.config_path}):\n{self.log_tail()}"
                )
            if self._accepts_tcp():
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise MosquittoError(
                    f"mosquitto did not accept TCP on 127.0.0.1:{self._port} "
                    f"within {timeout_s} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the broker by its own PID, as a crash or power cut would, and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self._proc = None

    def stop(self) -> None:
        """SIGTERM the broker (it saves its state), SIGKILL it after 5 s, and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        proc.wait()
        self._proc = None

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The last `chars` characters of the broker's output and log, for error messages."""
        parts = []
        for path in (self._output_path, self.log_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
                if text.strip():
                    parts.append(f"--- {path} ---\n{text[-chars:]}")
        return "\n".join(parts) or "(mosquitto wrote no output)"

    def _accepts_tcp(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self._port), timeout=0.2):
                return True
        except OSError:
            return False

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> MosquittoProcess:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        kind = "plain" if self._plaintext else "TLS"
        return f"<MosquittoProcess {kind} 127.0.0.1:{self._port} {state} in {self._workdir}>"
