"""The bridge's example config loads, and bad configs name the file and the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cloud_bridge.config import BridgeConfig, load_bridge_config
from edge.config import load_config
from edge.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "firmware_config" / "bridge.example.toml"


def test_example_config_loads_and_shows_every_default() -> None:
    config = load_bridge_config(EXAMPLE)
    # The example documents every key with its default: loading it gives the default config.
    assert config == BridgeConfig()
    assert config.bridge.database == "/var/lib/threshold/loyalty.sqlite"


def test_a_bridge_and_a_gateway_sharing_a_host_keep_apart_broker_credentials() -> None:
    """The README installs both in /var/lib/threshold on a pilot Pi: the bridge's default TLS
    files must not be the gateway's (`ca client-cert` would refuse to replace the gateway's key,
    or one process would connect as the other)."""
    gateway = load_config(EXAMPLE.with_name("gateway.example.toml"))
    bridge = load_bridge_config(EXAMPLE)
    assert str(gateway.data_dir) == str(Path(bridge.bridge.database).parent)
    gateway_files, bridge_files = gateway.mqtt_tls, bridge.mqtt_tls
    assert gateway_files is not None and bridge_files is not None
    assert {gateway_files.cert_file, gateway_files.key_file}.isdisjoint(
        {bridge_files.cert_file, bridge_files.key_file}
    )
    assert bridge_files.key_file == Path("/var/lib/threshold/bridge-tls/client.key")
    readme = (EXAMPLE.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "--out /var/lib/threshold/bridge-tls" in readme


def test_example_config_names_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for section in dataclasses.fields(BridgeConfig):
        assert f"[{section.name}]" in text
        value = getattr(BridgeConfig(), section.name)
        for key in dataclasses.fields(value):
            if dataclasses.is_dataclass(getattr(value, key.name)):  # a sub-table
                assert f"[{section.name}.{key.name}]" in text
                continue
            assert f"\n{key.name} = " in text, f"{section.name}.{key.name} is not in the example"


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ("[bridge]\nshare_grup = 'x'\n", "bridge.share_grup", "unknown key"),
        ("[mqtt]\nhots = 'broker'\n", "mqtt.hots", "unknown key"),
        ("[bridge]\nshare_group = 'Threshold Bridge'\n", "bridge.share_group", "not a valid id"),
        ("[bridge]\nbatch = 0\n", "bridge.batch", "must be >= 1"),
        ("[bridge]\nclone_max_speed_kmh = 0\n", "bridge.clone_max_speed_kmh", "must be > 0"),
        ("[bridge]\nclone_min_gap_s = -1.0\n", "bridge.clone_min_gap_s", "must be >= 0"),
        ("[bridge]\nclone_clock_tolerance_s = nan\n", "bridge.clone_clock_tolerance_s", ">= 0"),
        ("[bridge]\nclone_auto_revoke = 'yes'\n", "bridge.clone_auto_revoke", "true or false"),
        ("[preferences]\ninterest = ['home']\n", "preferences.interest", "unknown key"),
        ("[preferences]\ninterests = 'home'\n", "preferences.interests", "list of strings"),
        ("[preferences]\ninterests = ['Home']\n", "preferences.interests", "not a valid id"),
        (
            "[preferences]\npromotion_types = ['event', 'event']\n",
            "preferences.promotion_types",
            "names 'event' twice",
        ),
        (
            f"[preferences]\ninterests = {[f'i{n}' for n in range(64)]}\n",
            "preferences.interests",
            "at most 63",
        ),
    ],
)
def test_bad_config_names_file_and_field(
    tmp_path: Path, text: str, field: str, problem: str
) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_bridge_config(path)
    assert info.value.field == field
    assert problem in info.value.problem
    assert str(info.value).startswith(f"{path}: [{field}] ")
