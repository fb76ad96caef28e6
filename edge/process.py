"""How a Threshold process ends: its exit codes, and the last-resort exit when a thread lingers.

Both `edge-gateway run` and `cloud-bridge run` end with one of these codes (README, "Exit codes").
systemd restarts on every non-zero code except CONFIG (`RestartPreventExitStatus=2` in the units):
restarting cannot fix a file a person must edit.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

from edge.errors import AlreadyRunning, ConfigError, EdgeError, StorageError

_LOGGER = logging.getLogger(__name__)

#: How long the threads still running after `main()` returned may take to end before the hard exit.
THREAD_GRACE_S = 5.0


class ExitCode(enum.IntEnum):
    OK = 0  # stopped on request (SIGTERM, SIGINT)
    INTERNAL = 1  # an unexpected exception: a bug, its traceback is in the log
    CONFIG = 2  # config, keys, credentials the broker refused: a person must act, no restart
    RUNTIME = 3  # a loop gave up (the radio after every recovery step, the broker...): restart
    STORAGE = 4  # the database failed under the running process (deleted, read-only, corrupt, I/O)


def exit_for_good(code: int, grace_s: float = THREAD_GRACE_S) -> None:
    """Exit with `code`; if a non-daemon thread (a database worker stuck in a system call) is still
    running after `grace_s`, say which and exit hard, so a hung thread never keeps the process up."""
    deadline = time.monotonic() + grace_s
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
    lingering = [
        t.name
        for t in threading.enumerate()
        if t is not threading.current_thread() and not t.daemon and t.is_alive()
    ]
    if lingering:
        _LOGGER.error(
            "threads still running %.0f s after shutdown (%s): exiting hard with code %d",
            grace_s,
            ", ".join(sorted(lingering)),
            code,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a process stops: the loop that failed, the exit code, one line for the journal."""

    loop: str
    code: ExitCode
    reason: str

    def __str__(self) -> str:
        return f"{self.loop}: {self.reason}"


def classify(
    loop: str, exc: BaseException, runtime: tuple[type[BaseException], ...] = ()
) -> Failure:
    """The exit code and reason for `exc` ending `loop` (the first leaf of an exception group)."""
    from edge.adapters.keystore import KeystoreError
    from edge.adapters.mqtt import MqttAuthError, MqttConfigError
    from edge.adapters.sqlite_watch import storage_failure

    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    storage = storage_failure(exc)
    if storage is not None:
        return Failure(loop, ExitCode.STORAGE, str(storage))
    if isinstance(exc, StorageError):
        return Failure(loop, ExitCode.STORAGE, str(exc))
    if isinstance(
        exc, (AlreadyRunning, ConfigError, KeystoreError, MqttAuthError, MqttConfigError)
    ):
        return Failure(loop, ExitCode.CONFIG, str(exc))
    if isinstance(exc, (EdgeError, *runtime)):
        return Failure(loop, ExitCode.RUNTIME, str(exc))
    return Failure(loop, ExitCode.INTERNAL, f"unexpected {type(exc).__name__}: {exc}")
