"""A campaign's holdout: the members it keeps as a control group, recognised but never sent the offer.

Deterministic per (campaign, member), on the bridge's real member id: the same member is in or out of
a campaign's holdout at every store, on every bridge instance, and again after a restart, so the
control group is stable and the report can compare it with the members who were sent the offer
(issue 11). A different campaign draws a different, independent group.
"""

from __future__ import annotations

import hashlib

_DOMAIN = b"threshold-holdout:"
_SCALE = 2**64


def holdout_point(campaign: str, member: str) -> float:
    """Where (campaign, member) falls in [0, 100): the first 8 bytes of a SHA-256, as a share."""
    digest = hashlib.sha256(_DOMAIN + campaign.encode() + b":" + member.encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE * 100


def in_holdout(campaign: str, member: str, pct: float) -> bool:
    """Whether `member` is in the holdout of a campaign holding out `pct` percent (0..100) of its
    members. 0 (or anything not above it, NaN included) holds out nobody, 100 everybody."""
    if not pct > 0:
        return False
    return holdout_point(campaign, member) < pct
