"""What the bridge lets count: the business rules it checks before recording or delivering (issue 9).

A gateway's events are evidence, not commands. The bridge checks, here, as pure functions of facts the
records adapter and the bridge gather:

- **Who sent it** (`check_gateway`): only a gateway registered for the store its topic names. The
  event is then neither recorded nor acknowledged: the gateway keeps it and resends it, so a
  gateway registered later (`cloud-bridge add-gateway`, read at the next sync) still gets its
  backlog recorded, while a forger's events are never recorded.
- **When** (`check_times`): `ts` and `detected_at` within a tolerance of the bridge's clock. An
  event outside it is quarantined: kept in the quarantine table with the reason, acknowledged (a
  resend would be quarantined again), never counted as a visit or an offer.
- **Whether a visit's end holds together** (`check_visit_end`, `check_visit_end_owner`): it ends
  after it began, its duration_s is ts - entered_at (within VISIT_END_TOLERANCE_S), no visit lasts
  more than MAX_VISIT_S, and the visit it closes, once recorded, is the same member's, device's and
  store's. An end that does not is forged (or a gateway's bug): kept aside, acknowledged, counted
  as `forged`, never recorded as an end.
- **Whether an offer may reach the shopper** (`check_offer`): the campaign exists, is active at
  the store, serves the member's tier *as the loyalty records hold it* (not the tier the event
  claims), the member consents, the campaign serves what the member asked for *now* (interests and
  promotion type, edge/core/preferences.py: the gateway may hold an older roster), neither the
  campaign's cooldown nor the member cooldown is broken anywhere in the chain, and the member's
  caps (at most `per_day` offers in any 24 h, `per_week` in any 7 days) hold across every store,
  by radio time and by when the bridge delivers them.
  A refused offer is recorded as suppressed with the reason. An offer admitted but not yet
  confirmed by the app when the member states new preferences is held to them too
  (`check_undelivered`): it is not sent (again) if they rule it out.

No clock, no I/O: `now_s` and every fact come in as arguments.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from edge.core import wire
from edge.core.preferences import (
    DAY_S,
    WEEK_S,
    busiest_window,
    campaign_matches,
    under_caps,
    wants_offers,
)

DEFAULT_MAX_FUTURE_S = 300.0  # a gateway clock this far ahead of the bridge's is wrong
DEFAULT_MAX_AGE_S = 30 * 86400.0  # older than any gateway keeps events (retention) by default
DEFAULT_OFFER_VALIDITY_S = 3600.0  # how long an unconfirmed offer is resent
#: How far a visit_end's duration_s may be from ts - entered_at: the gateway rounds it to 1 ms.
VISIT_END_TOLERANCE_S = 1.0
#: The longest visit believed: a day. A phone left in the store for days is not a shopper.
MAX_VISIT_S = 86400.0


class GatewayRefusal(StrEnum):
    """Why an event's sender is not believed."""

    OTHER_CHAIN = "other_chain"  # a chain this bridge does not serve
    UNREGISTERED = "unregistered_gateway"  # no gateway of that id is registered
    WRONG_STORE = "wrong_store"  # that gateway id is registered, but for another store


class QuarantineReason(StrEnum):
    """Why an event's timestamps are not believed."""

    TS_FUTURE = "ts_future"
    TS_TOO_OLD = "ts_too_old"
    DETECTED_FUTURE = "detected_at_future"
    DETECTED_TOO_OLD = "detected_at_too_old"


class ForgeryReason(StrEnum):
    """Why a visit's end is not believed: it contradicts itself or the visit it closes."""

    ENDS_BEFORE_ENTRY = "visit_end_before_entry"  # entered_at after ts
    WRONG_DURATION = "visit_end_wrong_duration"  # duration_s is not ts - entered_at
    TOO_LONG = "visit_end_too_long"  # longer than MAX_VISIT_S
    OTHER_VISITOR = "visit_end_other_visitor"  # its visit is another member's, device's or store's


class OfferRefusal(StrEnum):
    """Why an offer a gateway triggered is not delivered (the offer is recorded suppressed)."""

    UNKNOWN_CAMPAIGN = "unknown_campaign"
    CAMPAIGN_INACTIVE = "campaign_inactive"
    NOT_AT_STORE = "campaign_not_at_store"
    UNKNOWN_MEMBER = "unknown_member"
    NO_CONSENT = "no_consent"
    TIER_NOT_SERVED = "tier_not_served"
    CAMPAIGN_COOLDOWN = "campaign_cooldown"
    MEMBER_COOLDOWN = "member_cooldown"
    PREFERENCES = "preferences"  # not what the member asked for (interests, promotion type)
    FREQUENCY = "frequency"  # over the member's per_day or per_week (0: no offers at all)


@dataclass(frozen=True, slots=True)
class TimePolicy:
    """How far from the bridge's clock an event's times may be ([bridge] event_max_*)."""

    max_future_s: float = DEFAULT_MAX_FUTURE_S
    max_age_s: float = DEFAULT_MAX_AGE_S


def check_gateway(
    address: wire.GatewayAddress, chain: str, registered: Collection[tuple[str, str]]
) -> GatewayRefusal | None:
    """None if `address` (from the topic) is a gateway registered for its store, else why not.

    `registered` holds (store, gateway) pairs.
    """
    if address.chain != chain:
        return GatewayRefusal.OTHER_CHAIN
    if (address.store, address.gateway) in registered:
        return None
    if any(gateway == address.gateway for _, gateway in registered):
        return GatewayRefusal.WRONG_STORE
    return GatewayRefusal.UNREGISTERED


def check_times(
    ts: float, detected_at: float, now_s: float, policy: TimePolicy
) -> QuarantineReason | None:
    """None if both times are within the policy's tolerance of `now_s`, else the first that is not."""
    for value, future, old in (
        (ts, QuarantineReason.TS_FUTURE, QuarantineReason.TS_TOO_OLD),
        (detected_at, QuarantineReason.DETECTED_FUTURE, QuarantineReason.DETECTED_TOO_OLD),
    ):
        if not math.isfinite(value) or value > now_s + policy.max_future_s:
            return future
        if value < now_s - policy.max_age_s:
            return old
    return None


def check_event_times(
    event: wire.Event, now_s: float, policy: TimePolicy
) -> QuarantineReason | None:
    """`check_times` on an event's `ts` and `detected_at`."""
    return check_times(event.ts, event.detected_at, now_s, policy)


def check_visit_end(end: wire.VisitEnd) -> ForgeryReason | None:
    """None if the end's own times hold together, else what is wrong with them."""
    if end.entered_at > end.ts:
        return ForgeryReason.ENDS_BEFORE_ENTRY
    if abs(end.duration_s - (end.ts - end.entered_at)) > VISIT_END_TOLERANCE_S:
        return ForgeryReason.WRONG_DURATION
    if end.duration_s > MAX_VISIT_S:
        return ForgeryReason.TOO_LONG
    return None


@dataclass(frozen=True, slots=True)
class Visitor:
    """Whose a visit (or its end) is, as the loyalty records hold it and the topic names the store."""

    member: str
    device: str
    store: str


def check_visit_end_owner(end: Visitor, visit: Visitor | None) -> ForgeryReason | None:
    """None if the end may close the visit: the same member, device and store, or the visit not
    recorded yet (it may come later, on another connection; it is checked then)."""
    if visit is None or visit == end:
        return None
    return ForgeryReason.OTHER_VISITOR


@dataclass(frozen=True, slots=True)
class CampaignFacts:
    """A campaign as the loyalty records hold it."""

    id: str
    store: str | None  # None: every store
    active: bool
    tiers: tuple[str, ...]
    cooldown_s: float
    validity_s: float = DEFAULT_OFFER_VALIDITY_S
    promotion_type: str | None = None
    interests: tuple[str, ...] = ()  # none: a general offer
    #: Whether it runs at the offer's store by its stores and store tags (issue 11); None: only
    #: `store` says.
    at_store: bool | None = None


@dataclass(frozen=True, slots=True)
class MemberFacts:
    """A member as the loyalty records hold them."""

    tier: str
    consent: bool


@dataclass(frozen=True, slots=True)
class OfferFacts:
    """What the bridge knows when a gateway triggers an offer.

    The gaps are radio-time distances (either side: a gateway may upload late) from this trigger to
    the nearest other offer to the same member, at any store, that was not itself suppressed; None
    if there is none.
    """

    store: str
    ts: float
    campaign: CampaignFacts | None
    member: MemberFacts | None
    member_cooldown_s: float
    same_campaign_gap_s: float | None
    any_offer_gap_s: float | None
    # The member's preferences as the records hold them now (None: none stated), the chain's
    # term → bit maps they are masks over, and the radio times of the member's other offers
    # within 7 days either side that were not suppressed (what the caps count).
    prefs: wire.MemberPrefs | None = None
    interest_bits: Mapping[str, int] = field(default_factory=dict)
    promotion_bits: Mapping[str, int] = field(default_factory=dict)
    other_offer_ts: tuple[float, ...] = ()
    # When the bridge would deliver this offer (its clock, now) and when it delivered the member's
    # other unsuppressed offers within 7 days of that: the caps hold for what the shopper receives
    # too, not only by radio time (a late upload, or a gateway's clock days behind, would bring
    # offers days apart by radio time to the shopper together). None: not checked.
    issued_at: float | None = None
    other_issued_at: tuple[float, ...] = ()


def check_offer(facts: OfferFacts) -> OfferRefusal | None:
    """None if the offer may be delivered, else why it must not (checked in this order)."""
    campaign, member = facts.campaign, facts.member
    if campaign is None:
        return OfferRefusal.UNKNOWN_CAMPAIGN
    if not campaign.active:
        return OfferRefusal.CAMPAIGN_INACTIVE
    if campaign.at_store is False or (campaign.store is not None and campaign.store != facts.store):
        return OfferRefusal.NOT_AT_STORE
    if member is None:
        return OfferRefusal.UNKNOWN_MEMBER
    if not member.consent:
        return OfferRefusal.NO_CONSENT
    if member.tier not in campaign.tiers:
        return OfferRefusal.TIER_NOT_SERVED
    if not campaign_matches(campaign, facts.prefs, facts.interest_bits, facts.promotion_bits):
        return OfferRefusal.PREFERENCES
    if facts.same_campaign_gap_s is not None and facts.same_campaign_gap_s < campaign.cooldown_s:
        return OfferRefusal.CAMPAIGN_COOLDOWN
    if facts.any_offer_gap_s is not None and facts.any_offer_gap_s < facts.member_cooldown_s:
        return OfferRefusal.MEMBER_COOLDOWN
    if not within_caps(facts.prefs, facts.ts, facts.other_offer_ts):
        return OfferRefusal.FREQUENCY
    if facts.issued_at is not None and not within_caps(
        facts.prefs, facts.issued_at, facts.other_issued_at
    ):
        return OfferRefusal.FREQUENCY
    return None


@dataclass(frozen=True, slots=True)
class ServedTerms:
    """What a campaign serves (edge/core/preferences.py's ServesTerms), as the records hold it."""

    promotion_type: str | None
    interests: tuple[str, ...]


def check_undelivered(
    prefs: wire.MemberPrefs | None,
    campaign: ServedTerms,
    interest_bits: Mapping[str, int],
    promotion_bits: Mapping[str, int],
) -> OfferRefusal | None:
    """None if an offer admitted earlier and not yet confirmed by the app may still go to a member
    who now states `prefs`, else why not (as `check_offer`: what they ask for, then "no offers";
    the caps it was counted against then stand)."""
    if not campaign_matches(campaign, prefs, interest_bits, promotion_bits):
        return OfferRefusal.PREFERENCES
    if not wants_offers(prefs):
        return OfferRefusal.FREQUENCY
    return None


def within_caps(
    prefs: wire.MemberPrefs | None, ts: float, other_offer_ts: Collection[float]
) -> bool:
    """Whether an offer at `ts` keeps the member within per_day in any 24 h and per_week in any
    7 days, counting their other offers (radio time, any store, either side of `ts`)."""
    if prefs is None:
        return True
    day = busiest_window(other_offer_ts, ts, DAY_S)
    return under_caps(prefs, day, busiest_window(other_offer_ts, ts, WEEK_S))


def offer_expires_at(issued_at: float, validity_s: float) -> float:
    """Until when an offer the app has not confirmed is resent; recorded expired after."""
    return issued_at + validity_s
