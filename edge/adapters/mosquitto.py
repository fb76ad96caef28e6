"""A private Mosquitto broker run as a child process, for tests and the demo.

It listens on loopback only, persists its state in its own work directory (saved every second, so
a `kill()` loses at most the last second, see shared/RECIPES.md) and is killed or restarted by its
own PID for fault tests. A restart reuses the same port, so clients reconnect to the same address.
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

from edge.errors import EdgeError

_FALLBACK_BINARY = Path("/usr/sbin/mosquitto")
_LOG_TAIL_CHARS = 2000
_STOP_GRACE_S = 5.0


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
        password_file: Path | None = None,
        extra_config: Sequence[str] = (),
    ) -> None:
        self._workdir = workdir
        self._port = port if port is not None else free_loopback_port()
        self._password_file = password_file
        self._extra_config = tuple(extra_config)
        self._proc: subprocess.Popen[bytes] | None = None

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

    def config_text(self) -> str:
        """The generated configuration (see shared/RECIPES.md for why each line is there)."""
        lines = [
            f"listener {self._port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self._workdir}/",
            # The default of 1800 s means a kill -9 loses the last half hour of queued messages.
            "autosave_interval 1",
            # Without it the broker's small writes (PUBACKs, deliveries) wait on Nagle's algorithm
            # and the peer's delayed ACK: about 40 ms per hop on Linux.
            "set_tcp_nodelay true",
            # The default of 1000 per client silently drops the rest.
            "max_queued_messages 100000",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self._password_file is not None:
            lines += ["allow_anonymous false", f"password_file {self._password_file}"]
        else:
            lines.append("allow_anonymous true")
        if os.geteuid() == 0:
            # As root mosquitto drops to user `mosquitto` and then cannot read files in our workdir.
            lines.append("user root")
        lines += self._extra_config
        return "\n".join(lines) + "\n"

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
        return f"<MosquittoProcess 127.0.0.1:{self._port} {state} in {self._workdir}>"
