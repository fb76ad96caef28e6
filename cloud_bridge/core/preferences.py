"""Shopper preferences on the bridge (issue 10): the chain's vocabulary, requests, roster masks.

A member states interests (product categories), promotion types and how often they want offers
(`PUT /v1/members/{member}/preferences`, docs/enrollment-api.md). The loyalty records keep the terms
by name, only for members who consent; rosters carry them as `wire.MemberPrefs`, two bit masks over
the chain's vocabulary and two caps, which the campaign sync explains (`interest_terms`,
`promotion_terms`: term i is bit i).

The vocabulary comes from the bridge config (`[preferences]`). Each term gets a bit once, the next
free one, and keeps it for ever: a term dropped from the config is *retired* (the API no longer
accepts it; members who chose it keep it, and the sync still lists it in its place) and gets its bit
back if it returns. So a mask a gateway holds never changes meaning. At most
`wire.MAX_PREFERENCE_TERMS` terms of each kind can ever be named.

Pure: no I/O; the records adapter stores what these functions decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cloud_bridge.core.enrollment import (
    InvalidRequest,
    _json_type,
    _reject_unknown,
    _short,
    check_member_id,
)
from edge.core import wire
from edge.core.preferences import mask_of, term_bits

TermKind = Literal["interest", "promotion"]
TERM_KINDS: tuple[TermKind, ...] = ("interest", "promotion")

DEFAULT_INTERESTS = (
    "womenswear",
    "menswear",
    "kids",
    "shoes",
    "beauty",
    "home",
    "electronics",
    "grocery",
    "sports",
    "outdoor",
)
DEFAULT_PROMOTION_TYPES = ("discount", "points_multiplier", "new_arrivals", "event", "free_gift")

#: The request's field for each kind of term.
REQUEST_FIELD: dict[TermKind, str] = {"interest": "interests", "promotion": "promotion_types"}
PREFERENCE_FIELDS = frozenset(
    {"interests", "promotion_types", "max_offers_per_day", "max_offers_per_week", "no_offers"}
)


class VocabularyError(ValueError):
    """A vocabulary the bridge cannot use; `field` names the config key, `problem` what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


# --- the vocabulary -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    """One term of the chain's vocabulary: its bit for ever, and whether the API accepts it."""

    kind: TermKind
    name: str
    bit: int
    active: bool = True


def check_terms_config(terms: Sequence[str], field: str) -> tuple[str, ...]:
    """The configured terms of one kind, if each is an id and none repeats; else VocabularyError."""
    seen: set[str] = set()
    for i, term in enumerate(terms):
        try:
            wire.check_id(term, f"{field}[{i}]")
        except wire.WireError as exc:
            raise VocabularyError(field, exc.reason) from None
        if term in seen:
            raise VocabularyError(field, f"names {term!r} twice")
        seen.add(term)
    if len(terms) > wire.MAX_PREFERENCE_TERMS:
        raise VocabularyError(
            field, f"names {len(terms)} terms; at most {wire.MAX_PREFERENCE_TERMS}"
        )
    return tuple(terms)


@dataclass(frozen=True, slots=True)
class VocabularyPlan:
    """How the stored terms of one kind follow the config: new terms, and terms whose `active`
    flag changes (retired: dropped from the config; revived: back in it, with their old bit)."""

    add: tuple[Term, ...]
    retire: tuple[str, ...]
    revive: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.add or self.retire or self.revive)


def plan_vocabulary(
    stored: Sequence[Term], kind: TermKind, configured: Sequence[str]
) -> VocabularyPlan:
    """What to store so that exactly `configured` is accepted, no bit is ever reused, and new
    terms get the next free bits in config order; VocabularyError past MAX_PREFERENCE_TERMS."""
    field = f"preferences.{REQUEST_FIELD[kind]}"
    check_terms_config(configured, field)
    mine = {t.name: t for t in stored if t.kind == kind}
    wanted = set(configured)
    next_bit = max((t.bit for t in mine.values()), default=-1) + 1
    add = []
    for name in configured:
        if name not in mine:
            add.append(Term(kind, name, next_bit))
            next_bit += 1
    if next_bit > wire.MAX_PREFERENCE_TERMS:
        raise VocabularyError(
            field,
            f"would make {next_bit} {kind} terms in all (retired ones keep their bits); at most "
            f"{wire.MAX_PREFERENCE_TERMS} can ever be named: put back retired terms instead of "
            "new names",
        )
    return VocabularyPlan(
        tuple(add),
        tuple(sorted(n for n, t in mine.items() if t.active and n not in wanted)),
        tuple(sorted(n for n, t in mine.items() if not t.active and n in wanted)),
    )


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The chain's terms as stored: what the API accepts, and each term's bit."""

    terms: tuple[Term, ...]

    def in_bit_order(self, kind: TermKind) -> tuple[str, ...]:
        """Every term of `kind`, retired ones too, term i being bit i (the campaign sync's lists).

        Bits are handed out in order and never reused, so there are no gaps; a gap (a database
        edited by hand) ends the list there rather than shift later terms onto wrong bits.
        """
        by_bit = {t.bit: t.name for t in self.terms if t.kind == kind}
        names: list[str] = []
        while len(names) in by_bit and len(names) < wire.MAX_PREFERENCE_TERMS:
            names.append(by_bit[len(names)])
        return tuple(names)

    def bits(self, kind: TermKind) -> dict[str, int]:
        """term → bit for `kind` (edge/core/preferences.py's `term_bits`)."""
        return term_bits(self.in_bit_order(kind))

    def accepted(self, kind: TermKind) -> tuple[str, ...]:
        """The terms of `kind` the API accepts now (not retired), in bit order."""
        return tuple(
            t.name for t in sorted(self.terms, key=lambda t: t.bit) if t.kind == kind and t.active
        )

    def mask(self, kind: TermKind, names: Sequence[str]) -> int:
        return mask_of(names, self.bits(kind))


# --- requests -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreferencesRequest:
    """What a member asks for. Empty term lists mean no preference; caps of 0 mean no offers."""

    member: str
    interests: tuple[str, ...]
    promotion_types: tuple[str, ...]
    per_day: int
    per_week: int

    @property
    def no_offers(self) -> bool:
        return self.per_day == 0 or self.per_week == 0


def parse_preferences_request(member: str, body: Mapping[str, Any]) -> PreferencesRequest:
    """Validate a preferences request's JSON object (not yet its terms against the vocabulary:
    `check_request_terms`); raise InvalidRequest naming the field, e.g. `interests[2]`."""
    check_member_id(member)
    _reject_unknown(body, PREFERENCE_FIELDS)
    interests = _term_list(body, "interests")
    promotion_types = _term_list(body, "promotion_types")
    no_offers = body.get("no_offers", False)
    if not isinstance(no_offers, bool):
        raise InvalidRequest("no_offers", f"must be true or false, got {_json_type(no_offers)}")
    caps = [n for n in ("max_offers_per_day", "max_offers_per_week") if n in body]
    if no_offers:
        if caps:
            raise InvalidRequest(
                caps[0],
                'cannot be sent with "no_offers": true; send either "no_offers": true or both '
                "max_offers_per_day and max_offers_per_week",
            )
        return PreferencesRequest(member, interests, promotion_types, 0, 0)
    per_day = _cap(body, "max_offers_per_day", wire.MAX_OFFERS_PER_DAY, "24 h")
    per_week = _cap(body, "max_offers_per_week", wire.MAX_OFFERS_PER_WEEK, "7 days")
    return PreferencesRequest(member, interests, promotion_types, per_day, per_week)


def _term_list(body: Mapping[str, Any], name: str) -> tuple[str, ...]:
    if name not in body:
        raise InvalidRequest(name, "is missing: send a list of terms ([] for no preference)")
    value = body[name]
    if not isinstance(value, list):
        raise InvalidRequest(name, f"must be a list of terms, got {_json_type(value)}")
    if len(value) > wire.MAX_PREFERENCE_TERMS:
        raise InvalidRequest(name, f"has {len(value)} terms; at most {wire.MAX_PREFERENCE_TERMS}")
    seen: dict[str, int] = {}
    for i, term in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(term, str):
            raise InvalidRequest(where, f"must be a term (a string), got {_json_type(term)}")
        if term in seen:
            raise InvalidRequest(
                where, f"repeats {_short(term)} ({name}[{seen[term]}]); send it once"
            )
        seen[term] = i
    return tuple(value)


def _cap(body: Mapping[str, Any], name: str, maximum: int, period: str) -> int:
    if name not in body:
        raise InvalidRequest(
            name,
            f"is missing: send the most offers the member wants in any {period} (0..{maximum}), "
            'or "no_offers": true',
        )
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(name, f"must be an integer 0..{maximum}, got {_json_type(value)}")
    if not 0 <= value <= maximum:
        raise InvalidRequest(
            name, f"must be 0..{maximum} (offers in any {period}), got {_json_type(value)}"
        )
    return value


def check_request_terms(request: PreferencesRequest, vocabulary: Vocabulary) -> PreferencesRequest:
    """`request` if every term is one the chain accepts now; else InvalidRequest naming it."""
    for kind in TERM_KINDS:
        name = REQUEST_FIELD[kind]
        accepted = vocabulary.accepted(kind)
        for i, term in enumerate(getattr(request, name)):
            if term not in accepted:
                known = ", ".join(accepted) or "none configured"
                raise InvalidRequest(
                    f"{name}[{i}]",
                    f"{_short(term)} is not one of the chain's "
                    f"{'interests' if kind == 'interest' else 'promotion types'} ({known})",
                )
    return request


# --- stored preferences ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberPreferences:
    """A member's stated preferences as the loyalty records keep them (terms by name)."""

    member: str
    interests: tuple[str, ...]
    promotion_types: tuple[str, ...]
    per_day: int
    per_week: int
    updated_at: float  # Unix time, seconds: when they last changed

    @property
    def no_offers(self) -> bool:
        return self.per_day == 0 or self.per_week == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "stated": True,
            "interests": list(self.interests),
            "promotion_types": list(self.promotion_types),
            "max_offers_per_day": self.per_day,
            "max_offers_per_week": self.per_week,
            "no_offers": self.no_offers,
            "updated_at": self.updated_at,
        }

    def roster_prefs(self, vocabulary: Vocabulary) -> wire.MemberPrefs:
        """The compact form a roster carries: masks over the vocabulary's bits, and the caps."""
        return wire.MemberPrefs(
            interests=vocabulary.mask("interest", self.interests),
            promotions=vocabulary.mask("promotion", self.promotion_types),
            per_day=self.per_day,
            per_week=self.per_week,
        )


def not_stated(member: str) -> dict[str, Any]:
    """The answer for a member who stated no preferences (or whose were forgotten)."""
    return {"member": member, "stated": False}


def join_terms(terms: Sequence[str]) -> str:
    """Terms as a database column keeps them: comma-separated (ids never hold a comma)."""
    return ",".join(terms)


def split_terms(column: str | None) -> tuple[str, ...]:
    return tuple(t for t in (column or "").split(",") if t)
