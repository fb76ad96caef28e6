"""The systemd units: notify + watchdog + restart policy, and sandboxing that systemd scores well.

The scores come from `systemd-analyze security --offline=true UNIT_FILE` (0 = locked down, 10 =
exposed): at most 2.0 for the bridge, 3.0 for the gateway, which needs D-Bus and devices.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
LIMITS = {"threshold-bridge.service": 2.0, "threshold-gateway.service": 3.0}


def settings(unit: str) -> dict[str, list[str]]:
    """Every `Key=value` of the unit's [Service] and [Unit] sections (repeated keys in order)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in (UNITS / unit).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section in ("[Service]", "[Unit]"):
            out.setdefault(key, []).append(value)
    return out


def test_units_parse() -> None:
    for unit in LIMITS:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string((UNITS / unit).read_text())
        assert parser.has_section("Service")


@pytest.mark.parametrize("unit", sorted(LIMITS))
def test_units_notify_watchdog_restart_and_private_files(unit: str) -> None:
    s = settings(unit)
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert int(s["WatchdogSec"][0]) > 0
    assert s["Restart"] == ["on-failure"]
    assert s["RestartPreventExitStatus"] == ["2"]  # a config error is not restarted
    assert int(s["StartLimitIntervalSec"][0]) > 0 and int(s["StartLimitBurst"][0]) > 0
    assert s["UMask"] == ["0077"]
    assert s["StateDirectoryMode"] == ["0700"]
    assert s["NoNewPrivileges"] == ["true"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["CapabilityBoundingSet"] == [""]
    assert "AF_UNIX" in s["RestrictAddressFamilies"][0]  # sd_notify (and D-Bus for the gateway)


def test_the_gateway_unit_admits_only_its_devices() -> None:
    s = settings("threshold-gateway.service")
    assert s["DevicePolicy"] == ["closed"]
    assert s["DeviceAllow"] == ["/dev/vcio rw", "char-ttyACM rw", "char-ttyUSB rw"]
    assert s["SupplementaryGroups"] == ["video dialout"]


@pytest.mark.parametrize("unit", sorted(LIMITS))
def test_systemd_analyze_security_scores_the_unit_within_its_limit(unit: str) -> None:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed here: cannot score the units")
    result = subprocess.run(
        [binary, "security", "--offline=true", "--no-pager", str(UNITS / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= LIMITS[unit], result.stdout
