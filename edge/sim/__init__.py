"""Simulated radio sources: seeded, pure, for the demo, integration tests and benchmarks."""

from __future__ import annotations

from edge.sim.entrance import (
    EntranceConfig,
    GroundTruth,
    Person,
    SimDevice,
    StoreEntrance,
    make_members,
)

__all__ = [
    "EntranceConfig",
    "GroundTruth",
    "Person",
    "SimDevice",
    "StoreEntrance",
    "make_members",
]
