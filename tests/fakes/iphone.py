"""A shopper's iPhone as the gateway's check-in service meets it through BlueZ: the test plays
bluetoothd, relaying the phone's ATT requests as D-Bus calls on the registered application.

`registered_app` reads the application as bluetoothd does (GetManagedObjects on the path it was
registered with) and finds the characteristics by UUID; `FakeIPhone` is the app's side of the
protocol (docs/iphone-checkin.md): read the challenge, count seqs per challenge value, compute the
token with `checkin_payload`, write with the `device` option naming the central.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from dbus_fast import MessageType, Variant

from edge.core.checkin import CHALLENGE_CHAR_UUID, CHECKIN_CHAR_UUID, checkin_payload
from tests.fakes.bluez import FakeBluez, device_props

OBJECT_MANAGER_IFACE = "org.freedesktop.DBus.ObjectManager"
CHARACTERISTIC_IFACE = "org.bluez.GattCharacteristic1"
FAILED = "org.bluez.Error.Failed"


class Keyed(Protocol):
    """An enrolled device as its app holds it (a RosterDevice or a SimDevice)."""

    @property
    def identity_key(self) -> bytes: ...

    @property
    def exponent(self) -> int: ...


@dataclass
class App:
    """What bluetoothd knows of the registered application: where to send the phones' requests."""

    client: str
    path: str
    objects: dict[str, dict[str, dict[str, Any]]]
    challenge_path: str = ""
    checkin_path: str = ""


async def registered_app(bluez: FakeBluez, adapter: str = "hci0") -> App:
    """Read the application as bluetoothd does: GetManagedObjects on its registered path."""
    [(client, path)] = await bluez.applications(adapter)
    [managed] = await bluez.call(
        path, OBJECT_MANAGER_IFACE, "GetManagedObjects", destination=client
    )
    objects = {
        obj: {iface: {k: v.value for k, v in props.items()} for iface, props in ifaces.items()}
        for obj, ifaces in managed.items()
    }
    app = App(client, path, objects)
    for obj, ifaces in objects.items():
        uuid = ifaces.get(CHARACTERISTIC_IFACE, {}).get("UUID")
        if uuid == CHALLENGE_CHAR_UUID:
            app.challenge_path = obj
        elif uuid == CHECKIN_CHAR_UUID:
            app.checkin_path = obj
    return app


@dataclass
class FakeIPhone:
    """A shopper's iPhone connected to the gateway, and its app's side of the protocol."""

    bluez: FakeBluez
    app: App
    member: Keyed
    central: str
    rssi_dbm: int | None = -58
    challenge: bytes = b""
    seq: int = 0
    answers: list[str | None] = field(default_factory=list)

    @classmethod
    async def connect(
        cls, bluez: FakeBluez, member: Keyed, address: str, adapter: str = "hci0", **props: Any
    ) -> FakeIPhone:
        central = await bluez.connect_central(adapter, address, device_props(**props))
        return cls(bluez, await registered_app(bluez, adapter), member, central)

    def options(self, **extra: Variant) -> dict[str, Variant]:
        return {
            "device": Variant("o", self.central),
            "mtu": Variant("q", 185),
            "link": Variant("s", "LE"),
            **extra,
        }

    async def read_challenge(self) -> bytes:
        [value] = await self.bluez.call(
            self.app.challenge_path,
            CHARACTERISTIC_IFACE,
            "ReadValue",
            "a{sv}",
            [self.options()],
            destination=self.app.client,
        )
        if bytes(value) != self.challenge:  # seqs count per challenge value (the app's rule)
            self.challenge, self.seq = bytes(value), 0
        return self.challenge

    async def write(self, payload: bytes, **extra: Variant) -> str | None:
        """WriteValue as bluetoothd relays a Write Request; the error it answers, or None."""
        reply = await self.bluez.call_message(
            self.app.checkin_path,
            CHARACTERISTIC_IFACE,
            "WriteValue",
            "aya{sv}",
            [payload, self.options(type=Variant("s", "request"), **extra)],
            destination=self.app.client,
        )
        if reply.message_type != MessageType.ERROR:
            answer = None
        elif reply.error_name == FAILED:
            answer = str(reply.body[0])  # the ATT application error code BlueZ sends on
        else:
            answer = reply.error_name
        self.answers.append(answer)
        return answer

    def token(self, t_s: float, seq: int | None = None, member: Keyed | None = None) -> bytes:
        who = member or self.member
        return checkin_payload(
            who.identity_key,
            who.exponent,
            t_s,
            self.challenge,
            self.seq if seq is None else seq,
            self.rssi_dbm,
        )

    async def check_in(self, t_s: float) -> str | None:
        """One write of the current token (reading the challenge first if it has none)."""
        if not self.challenge:
            await self.read_challenge()
        answer = await self.write(self.token(t_s))
        self.seq += 1
        return answer
