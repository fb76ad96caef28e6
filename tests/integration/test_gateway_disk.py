"""A gateway whose database is found corrupt at start, on real parts: it starts again on a new one.

The corrupt file is moved aside with one ERROR line saying what was lost; the gateway then holds no
roster (version 0) and the bridge sends it a full one, after which members are recognised again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from edge.adapters.mosquitto import MosquittoProcess
from tests.fakes.radio import walk_in
from tests.integration.rig import eventually, store_rig


async def test_a_corrupt_gateway_database_is_moved_aside_and_the_roster_resynced(
    tmp_path: Path, mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture
) -> None:
    async with store_rig(tmp_path, mosquitto) as rig:
        address = rig.gateway.address
        version = rig.gateway.sync.roster_version
        await rig.records.connection.execute(
            "UPDATE devices SET active = 0 WHERE id = ?", (rig.devices[2].ref,)
        )
        await rig.records.connection.commit()
        await eventually(lambda: rig.gateway.sync.roster_version > version, "the next roster")
        version = rig.gateway.sync.roster_version
        # What the broker retains for the gateway is now a delta: of no use to an empty gateway.
        assert rig.bridge._rosters[address].base_version is not None
    database = tmp_path / "gw" / "gateway.sqlite"
    with database.open("r+b") as f:  # the SD card garbles the start of the file
        f.write(b"\xff" * 4096)
    caplog.clear()

    async with store_rig(tmp_path, mosquitto) as rig:
        await eventually(
            lambda: rig.gateway.sync.roster_version == version, "a full roster for the gateway"
        )
        assert rig.bridge._rosters[address].base_version is None
        rig.source.push(walk_in(rig.devices[0], time.time()))
        await rig.settled(expected_offers=1)

    [aside] = list(database.parent.glob("gateway.sqlite.corrupt-*"))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert str(database) in errors[0] and str(aside) in errors[0]
    assert "unacknowledged events in it are lost" in errors[0]
    assert "resynced from the bridge" in errors[0]
