"""The pieces behind graphql-sse single connection mode across workers, in one process.

Tokens (:mod:`meshsub_trio._transports._sse_tokens`) are checked without any
I/O. The relay (:mod:`meshsub_trio._transports._sse_relay`) and the desk that
answers it run on a real nats-server, two relays standing for two workers:
every wait is bounded, a missing or unreachable worker is a 503, and what
another worker sends that makes no sense is refused without stopping the relay.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from meshsub_trio import App
from meshsub_trio._config import Config
from meshsub_trio._core._state import ServerState
from meshsub_trio._transports._reservations import Reservations
from meshsub_trio._transports._sse_desk import Desk, encode
from meshsub_trio._transports._sse_relay import RelayError, StreamRelay
from meshsub_trio._transports._sse_tokens import StreamTokens, new_worker_id, owner_fingerprint
from meshsub_trio._wire import OperationRequested
from meshsub_trio.brokers import ConnectionState, NatsBroker, NatsOptions
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server  # noqa: F401 (a fixture)

SECRET = b"a secret of the cluster, long enough"


@dataclass(frozen=True)
class User:
    id: str


# ---- tokens ---------------------------------------------------------------------


def test_a_token_names_its_home_to_its_owner_only() -> None:
    home, elsewhere = StreamTokens(SECRET, new_worker_id()), StreamTokens(SECRET, new_worker_id())
    token = home.mint(User("alice"))
    assert elsewhere.home_of(token, User("alice")) == home.worker
    assert elsewhere.home_of(token, User("bob")) is None
    assert elsewhere.home_of(token, None) is None
    anonymous = home.mint(None)
    assert elsewhere.home_of(anonymous, None) == home.worker
    assert elsewhere.home_of(anonymous, User("alice")) is None


def test_forged_mangled_and_foreign_tokens_name_no_home() -> None:
    tokens = StreamTokens(SECRET, new_worker_id())
    token = tokens.mint("alice")
    worker, nonce, mac = token.split(".")
    other_secret = StreamTokens(b"another cluster's secret, long too", new_worker_id())
    forged = [
        "",
        "nope",
        token + ".x",
        f"{new_worker_id()}.{nonce}.{mac}",  # another home, same MAC
        f"{worker}.{nonce}.{'A' * len(mac)}",
        f"{worker}.{nonce[::-1]}.{mac}",
        f"{worker.upper()}.{nonce}.{mac}",
        f"{worker}.{nonce}.{mac}=",
        other_secret.mint("alice"),
        "meshsub.sse.>." + nonce + "." + mac,  # a subject pattern, not a worker id
    ]
    for candidate in forged:
        assert tokens.home_of(candidate, "alice") is None, candidate
    assert tokens.home_of(token, "alice") == worker


def test_short_secrets_and_bad_worker_ids_are_refused() -> None:
    with pytest.raises(ValueError):
        StreamTokens(b"short", new_worker_id())
    with pytest.raises(ValueError):
        StreamTokens(SECRET, "meshsub.>")


def test_owners_written_alike_in_every_process_or_never_matched_elsewhere() -> None:
    assert owner_fingerprint(User("alice")) == f"d:{__name__}.User(id='alice')"
    assert owner_fingerprint("alice") == "r:'alice'"
    assert owner_fingerprint(None) != owner_fingerprint("None")

    class Opaque:
        pass

    one, two = Opaque(), Opaque()
    # The default repr shows an address: such an owner matches itself, here only.
    assert owner_fingerprint(one) == owner_fingerprint(one) != owner_fingerprint(two)
    assert not owner_fingerprint(one).startswith("r:")


# ---- the relay on a real nats-server -----------------------------------------------


@asynccontextmanager
async def relay_on(
    server: NatsServer, *, timeout: float = 2.0
) -> AsyncIterator[tuple[StreamRelay, NatsBroker]]:
    relay = StreamRelay(StreamTokens(SECRET, new_worker_id()), timeout=timeout)
    options = NatsOptions(log=None, reconnect_wait=0.05)
    async with (
        NatsBroker.connect([server.url], options=options) as broker,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(relay.serve, broker)
        yield relay, broker
        nursery.cancel_scope.cancel()


async def test_a_call_is_answered_by_the_worker_it_names(nats_server: NatsServer) -> None:  # noqa: F811
    async with relay_on(nats_server) as (one, _), relay_on(nats_server) as (two, _):
        seen: list[tuple[str, dict[str, Any]]] = []

        async def echo(kind: str, message: dict[str, Any]) -> dict[str, Any]:
            seen.append((kind, message))
            return {"s": 200, "m": message["t"]}

        two.handler = echo
        with trio.fail_after(5):
            answer = await one.call(two.worker, {"k": "find", "t": "a-token"})
        assert answer["s"] == 200 and answer["m"] == "a-token"
        [(kind, message)] = seen
        assert kind == "find" and message.pop("d") > time.time()
        assert message == {"k": "find", "t": "a-token", "c": 1, "r": one.worker}


async def test_a_worker_that_never_answers_is_a_503_within_the_bound(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    async with relay_on(nats_server, timeout=0.3) as (one, _), relay_on(nats_server) as (two, _):

        async def wedged(kind: str, message: dict[str, Any]) -> dict[str, Any]:
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        two.handler = wedged
        with trio.fail_after(3), pytest.raises(RelayError) as refused:
            await one.call(two.worker, {"k": "find", "t": "x"})
        assert refused.value.status == 503 and not refused.value.gone
        assert one.timeouts == 1 and one.gone == 0


async def test_a_worker_nobody_listens_for_is_gone_at_once(nats_server: NatsServer) -> None:  # noqa: F811
    """No responders: the broker says at once that no worker has that subject
    (it never existed, or has died), instead of the asker waiting out its 5 s."""
    async with relay_on(nats_server, timeout=5.0) as (one, _):
        started = trio.current_time()
        with trio.fail_after(2), pytest.raises(RelayError) as refused:
            await one.call(new_worker_id(), {"k": "find", "t": "x"})
        assert refused.value.gone and refused.value.status == 503
        assert trio.current_time() - started < 1.0
        assert one.gone == 1 and one.timeouts == 0


async def test_a_broker_that_is_down_is_a_503_at_once(nats_server: NatsServer) -> None:  # noqa: F811
    async with relay_on(nats_server) as (one, broker):
        await nats_server.stop()
        with trio.fail_after(10):
            while broker.state is ConnectionState.CONNECTED:
                await broker.wait_state_change(ConnectionState.CONNECTED)
        with trio.fail_after(0.5), pytest.raises(RelayError) as refused:
            await one.call(new_worker_id(), {"k": "find", "t": "x"})
        assert refused.value.status == 503 and one.timeouts == 0


async def test_nonsense_from_another_worker_is_refused_and_the_relay_lives_on(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    state = ServerState(App("type Query { hello: String }"), Config())
    async with relay_on(nats_server) as (home, _), relay_on(nats_server) as (asker, broker):
        registry = Reservations(relay=home)
        home.handler = Desk(state, registry, home).handle
        token = registry.reserve("alice", trio.current_time()).token
        alice = owner_fingerprint("alice")
        operation = OperationRequested("1", "{ hello }", None, None, None)
        # Junk on the home's subject, answered by nobody and breaking nothing; and
        # an operation past its deadline (held up by the broker, say): not run.
        late = {"k": "op", "t": token, "op": encode(operation), "n": 10, "c": 99}
        stale = [{**late, "r": asker.worker, "d": time.time() - 1}, {**late, "d": "soon"}]
        for junk in ([1, 2], "text", None, {"k": "reply", "c": "x"}, {"k": "op"}, *stale):
            broker.publish(home.subject, junk)
        asks = [
            ({"k": "op", "t": token, "o": alice, "op": ["1"], "n": 10}, 400),
            ({"k": "op", "t": token, "o": alice, "op": encode(operation), "n": "10"}, 400),
            ({"k": "stop", "t": token, "o": alice, "id": 7}, 400),
            ({"k": "dance", "t": token, "o": alice}, 400),
            ({"k": "find"}, 400),
            ({"k": "find", "t": "unknown", "o": alice}, 404),
            ({"k": "open", "t": "unknown", "o": alice}, 404),
            ({"k": "find", "t": token, "o": alice}, 200),
            (
                {"k": "op", "t": token, "o": alice, "op": encode(operation), "n": 10},
                202,
            ),  # not 409: new
            ({"k": "op", "t": token, "o": alice, "op": encode(operation), "n": 10}, 409),
        ]
        with trio.fail_after(10):
            for message, status in asks:
                answer = await asker.call(home.worker, message)
                assert answer["s"] == status, (message, answer)
        # Handed over once: a second stream is refused; its holder's notice frees it.
        with trio.fail_after(5):
            opened = await asker.call(home.worker, {"k": "open", "t": token, "o": alice})
            assert opened["s"] == 200 and opened["ops"] == [encode(operation)]
            again = await asker.call(home.worker, {"k": "open", "t": token, "o": alice})
            assert again["s"] == 409
            asker.tell(home.worker, {"k": "closed", "t": token})
            while registry.get(token, trio.current_time()) is not None:
                await trio.sleep(0.01)
        assert registry.waiting == 0 and registry.parked_bytes == 0
        # The two stale operations, and the junk "c": each numbered, none in time.
        assert home.late == 3
