"""Uplink throughput: a gateway's backlog of visits drained to the bridge over a real Mosquitto.

    python -m benchmarks.uplink_bench [--events N]

The gateway's outbox holds N visits (as after an hour offline); the clock runs from the uplink's
wake-up until the bridge has recorded every one and the gateway has forgotten every one on the
bridge's ack: publish (QoS 1), broker, bridge decode and record, ack back, outbox delete. Members are
the store's real pseudonyms, so every visit is recorded, not dropped as unknown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from edge.core import wire
from tests.fakes.broker import MosquittoProcess
from tests.integration.rig import STORE, Rig, eventually, store_rig

UPLINK_TARGETS = {
    "uplink_events_per_s_tls": "report, beside uplink_events_per_s_plain (TLS must not cost much)"
}


async def _drain(rig: Rig, events: int) -> float:
    """Seconds from waking the uplink until `events` visits are recorded and acknowledged."""
    roster = rig.gateway.sync.roster_devices()
    now = time.time()
    visits = [
        wire.Visit(
            event_id=uuid.uuid4().hex,
            ts=now - 1.0,
            detected_at=now - 1.0,
            member=device.member,
            device=device.ref,
            tier=device.tier,
            rssi_dbm=-60.0,
        )
        for device in (roster[i % len(roster)] for i in range(events))
    ]
    before = rig.bridge.recorded
    await rig.gateway.store.append_events(visits, now)
    start = time.perf_counter()
    rig.gateway.uplink.wake()

    async def drained() -> bool:
        return rig.bridge.recorded - before >= events and await rig.gateway.store.count() == 0

    await eventually(drained, f"{events} visits recorded and acknowledged", timeout_s=600.0)
    return time.perf_counter() - start


async def _run(events: int, plaintext: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="threshold-uplink-") as tmp:
        workdir = Path(tmp)
        with MosquittoProcess(workdir / "mosquitto", plaintext=plaintext) as broker:
            async with store_rig(workdir, broker, members=200) as rig:
                assert rig.gateway.address.store == STORE
                return await _drain(rig, events)


async def uplink_results(events: int = 5000) -> dict[str, Any]:
    """The same backlog over TLS with client certificates (the default) and over plain TCP."""
    tls_s = await _run(events, plaintext=False)
    plain_s = await _run(events, plaintext=True)
    return {
        "uplink_events": events,
        "uplink_events_per_s_tls": round(events / tls_s),
        "uplink_events_per_s_plain": round(events / plain_s),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(uplink_results(args.events)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
