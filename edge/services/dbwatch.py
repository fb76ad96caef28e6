"""The database loop: the connection still answers, and the files under it are still ours.

Every `interval_s` it asks the connection a trivial question (`probe`, through the same worker
thread every other query uses: a wedged worker shows as this loop stalling), then looks at the files
(edge/adapters/sqlite_watch.py). Every `deep_every_s`, or less often if the check is slow (it never
takes more than 2% of the time), every page is read back from disk. A problem ends the loop with
StorageError, and with it the process (exit code 4); systemd restarts it, and at start a missing,
read-only or corrupt database is refused or set aside.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from edge.adapters.sqlite_watch import DatabaseWatch
from edge.core.liveness import Liveness
from edge.errors import StorageError

CHECK_EVERY_S = 2.0
DEEP_CHECK_EVERY_S = 15.0
DEEP_CHECK_SHARE = 50  # the deep check waits at least this many times its own duration


async def watch_database(
    watch: DatabaseWatch,
    probe: Callable[[], Awaitable[object]],
    liveness: Liveness,
    loop: str = "database",
    interval_s: float = CHECK_EVERY_S,
    deep_every_s: float = DEEP_CHECK_EVERY_S,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Check until cancelled; raise StorageError saying what happened to the database."""
    next_deep = monotonic() + deep_every_s
    while True:
        liveness.idle(loop, monotonic())
        await asyncio.sleep(interval_s)
        liveness.busy(loop, monotonic())
        await probe()
        problem = await asyncio.to_thread(watch.check_files)
        if problem is None and monotonic() >= next_deep:
            started = monotonic()
            problem = await asyncio.to_thread(watch.check_pages)
            took = monotonic() - started
            next_deep = monotonic() + max(deep_every_s, DEEP_CHECK_SHARE * took)
        if problem is not None:
            raise StorageError(problem)
