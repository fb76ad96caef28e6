"""Who is who on the broker: certificate common names, and what each kind of certificate is for.

Mosquitto takes the client certificate's CN as the MQTT username (`use_identity_as_username`) and
its ACL (edge/core/broker_acl.py) substitutes it for `%u`. So a CN is a path in the topic tree:
gateway `{chain}/{store}/{gateway}`, bridge instance `{chain}/bridge/{id}`, shopper app
`{chain}/shopper/{token}`, IT monitor `{chain}/monitor/{name}`. The words `bridge`, `shopper` and
`monitor` are therefore never store ids (RESERVED_STORE_IDS). Pure: no crypto, no files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge.core.wire import GatewayAddress, WireError, check_id

#: Store ids that would make a gateway's CN collide with another kind of identity.
RESERVED_STORE_IDS = frozenset({"bridge", "shopper", "monitor"})

IdentityKind = Literal["gateway", "bridge", "shopper", "monitor"]
_KIND_SEGMENTS: dict[str, IdentityKind] = {
    "bridge": "bridge",
    "shopper": "shopper",
    "monitor": "monitor",
}

#: Certificate lifetimes, in days. The CA outlives every certificate it signs; gateways are
#: re-enrolled (`edge-gateway provision` + `cloud-bridge add-gateway --csr`) before theirs ends.
CA_VALIDITY_DAYS = 3650
SERVER_VALIDITY_DAYS = 825
CLIENT_VALIDITY_DAYS = 825


class IdentityError(ValueError):
    """A CN or identity part that does not follow the naming rules; `reason` says which and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BrokerIdentity:
    """One client identity: its kind, its chain and the rest of its CN."""

    kind: IdentityKind
    chain: str
    name: str  # gateway: "store/gateway"; others: the bridge id, shopper token or monitor name

    @property
    def common_name(self) -> str:
        if self.kind == "gateway":
            return f"{self.chain}/{self.name}"
        return f"{self.chain}/{self.kind}/{self.name}"

    def __str__(self) -> str:
        return self.common_name


def check_store_id(store: str) -> str:
    """A valid store id that is not reserved for another kind of identity, else IdentityError."""
    try:
        check_id(store, "store")
    except WireError as exc:
        raise IdentityError(exc.reason) from None
    if store in RESERVED_STORE_IDS:
        raise IdentityError(
            f"store id {store!r} is reserved (it names broker identities of kind {store!r}): "
            "choose another store id"
        )
    return store


def gateway_identity(address: GatewayAddress) -> BrokerIdentity:
    check_store_id(address.store)
    return BrokerIdentity("gateway", address.chain, f"{address.store}/{address.gateway}")


def bridge_identity(chain: str, bridge_id: str) -> BrokerIdentity:
    return BrokerIdentity("bridge", _checked(chain, "chain"), _checked(bridge_id, "bridge id"))


def shopper_identity(chain: str, token: str) -> BrokerIdentity:
    return BrokerIdentity("shopper", _checked(chain, "chain"), _checked(token, "shopper token"))


def monitor_identity(chain: str, name: str) -> BrokerIdentity:
    return BrokerIdentity("monitor", _checked(chain, "chain"), _checked(name, "monitor name"))


def parse_identity(common_name: str) -> BrokerIdentity:
    """The identity a certificate CN names; IdentityError if it is not one of the four forms."""
    parts = common_name.split("/")
    if len(parts) != 3:
        raise IdentityError(
            f"CN {common_name!r} is not an identity: expected chain/store/gateway, "
            "chain/bridge/ID, chain/shopper/TOKEN or chain/monitor/NAME"
        )
    chain, middle, last = parts
    kind = _KIND_SEGMENTS.get(middle)
    if kind == "bridge":
        return bridge_identity(chain, last)
    if kind == "shopper":
        return shopper_identity(chain, last)
    if kind == "monitor":
        return monitor_identity(chain, last)
    try:
        address = GatewayAddress(chain, middle, last)
    except WireError as exc:
        raise IdentityError(f"CN {common_name!r}: {exc.reason}") from None
    return gateway_identity(address)


def check_gateway_common_name(common_name: str, address: GatewayAddress) -> None:
    """Raise IdentityError unless `common_name` is exactly the CN of the gateway at `address`."""
    expected = gateway_identity(address).common_name
    if common_name != expected:
        raise IdentityError(
            f"the request's CN is {common_name!r} but the gateway being added is {expected!r}: "
            "make the CSR with `edge-gateway provision` on that gateway (its [gateway] chain, "
            "store and id), or add the gateway the CSR is for"
        )


def _checked(value: str, what: str) -> str:
    try:
        return check_id(value, what)
    except WireError as exc:
        raise IdentityError(exc.reason) from None
