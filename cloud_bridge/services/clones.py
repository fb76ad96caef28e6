"""Acting on a clone alert: revoke the device through enrollment (as `cloud-bridge revoke` does)."""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol

from cloud_bridge.core.enrollment import Enrollment
from cloud_bridge.errors import BridgeError
from edge.core import wire


class AlertError(BridgeError):
    """An alert that is not there, or not open any more; the message says what to do."""


class CloneAlerts(Protocol):
    """Where the alerts are kept (SqliteLoyaltyRecords)."""

    async def clone_alert(self, alert_id: int) -> wire.CloneAlert | None: ...

    async def close_clone_alert(
        self, alert_id: int, status: Literal["revoked", "dismissed"], now_s: float
    ) -> bool: ...


async def open_alert(alerts: CloneAlerts, alert_id: int) -> wire.CloneAlert:
    """The alert if it is open; AlertError saying why not otherwise."""
    alert = await alerts.clone_alert(alert_id)
    if alert is None:
        raise AlertError(
            f"no clone alert {alert_id}: list them with `cloud-bridge clones DATABASE --all`"
        )
    if alert.status != "open":
        raise AlertError(f"clone alert {alert_id} is already {alert.status}: nothing to do")
    return alert


async def revoke_for_alert(
    alerts: CloneAlerts, enrollment: Enrollment, alert_id: int, now_s: float
) -> wire.CloneAlert:
    """Revoke the alert's device (it leaves every roster at the next sync), then close the alert.

    Revoking first: if closing fails, the alert stays open on a revoked device, and revoking again
    is harmless (revocation is idempotent).
    """
    alert = await open_alert(alerts, alert_id)
    await enrollment.revoke(alert.device)
    await alerts.close_clone_alert(alert_id, "revoked", now_s)
    return dataclasses.replace(alert, status="revoked")


async def dismiss_alert(alerts: CloneAlerts, alert_id: int, now_s: float) -> wire.CloneAlert:
    """Close the alert without touching the device (a false alarm, e.g. a gateway's clock)."""
    alert = await open_alert(alerts, alert_id)
    await alerts.close_clone_alert(alert_id, "dismissed", now_s)
    return dataclasses.replace(alert, status="dismissed")


def describe(alert: wire.CloneAlert) -> str:
    """One line for a log or a terminal: who, where, how far, how fast."""
    if alert.distance_km is None:
        how = "a store without a location"
    else:
        speed = f"{alert.speed_kmh:,.0f} km/h" if alert.speed_kmh is not None else "at once"
        how = f"{alert.distance_km:,.0f} km, {speed}"
    return (
        f"clone alert {alert.alert_id} [{alert.status}]: device {alert.device} (member "
        f"{alert.member}) seen at {alert.first_store} then {alert.second_store} "
        f"{alert.elapsed_s:,.0f} s later ({how})"
    )
