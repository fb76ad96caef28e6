"""The one shape every radio source delivers to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RawAdvert:
    """One BLE advertisement report.

    `t_s` is radio time in Unix seconds: the wall clock on a real gateway, simulated time in the demo,
    the capture's clock in a replay. `payload` is the raw AD bytes (Core Supplement Part A).
    """

    t_s: float
    address: str
    rssi_dbm: int
    payload: bytes
