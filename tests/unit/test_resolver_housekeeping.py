"""The pipeline's housekeeping drives the resolver's rollover in bounded slices of radio time."""

from __future__ import annotations

import itertools

from edge.core.offers import OfferEngine
from edge.core.pipeline import RESOLVER_EIDS_PER_STEP, Pipeline
from edge.core.presence import PresenceConfig, PresenceTracker
from edge.core.resolver import EidResolver
from tests.factories import eid_advert, make_device

K = 8
STEP = 1 << K
BOUNDARY = 1_790_000_000 - 1_790_000_000 % STEP + STEP


def test_housekeeping_precomputes_the_next_window_a_slice_at_a_time() -> None:
    devices = [make_device(exponent=K) for _ in range(2500)]
    member = devices[0]
    ids = (f"ev{n}" for n in itertools.count())
    resolver = EidResolver(devices, BOUNDARY - 3)
    pipeline = Pipeline(
        resolver, PresenceTracker(PresenceConfig()), OfferEngine(None), ids.__next__
    )
    pending = [resolver.pending_eids]
    for i in range(100):  # the member at the door, heard 10 times a second across the boundary
        pipeline.feed(eid_advert(member, BOUNDARY - 3 + i * 0.1), wall_s=0.0)
        pending.append(resolver.pending_eids)
    assert pipeline.counters.resolved == 100  # recognised on both sides of the boundary
    # The window after next is started at the boundary, its first slice at once, then a slice a step.
    assert max(pending) == len(devices) - RESOLVER_EIDS_PER_STEP
    assert max(a - b for a, b in itertools.pairwise(pending)) <= RESOLVER_EIDS_PER_STEP
    assert pending[-1] == 0 and resolver.pending_drops == 0  # done within seconds
    assert resolver.late_rebuilds == 0
