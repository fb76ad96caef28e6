"""Applies the roster bundles and campaigns the bridge publishes, keeping the last good set on any error.

Campaigns arrive signed by the bridge for this gateway's campaigns topic (edge/core/signed.py).
A roster arrives as a signed bundle sealed to this gateway (edge/core/bundle.py). It is verified and
opened off the event loop, the resolver for the new roster is built there too, and only then is it
swapped in, so a rejected bundle changes nothing. A delta that changes no key (preferences, tiers,
kinds, segments and visit counts, removals: most deltas once members are enrolled, and the daily
ones) is applied to the resolver in force
instead, O(1) a device, with no EID computed. Rejections are kept for the status topic; a
retained copy of the version in force (`replayed_version`) comes back on every reconnect and is not
one. The roster in force is saved sealed with the gateway's at-rest key (edge/adapters/keystore.py),
never in clear, so the gateway restarts with it while the broker is down.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.adapters.keystore import GatewayKeys, KeystoreError
from edge.adapters.sqlite_store import SqliteGatewayStore
from edge.core import bundle, schedule, signed, wire
from edge.core.pipeline import Pipeline
from edge.core.resolver import EidResolver
from edge.logutil import OnceLogger

_LOGGER = logging.getLogger(__name__)

ROSTER = "roster"
CAMPAIGNS = "campaigns"
MESSAGE_MAX = 300  # characters of a rejection's message kept for the status topic

Roster = dict[str, wire.RosterDevice]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A sync payload the gateway refused: `reason` is a code (bundle.RejectReason, or malformed...)."""

    what: Literal["roster", "campaigns"]
    reason: str
    version: int | None  # the version it claimed, where it could be read
    at: float  # wall clock, Unix s
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "reason": self.reason,
            "version": self.version,
            "at": round(self.at, 3),
            "message": self.message[:MESSAGE_MAX],
        }


@dataclass(frozen=True, slots=True)
class _Opened:
    version: int
    kind: str
    roster: Roster
    resolver: EidResolver | None  # None: apply `in_place` to the resolver in force
    in_place: bundle.RosterDelta | None = None


def keeps_every_key(current: Roster, change: bundle.RosterChange) -> bool:
    """Whether `change` is a delta that adds no device and gives none a new key or exponent: the
    resolver in force can take it as it is (`EidResolver.update`, `remove`)."""
    if not isinstance(change, bundle.RosterDelta) or change.add:
        return False
    for device in change.rotate:
        old = current.get(device.ref)
        if old is None or (old.identity_key, old.exponent) != (
            device.identity_key,
            device.exponent,
        ):
            return False
    return True


def freeze_long_lived() -> None:
    """Collect garbage once, then exempt every live object from later collections (gc.freeze).

    A roster of 100k devices is hundreds of thousands of objects the garbage collector tracks, all
    alive until the next full roster; each full (oldest-generation) collection walks them all, ~32 ms
    at 100k (benchmarks/resolver_bench.py, `gc_full_collect_ms_100k`), at whatever moment it falls,
    advert path included. Frozen, they are skipped. Called after a full roster is swapped in, where
    the one pause is expected and rare (deltas add few objects). gc.unfreeze first: what the last
    freeze kept, the previous roster included, may be garbage now, and only a collection that sees
    it can free its cycles. Reference counting frees frozen objects as usual.
    """
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _LOGGER.debug(
        "collected garbage and froze %d long-lived objects in %.0f ms",
        gc.get_freeze_count(),
        (time.perf_counter() - started) * 1000,
    )


class SyncApplier:
    """Verifies, persists (sealed) and applies roster bundles and campaigns; only newer versions."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: SqliteGatewayStore,
        address: wire.GatewayAddress,
        skew_windows: int,
        radio_now: Callable[[], float],
        keys: GatewayKeys,
        trusted_signers: Sequence[Ed25519PublicKey],
        wall_clock: Callable[[], float] = time.time,
        *,
        retention_s: float = math.inf,
    ) -> None:
        self._pipeline = pipeline
        self._store = store
        self._address = address
        self._skew_windows = skew_windows
        self._radio_now = radio_now
        self._keys = keys
        self._trusted = tuple(trusted_signers)
        self._wall = wall_clock
        self._retention_s = retention_s
        self._roster: Roster = {}
        self._warnings = OnceLogger(_LOGGER)
        self._told_longer: list[str] = []  # campaigns with cooldowns beyond the retention, told
        self.roster_version = 0
        self.campaigns_version = 0
        self.last_rejection: Rejection | None = None
        self.rejections = 0
        self.synced = asyncio.Event()  # set once a roster and campaigns are in force

    @property
    def _sealed_purpose(self) -> str:
        a = self._address
        return f"roster/{a.chain}/{a.store}/{a.gateway}"

    def roster_devices(self) -> tuple[wire.RosterDevice, ...]:
        """The devices of the roster in force, under this store's pseudonyms."""
        return tuple(self._roster.values())

    def status_json(self) -> dict[str, Any]:
        """The `sync` object of the status payload."""
        return {
            "key_id": self._keys.key_id,
            "rejections": self.rejections,
            "last_rejection": self.last_rejection.to_json() if self.last_rejection else None,
        }

    async def restore(self) -> None:
        """Apply what was saved before a restart, so the gateway works with the broker down."""
        sealed = await self._store.load_sync(ROSTER)
        if sealed is not None:
            try:
                version, roster, resolver = await asyncio.to_thread(
                    self._unseal_roster, sealed, self._radio_now()
                )
            except (KeystoreError, wire.WireError) as exc:
                # Not fatal: the bridge's next full bundle replaces it (a retained delta is refused
                # with base_mismatch, the status says so, and the bridge sends a full one).
                _LOGGER.error("saved roster not restored, waiting for the bridge's: %s", exc)
            else:
                self._swap(version, roster, resolver)
                _LOGGER.info("saved roster v%d restored: %d devices", version, len(roster))
                freeze_long_lived()
        campaigns = await self._store.load_sync(CAMPAIGNS)
        if campaigns is not None:
            await self.apply_campaigns(campaigns, "saved campaigns", persist=False)

    async def apply_roster(self, data: bytes, where: str) -> bool:
        """Apply a roster bundle; False (and a rejection, unless routine) if it must not apply."""
        if not data:
            _LOGGER.debug("%s: empty payload (retained bundle cleared by the bridge)", where)
            return False
        current = self._roster
        try:
            opened = await asyncio.to_thread(
                self._open, data, where, self.roster_version, current, self._radio_now()
            )
        except bundle.BundleRejected as exc:
            if exc.reason is bundle.RejectReason.REPLAYED_VERSION:
                _LOGGER.debug("%s", exc.message)  # the retained copy of what is in force
                return False
            return self._reject("roster", exc.reason.value, exc.version, exc.message)
        sealed = await asyncio.to_thread(self._seal_roster, opened.version, opened.roster)
        await self._store.save_sync(ROSTER, opened.version, sealed)
        resolver = opened.resolver
        if resolver is None and self._roster is not current:  # cannot happen: one at a time
            resolver = await asyncio.to_thread(self._build, opened.roster, self._radio_now())
        in_place = resolver is None
        if resolver is None:
            assert opened.in_place is not None
            resolver = self._pipeline.resolver
            resolver.remove(opened.in_place.remove)
            resolver.update(opened.in_place.rotate)
        self._swap(opened.version, opened.roster, resolver)
        _LOGGER.info(
            "roster v%d applied (%s bundle%s): %d devices",
            opened.version,
            opened.kind,
            ", no key changed: in place" if in_place else "",
            len(opened.roster),
        )
        if opened.kind == "full":
            freeze_long_lived()
        return True

    def _open(
        self, data: bytes, where: str, current_version: int, current: Roster, now_s: float
    ) -> _Opened:
        """Verify, decrypt, apply and index a bundle (worker thread; BundleRejected if refused)."""
        opened = bundle.open_bundle(
            data,
            gateway_private_key=self._keys.gateway_key,
            trusted_signer_public_keys=self._trusted,
            expected_chain=self._address.chain,
            expected_store=self._address.store,
            expected_gateway=self._address.gateway,
            current_version=current_version,
            where=where,
        )
        roster = opened.roster_after(current)
        if current_version and keeps_every_key(current, opened.change):
            assert isinstance(opened.change, bundle.RosterDelta)
            return _Opened(opened.version, opened.kind, roster, None, opened.change)
        return _Opened(opened.version, opened.kind, roster, self._build(roster, now_s))

    def _build(self, roster: Roster, now_s: float) -> EidResolver:
        # Building the table costs ~10 µs per device: off the event loop, swapped in after.
        return EidResolver(tuple(roster.values()), now_s, self._skew_windows)

    def _seal_roster(self, version: int, roster: Roster) -> bytes:
        devices = tuple(roster[ref] for ref in sorted(roster))
        plaintext = wire.encode(wire.RosterSync(self._address.store, version, devices))
        return self._keys.sealer.seal(self._sealed_purpose, plaintext)

    def _unseal_roster(self, sealed: bytes, now_s: float) -> tuple[int, Roster, EidResolver]:
        plaintext = self._keys.sealer.open(self._sealed_purpose, sealed, "the saved roster")
        saved = wire.decode_as(plaintext, wire.RosterSync, "the saved roster")
        roster = {d.ref: d for d in saved.devices}
        return saved.version, roster, EidResolver(saved.devices, now_s, self._skew_windows)

    def _swap(self, version: int, roster: Roster, resolver: EidResolver) -> None:
        self._pipeline.resolver = resolver
        self._roster = roster
        self.roster_version = version
        self._check_synced()

    async def apply_campaigns(self, data: bytes, where: str, *, persist: bool = True) -> bool:
        """Apply a signed campaigns set newer than the one in force; False (and a rejection, unless
        routine) otherwise. Only a trusted bridge key's signature for this gateway's campaigns topic
        counts: an unsigned or forged set, whatever version it claims, changes nothing."""
        if not data:
            _LOGGER.debug("%s: empty payload (retained campaigns cleared by the bridge)", where)
            return False
        try:
            verified = signed.verify(
                data, wire.campaigns_topic(self._address), self._trusted, where
            )
        except signed.SignedRejected as exc:
            return self._reject("campaigns", exc.reason.value, None, exc.message)
        try:
            sync = wire.decode_as(verified.payload, wire.CampaignSync, where)
        except wire.WireError as exc:
            return self._reject("campaigns", "malformed", None, exc.reason)
        if sync.store != self._address.store:
            return self._reject(
                "campaigns",
                "wrong_store",
                sync.version,
                f"{where}: campaigns are for store {sync.store!r}, this gateway is in "
                f"{self._address.store!r}",
            )
        if sync.version == self.campaigns_version:
            _LOGGER.debug("%s: campaigns v%d are in force already", where, sync.version)
            return False  # the retained copy of what is in force comes back on every reconnect
        if sync.version < self.campaigns_version:
            return self._reject(
                "campaigns",
                "stale_version",
                sync.version,
                f"{where}: campaigns v{sync.version} are older than v{self.campaigns_version} in "
                "force (a replay)",
            )
        try:
            # Schedules, local days and budgets are read in the store's zone: never in UTC instead.
            zone = schedule.time_zone(sync.timezone)
        except schedule.UnknownTimeZone as exc:
            return self._reject(
                "campaigns",
                "unknown_timezone",
                sync.version,
                f"{where}: field $.timezone: {exc.reason}",
            )
        if persist:
            # Saved signed: the restore after a restart verifies it again.
            await self._store.save_sync(CAMPAIGNS, sync.version, data)
        self._pipeline.offers.replace(sync, zone)
        self.campaigns_version = sync.version
        self._check_synced()
        _LOGGER.info(
            "campaigns version %d applied: %d campaigns, time zone %s",
            sync.version,
            len(sync.campaigns),
            sync.timezone,
        )
        self._warn_cooldowns_beyond_retention(sync)
        unknown = self._pipeline.offers.unknown_terms
        if unknown:
            self._warnings.warning(
                f"unknown-terms:{','.join(unknown)}",
                "campaigns v%d name interests or promotion types missing from their own "
                "interest_terms / promotion_terms: %s; no member's choice matches them (a bridge "
                "bug: check its [preferences] vocabulary)",
                sync.version,
                ", ".join(unknown),
            )
        return True

    def _warn_cooldowns_beyond_retention(self, sync: wire.CampaignSync) -> None:
        """Say once per cooldown which cooldowns outlast the gateway's offer history."""
        retention_s = self._retention_s
        if sync.member_cooldown_s > retention_s:
            # Only the gateway spaces a member's offers of different campaigns.
            self._warnings.warning(
                f"member-cooldown:{sync.member_cooldown_s}",
                "the member cooldown is %g s, longer than this gateway keeps offer history "
                "([privacy] retention_s = %g s): it holds for that long only",
                sync.member_cooldown_s,
                retention_s,
            )
        longer = sorted(c.id for c in sync.campaigns if c.cooldown_s > retention_s)
        if longer and longer != self._told_longer:
            self._told_longer = longer
            _LOGGER.info(
                "campaign cooldowns longer than this gateway keeps offer history ([privacy] "
                "retention_s = %g s): %s; the gateway holds them that long, the bridge beyond "
                "(it suppresses repeats within a campaign's cooldown, at any store)",
                retention_s,
                ", ".join(longer),
            )

    def _check_synced(self) -> None:
        if self.roster_version and self.campaigns_version:
            self.synced.set()

    def _reject(
        self, what: Literal["roster", "campaigns"], reason: str, version: int | None, message: str
    ) -> bool:
        self.last_rejection = Rejection(what, reason, version, self._wall(), message)
        self.rejections += 1
        self._warnings.warning(
            f"{what}:{reason}",
            "%s rejected [%s], keeping the last good one: %s",
            what,
            reason,
            message,
        )
        return False
