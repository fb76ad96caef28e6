"""Broker identities (certificate CNs), the generated ACL, and the [mqtt] TLS settings."""

from __future__ import annotations

import pytest

from edge.config import parse_config
from edge.core.broker_acl import MAX_PACKET_BYTES, ChainAcl, acl_text
from edge.core.broker_identity import (
    IdentityError,
    bridge_identity,
    check_gateway_common_name,
    gateway_identity,
    monitor_identity,
    parse_identity,
    shopper_identity,
)
from edge.core.wire import GatewayAddress
from edge.errors import ConfigError

DOOR = GatewayAddress("acme", "s-1", "door-1")


@pytest.mark.parametrize(
    ("identity", "cn"),
    [
        (gateway_identity(DOOR), "acme/s-1/door-1"),
        (bridge_identity("acme", "bridge-1"), "acme/bridge/bridge-1"),
        (shopper_identity("acme", "tok"), "acme/shopper/tok"),
        (monitor_identity("acme", "it"), "acme/monitor/it"),
    ],
)
def test_each_kind_of_identity_has_one_cn_that_parses_back(identity: object, cn: str) -> None:
    assert str(identity) == cn
    assert parse_identity(cn) == identity


@pytest.mark.parametrize(
    "cn", ["acme/s-1", "acme/s-1/door-1/x", "Acme/s-1/door-1", "acme/+/door-1", "acme/s-1/#", ""]
)
def test_a_cn_that_is_no_identity_is_refused(cn: str) -> None:
    with pytest.raises(IdentityError):
        parse_identity(cn)


@pytest.mark.parametrize("store", ["bridge", "shopper", "monitor"])
def test_reserved_store_ids_are_refused_for_gateways_and_in_the_config(store: str) -> None:
    with pytest.raises(IdentityError, match="reserved"):
        gateway_identity(GatewayAddress("acme", store, "door-1"))
    with pytest.raises(ConfigError, match="reserved"):
        parse_config(f'[gateway]\nstore = "{store}"\n')


def test_a_csr_cn_must_be_the_gateway_being_added() -> None:
    check_gateway_common_name("acme/s-1/door-1", DOOR)
    for other in ("acme/s-1/door-2", "acme/s-2/door-1", "globex/s-1/door-1", "acme/bridge/door-1"):
        with pytest.raises(IdentityError, match="CN is"):
            check_gateway_common_name(other, DOOR)


def test_the_acl_confines_gateways_and_shoppers_by_pattern_and_names_bridges_and_monitors() -> None:
    text = acl_text([ChainAcl("acme", ("bridge-1", "bridge-2"), ("it",))])
    lines = text.splitlines()
    assert "pattern write threshold/v1/%u/event/+" in lines
    assert "pattern read threshold/v1/%u/sync/roster" in lines
    assert "pattern read threshold/v1/%u/offer" in lines
    assert "pattern deny threshold/v1/+/shopper/+/event/+" in lines
    assert lines.count("user acme/bridge/bridge-1") == 1
    assert lines.count("user acme/bridge/bridge-2") == 1
    assert "user acme/monitor/it" in lines
    assert "topic write threshold/v1/acme/+/+/ack" in lines
    # No grant reaches beyond a chain or a client's own subtree.
    grants = [line for line in lines if line.startswith(("topic", "pattern"))]
    assert not [g for g in grants if g.endswith(" #") or "threshold/v1/#" in g]
    assert MAX_PACKET_BYTES >= 16_000_000  # the largest roster bundle (100k devices)


def test_mqtt_is_tls_on_8883_by_default_and_plaintext_only_when_asked() -> None:
    config = parse_config('[gateway]\ndata_dir = "/srv/gw"\n')
    assert config.mqtt.port == 8883
    tls = config.mqtt_tls
    assert tls is not None and str(tls.key_file) == "/srv/gw/tls/client.key"
    plain = parse_config("[mqtt]\ninsecure_plaintext = true\nport = 1883\n")
    assert plain.mqtt_tls is None
    with pytest.raises(ConfigError, match="insecure_plaintext"):
        parse_config('[mqtt]\ninsecure_plaintext = true\nca_file = "/x"\n')


def test_a_bridge_and_a_gateway_on_one_host_never_share_tls_files_by_default() -> None:
    from cloud_bridge.config import parse_bridge_config

    gateway = parse_config('[gateway]\ndata_dir = "/var/lib/threshold"\n').mqtt_tls
    bridge = parse_bridge_config(
        '[bridge]\ndatabase = "/var/lib/threshold/loyalty.sqlite"\n'
    ).mqtt_tls
    assert gateway is not None and bridge is not None
    assert str(bridge.key_file) == "/var/lib/threshold/bridge-tls/client.key"
    assert {gateway.key_file, gateway.cert_file}.isdisjoint({bridge.key_file, bridge.cert_file})
