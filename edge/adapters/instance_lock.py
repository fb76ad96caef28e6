"""One process per state directory: a second `edge-gateway run` (or `cloud-bridge run`) on the same
files stops at once instead of fighting the running one over its database.

An installer who runs the gateway by hand beside the service would otherwise replace the service's
WAL under it; the running service would then stop with a storage error (exit 4). The lock is an
advisory `flock` on a file beside the state, released by the kernel when the process ends, however
it ends, so a crashed process never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from edge.errors import AlreadyRunning


@contextlib.contextmanager
def instance_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created 0600) while the block runs; raise AlreadyRunning
    naming the other process when another one holds it."""
    if not path.parent.is_dir():
        # No state there to protect: what opens it next says what is missing.
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise AlreadyRunning(f"{path}: cannot be locked: {exc.strerror}") from None
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise AlreadyRunning(
                f"another {what} (pid {holder}) is running on {path.parent}: stop it first "
                "(`systemctl stop` its service) rather than run two at once"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
