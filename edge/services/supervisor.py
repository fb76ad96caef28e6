"""Runs one long-lived service (the gateway, the bridge) until a signal stops it or a loop fails.

Either way it ends the same: the service has said goodbye to the broker (a retained "offline", since
the clean DISCONNECT of a stop suppresses the will: on a stop here, on a failure in the service's own
loop guard, before its MQTT loop is cancelled), its loops are cancelled, its database closed, each
step within `close_timeout_s`; what does not end in time is left to edge/process.py's hard exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any, Protocol

from edge.adapters.sdnotify import SdNotifier
from edge.process import ExitCode, Failure, classify

_LOGGER = logging.getLogger(__name__)


class Service(Protocol):
    """What the supervisor needs of a service."""

    #: Why it stops, once one of its loops failed (the first failure), else None.
    failure: Failure | None
    notifier: SdNotifier

    async def run(self) -> None: ...

    async def say_goodbye(self) -> None: ...

    async def close(self) -> None: ...


async def guard_loop(
    service: Service,
    name: str,
    loop: Coroutine[Any, Any, None],
    close_timeout_s: float,
    runtime: tuple[type[BaseException], ...] = (),
) -> None:
    """Run one of `service`'s loops; the first to fail says why the service stops, and says
    goodbye to the broker before the TaskGroup cancels the MQTT loop, whose clean DISCONNECT would
    suppress the will (the retained status must not stay "online")."""
    try:
        await loop
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        if service.failure is None:
            service.failure = failure = classify(name, exc, runtime=runtime)
            if failure.code is ExitCode.INTERNAL:
                _LOGGER.exception("loop %s failed", name)
            _LOGGER.error("stopping: %s", failure)
            service.notifier.stopping(f"failed: {failure}")
            if name != "mqtt":
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(close_timeout_s):
                        await service.say_goodbye()
        raise


async def run_until_stopped(
    name: str,
    service: Service,
    notifier: SdNotifier,
    close_timeout_s: float,
    runtime: tuple[type[BaseException], ...] = (),
) -> Failure | None:
    """Run `service` until SIGTERM/SIGINT (None) or a loop fails (why: the caller exits with its
    code). `runtime`: the service's own errors that a restart may cure (ExitCode.RUNTIME)."""
    task = asyncio.create_task(service.run(), name=name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    failure: Failure | None = None
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            exc = None if task.cancelled() else task.exception()
            failure = service.failure or (
                classify(name, exc, runtime=runtime)
                if exc is not None
                else Failure(name, ExitCode.RUNTIME, "every loop ended")
            )
        else:
            notifier.stopping("stopping on request")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(close_timeout_s):
                await service.say_goodbye()
        for pending in (task, stopper):
            pending.cancel()  # the MQTT loop disconnects gracefully when cancelled
        try:
            async with asyncio.timeout(close_timeout_s):
                await asyncio.wait({task})
        except TimeoutError:
            _LOGGER.error("the %s's loops did not end within %.0f s", name, close_timeout_s)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: classified above, or raised while stopping
        await service.close()
    return failure
