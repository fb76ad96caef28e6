"""Applies the roster and campaigns the bridge publishes, keeping the last good set on any error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from edge.adapters.sqlite_store import SqliteGatewayStore
from edge.core import wire
from edge.core.pipeline import Pipeline
from edge.core.resolver import EidResolver

_LOGGER = logging.getLogger(__name__)

ROSTER = "roster"
CAMPAIGNS = "campaigns"


class SyncApplier:
    """Validates, persists and applies sync payloads; older or equal versions are ignored."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: SqliteGatewayStore,
        address: wire.GatewayAddress,
        skew_windows: int,
        radio_now: Callable[[], float],
    ) -> None:
        self._pipeline = pipeline
        self._store = store
        self._address = address
        self._skew_windows = skew_windows
        self._radio_now = radio_now
        self.roster_version = 0
        self.campaigns_version = 0
        self.last_rejection: str | None = None
        self.synced = asyncio.Event()  # set once a roster and campaigns are in force

    async def restore(self) -> None:
        """Apply what was saved before a restart, so the gateway works with the broker down."""
        roster = await self._store.load_sync(ROSTER)
        if roster is not None:
            await self.apply_roster(roster, "saved roster", persist=False)
        campaigns = await self._store.load_sync(CAMPAIGNS)
        if campaigns is not None:
            await self.apply_campaigns(campaigns, "saved campaigns", persist=False)

    async def apply_roster(self, data: bytes, where: str, *, persist: bool = True) -> bool:
        try:
            roster = wire.decode_as(data, wire.RosterSync, where)
        except wire.WireError as exc:
            return self._reject(exc.reason)
        if roster.store != self._address.store:
            return self._reject(f"{where}: roster is for store {roster.store!r}")
        if roster.version <= self.roster_version:
            return False
        # Building the table costs ~10 µs per device; off the event loop, swapped in atomically.
        resolver = await asyncio.to_thread(
            EidResolver, roster.devices, self._radio_now(), self._skew_windows
        )
        if persist:
            await self._store.save_sync(ROSTER, roster.version, data)
        self._pipeline.resolver = resolver
        self.roster_version = roster.version
        self._check_synced()
        _LOGGER.info("roster version %d applied: %d devices", roster.version, len(resolver))
        return True

    async def apply_campaigns(self, data: bytes, where: str, *, persist: bool = True) -> bool:
        try:
            sync = wire.decode_as(data, wire.CampaignSync, where)
        except wire.WireError as exc:
            return self._reject(exc.reason)
        if sync.store != self._address.store:
            return self._reject(f"{where}: campaigns are for store {sync.store!r}")
        if sync.version <= self.campaigns_version:
            return False
        if persist:
            await self._store.save_sync(CAMPAIGNS, sync.version, data)
        self._pipeline.offers.replace(sync)
        self.campaigns_version = sync.version
        self._check_synced()
        _LOGGER.info(
            "campaigns version %d applied: %d campaigns", sync.version, len(sync.campaigns)
        )
        return True

    def _check_synced(self) -> None:
        if self.roster_version and self.campaigns_version:
            self.synced.set()

    def _reject(self, reason: str) -> bool:
        self.last_rejection = reason
        _LOGGER.warning("sync rejected, keeping the last good set: %s", reason)
        return False
