"""PahoMqtt against a real Mosquitto spawned per test (tests/fakes/broker.py).

Timeouts here only guard against hangs; no test asserts how fast anything happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.adapters.mqtt import (
    Message,
    MqttAuthError,
    MqttNotConnected,
    MqttPublishFailed,
    MqttSettings,
    PahoMqtt,
    Will,
)
from edge.adapters.pki import LocalPki
from tests.fakes.broker import MosquittoProcess, free_loopback_port, write_password_file

pytestmark = pytest.mark.integration

GUARD_S = 15.0  # only a guard against hangs
_ids = itertools.count(1)


#: Scratch topics every test identity may use, besides the generated ACL.
SCRATCH_ACL = ("pattern readwrite t/#", "pattern readwrite allowed/#")


@pytest.fixture
def mosquitto(tmp_path: Path, test_pki: LocalPki) -> Iterator[MosquittoProcess]:
    """The TLS broker of tests/conftest.py, with the scratch topics `t/#` open to every client."""
    broker = MosquittoProcess(tmp_path / "mosquitto", pki=test_pki, acl_extra=SCRATCH_ACL)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def make_settings(broker: MosquittoProcess, **overrides: Any) -> MqttSettings:
    """TLS settings with a certificate of its own (its CN is the client id), or plain ones on a
    plaintext broker."""
    client_id = overrides.pop("client_id", f"test-client-{next(_ids)}")
    fields: dict[str, Any] = {"backoff_min_s": 0.05, "backoff_max_s": 0.5}
    fields.update(overrides)
    return broker.client_settings(client_id, client_id, **fields)


class Inbox:
    """An on_message callback that keeps what arrives, for tests to await."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()

    def __call__(self, message: Message) -> None:
        self.queue.put_nowait(message)

    async def next(self) -> Message:
        async with asyncio.timeout(GUARD_S):
            return await self.queue.get()

    async def next_matching(self, predicate: Callable[[Message], bool]) -> Message:
        while True:
            message = await self.next()
            if predicate(message):
                return message


class Disconnects:
    """An on_disconnect callback that counts lost connections."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self._event = asyncio.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self._event.set()

    async def wait(self) -> None:
        async with asyncio.timeout(GUARD_S):
            await self._event.wait()
        self._event.clear()


@contextlib.asynccontextmanager
async def running(client: PahoMqtt, *, connected: bool = True) -> AsyncIterator[asyncio.Task[None]]:
    """Run the client in a task; cancel it at the end and re-raise whatever run() raised."""
    task = asyncio.create_task(client.run(), name=f"mqtt-run[{client.client_id}]")
    try:
        if connected:
            await client.wait_connected(GUARD_S)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_publish_subscribe_round_trip(mosquitto: MosquittoProcess) -> None:
    inbox = Inbox()
    subscriber = PahoMqtt(make_settings(mosquitto), subscriptions=[("t/rt/#", 1)], on_message=inbox)
    publisher = PahoMqtt(make_settings(mosquitto))
    async with running(subscriber), running(publisher):
        assert publisher.connected
        await publisher.publish("t/rt/a", b"\x00hello\xff", qos=1)

        assert await inbox.next() == Message("t/rt/a", b"\x00hello\xff", retain=False, qos=1)


async def test_the_broker_never_sends_a_client_more_than_its_maximum_packet_size(
    mosquitto: MosquittoProcess,
) -> None:
    inbox = Inbox()
    subscriber = PahoMqtt(
        make_settings(mosquitto, max_packet_bytes=1024),
        subscriptions=[("t/max/#", 1)],
        on_message=inbox,
    )
    publisher = PahoMqtt(make_settings(mosquitto))
    async with running(subscriber), running(publisher):
        await publisher.publish("t/max/big", b"x" * 4096, retain=True)  # dropped for it, retained
        await publisher.publish("t/max/small", b"fits")

        assert await inbox.next() == Message("t/max/small", b"fits", retain=False, qos=1)
        assert subscriber.connected


async def test_a_vanished_client_gets_its_will_and_says_online_again_after_reconnect(
    mosquitto: MosquittoProcess,
) -> None:
    status = "t/gw/status"
    gateway: PahoMqtt

    async def say_online() -> None:
        await gateway.publish(status, b"online", retain=True)

    gateway = PahoMqtt(
        make_settings(mosquitto), will=Will(status, b"offline"), on_connect=say_online
    )
    inbox = Inbox()
    observer = PahoMqtt(make_settings(mosquitto), subscriptions=[(status, 1)], on_message=inbox)
    async with running(gateway), running(observer):
        await inbox.next_matching(lambda m: m.payload == b"online")

        # Vanish without DISCONNECT: the broker sees the TCP connection end and publishes the will.
        sock = gateway._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)

        offline = await inbox.next_matching(lambda m: m.payload != b"online")
        assert offline.payload == b"offline"
        # run() reconnects by itself and on_connect republishes the retained status.
        await inbox.next_matching(lambda m: m.payload == b"online")

    late_inbox = Inbox()
    late = PahoMqtt(make_settings(mosquitto), subscriptions=[(status, 1)], on_message=late_inbox)
    async with running(late):
        retained = await late_inbox.next()
    assert (retained.payload, retained.retain) == (b"online", True)


async def test_a_graceful_disconnect_does_not_publish_the_will(
    mosquitto: MosquittoProcess,
) -> None:
    status = "t/gw2/status"
    inbox = Inbox()
    observer = PahoMqtt(make_settings(mosquitto), subscriptions=[(status, 1)], on_message=inbox)
    gateway = PahoMqtt(make_settings(mosquitto), will=Will(status, b"offline"))
    async with running(observer):
        run_task = asyncio.create_task(gateway.run(), name="mqtt-run[gateway]")
        await gateway.wait_connected(GUARD_S)
        await gateway.disconnect()
        async with asyncio.timeout(GUARD_S):
            await run_task  # disconnect() makes run() return
        assert not gateway.connected

        await observer.publish(status, b"marker")
        assert (await inbox.next()).payload == b"marker"


async def test_publish_while_disconnected_raises_not_connected(tmp_path: Path) -> None:
    nowhere = MosquittoProcess(tmp_path / "never-started", port=free_loopback_port())
    client = PahoMqtt(make_settings(nowhere))

    with pytest.raises(MqttNotConnected):
        await client.publish("t/x", b"before run")

    async with running(client, connected=False):
        with pytest.raises(MqttNotConnected, match="refused"):
            await client.wait_connected(0.5)
        with pytest.raises(MqttNotConnected):
            await client.publish("t/x", b"no broker")


async def test_after_a_broker_crash_run_reconnects_and_the_subscription_still_works(
    mosquitto: MosquittoProcess,
) -> None:
    inbox = Inbox()
    lost = Disconnects()
    subscriber = PahoMqtt(
        make_settings(mosquitto),
        subscriptions=[("t/crash/#", 1)],
        on_message=inbox,
        on_disconnect=lost,
    )
    publisher = PahoMqtt(make_settings(mosquitto))
    async with running(subscriber), running(publisher):
        mosquitto.kill()
        await lost.wait()
        assert not subscriber.connected
        with pytest.raises(MqttNotConnected):
            await subscriber.publish("t/crash/x", b"while down")

        mosquitto.start()
        await subscriber.wait_connected(GUARD_S)
        await publisher.wait_connected(GUARD_S)
        await publisher.publish("t/crash/after", b"back")

        assert (await inbox.next()).payload == b"back"


async def test_qos1_messages_sent_while_a_persistent_subscriber_was_away_arrive_on_reconnect(
    mosquitto: MosquittoProcess,
) -> None:
    settings = make_settings(mosquitto, client_id="bridge-persistent")
    first = PahoMqtt(settings, subscriptions=[("t/queue/#", 1)], on_message=Inbox())
    async with running(first):
        pass  # subscribed once; cancelling run() disconnects gracefully, the session stays

    publisher = PahoMqtt(make_settings(mosquitto))
    async with running(publisher):
        for n in range(3):
            await publisher.publish(f"t/queue/{n}", str(n).encode())

    inbox = Inbox()
    again = PahoMqtt(settings, subscriptions=[("t/queue/#", 1)], on_message=inbox)
    async with running(again):
        received = [await inbox.next() for _ in range(3)]
    assert sorted(m.payload for m in received) == [b"0", b"1", b"2"]
    assert all(m.qos == 1 for m in received)


async def test_a_shared_subscription_delivers_each_message_to_one_member(
    mosquitto: MosquittoProcess,
) -> None:
    inbox = Inbox()
    members = [
        PahoMqtt(
            make_settings(mosquitto), subscriptions=[("$share/g/t/shared/#", 1)], on_message=inbox
        )
        for _ in range(2)
    ]
    publisher = PahoMqtt(make_settings(mosquitto))
    async with running(members[0]), running(members[1]), running(publisher):
        sent = [f"m{n}".encode() for n in range(10)]
        for payload in sent:
            await publisher.publish("t/shared/x", payload)
        received = [await inbox.next() for _ in sent]

    assert sorted(m.payload for m in received) == sorted(sent)
    assert all(m.topic == "t/shared/x" for m in received)


async def test_a_publish_waiting_for_its_puback_fails_when_the_connection_drops(
    mosquitto: MosquittoProcess,
) -> None:
    client = PahoMqtt(make_settings(mosquitto))
    async with running(client):
        pid = mosquitto.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # the broker can no longer answer
        publish = asyncio.create_task(
            client.publish("t/drop", b"x", timeout_s=60.0), name="publish-before-crash"
        )
        await asyncio.sleep(0)  # let the PUBLISH go out
        mosquitto.kill()  # SIGKILL also ends a stopped process

        with pytest.raises(MqttPublishFailed, match="connection ended"):
            async with asyncio.timeout(GUARD_S):
                await publish


async def test_a_listener_that_never_answers_the_tls_handshake_is_named_and_retried(
    mosquitto: MosquittoProcess,
) -> None:
    """TCP connects, then silence: each attempt times out, says it was the handshake, and is
    retried (a broker that hangs is an outage to wait out, not a reason to exit)."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never a byte back

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    client = PahoMqtt(make_settings(mosquitto, port=port, connect_timeout_s=0.3))
    try:
        async with running(client, connected=False) as task:
            with pytest.raises(MqttNotConnected) as waited:
                await client.wait_connected(2.0)
            assert not task.done()  # still retrying
        assert "TLS handshake" in str(waited.value), waited.value
        assert len(accepted) >= 2
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()


@pytest.mark.parametrize(
    ("username", "password"), [("gateway", "wrong"), ("nobody", "secret"), (None, None)]
)
async def test_refused_credentials_stop_run_with_an_auth_error(
    tmp_path: Path, username: str | None, password: str | None
) -> None:
    password_file = write_password_file(tmp_path / "passwd", {"gateway": "secret"})
    with MosquittoProcess(
        tmp_path / "mosquitto", plaintext=True, password_file=password_file
    ) as broker:
        client = PahoMqtt(make_settings(broker, username=username, password=password))
        with pytest.raises(MqttAuthError) as refused:
            async with asyncio.timeout(GUARD_S):
                await client.run()
        assert broker.host in refused.value.reason
        assert not client.connected

        allowed = PahoMqtt(make_settings(broker, username="gateway", password="secret"))
        async with running(allowed):
            assert allowed.connected


async def test_a_publish_the_broker_refuses_raises_and_no_subscribers_is_a_success(
    tmp_path: Path,
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite allowed/#\n")  # lines before any `user` apply to anonymous
    with MosquittoProcess(
        tmp_path / "mosquitto", plaintext=True, extra_config=[f"acl_file {acl}"]
    ) as broker:
        client = PahoMqtt(make_settings(broker))
        async with running(client):
            await client.publish("allowed/nobody-listens", b"x")  # PUBACK 0x10 is a success

            with pytest.raises(MqttPublishFailed, match="Not authorized"):
                await client.publish("denied/x", b"x")
            assert client.connected


async def test_a_burst_of_messages_over_tls_all_arrive_without_waiting_for_more_traffic(
    mosquitto: MosquittoProcess,
) -> None:
    inbox = Inbox()
    subscriber = PahoMqtt(
        make_settings(mosquitto), subscriptions=[("t/burst/#", 1)], on_message=inbox
    )
    publisher = PahoMqtt(make_settings(mosquitto))
    async with running(subscriber), running(publisher):
        sent = [f"m{n}".encode() for n in range(300)]
        await asyncio.gather(*(publisher.publish("t/burst/x", p) for p in sent))
        received = [await inbox.next() for _ in sent]
    assert sorted(m.payload for m in received) == sorted(sent)
