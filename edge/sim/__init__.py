"""Simulated radio sources: seeded, pure, for the demo, integration tests and benchmarks."""

from __future__ import annotations

from edge.sim.entrance import (
    CheckinAttempt,
    EntranceConfig,
    GroundTruth,
    IosEvent,
    Person,
    SimDevice,
    StoreEntrance,
    make_members,
)

__all__ = [
    "CheckinAttempt",
    "EntranceConfig",
    "GroundTruth",
    "IosEvent",
    "Person",
    "SimDevice",
    "StoreEntrance",
    "make_members",
]
