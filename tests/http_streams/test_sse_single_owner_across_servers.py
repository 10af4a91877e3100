"""A token is its owner's on every server of a cluster, whatever the owner's ``repr`` shows.

Tokens bind their owner by a fingerprint every process writes alike. A
``User`` whose identity is not in its ``repr`` (``id`` with ``repr=False``)
must not let a namesake use the token on another server; and the token's
home checks the owner again for every request another server passes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import trio

from meshsub_trio import App, Context
from meshsub_trio._transports._sse_tokens import StreamTokens, new_worker_id, owner_fingerprint
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server  # noqa: F401 (a fixture)

from ._sse_two_servers_kit import (
    EVENT_STREAM,
    SECRET,
    TOKEN,
    post,
    registry_of,
    relay_of,
    reserve,
    two_servers,
    url,
)
from .conftest import Events


@dataclass(frozen=True)
class User:
    name: str
    id: str = field(repr=False)


def app_of_users() -> App:
    async def authenticate(ctx: Context) -> User:
        name, _, user_id = (
            ctx.headers.get("authorization", "").removeprefix("Bearer ").partition(":")
        )
        return User(name, user_id)

    return App(
        "type Query { hello: String! }",
        resolvers={"Query": {"hello": lambda _root, _info: "world"}},
        authenticate=authenticate,
    )


ALICE = {"authorization": "Bearer alice:1"}
NAMESAKE = {"authorization": "Bearer alice:2"}  # another user, written alike by repr


def test_a_namesake_with_the_same_repr_gets_no_home_for_the_token() -> None:
    assert repr(User("alice", "1")) == repr(User("alice", "2"))
    assert owner_fingerprint(User("alice", "1")) != owner_fingerprint(User("alice", "2"))
    home, other = StreamTokens(SECRET, new_worker_id()), StreamTokens(SECRET, new_worker_id())
    token = home.mint(User("alice", "1"))
    assert other.home_of(token, User("alice", "1")) == home.worker
    assert other.home_of(token, User("alice", "2")) is None


async def test_a_namesake_cannot_use_a_token_on_another_server(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    async with (
        two_servers(nats_server, app_of_users()) as (home, other),
        httpx.AsyncClient() as client,
    ):
        token = await reserve(client, home, **ALICE)
        assert (await post(client, other, token, "theirs", **NAMESAKE)).status_code == 404
        again = await client.put(url(other), headers={TOKEN: token, **NAMESAKE})
        assert again.status_code == 201 and again.text != token  # not "already registered"
        assert (await post(client, other, token, "mine", **ALICE)).status_code == 202
        headers = {"accept": EVENT_STREAM, TOKEN: token, **ALICE}
        async with client.stream("GET", url(other), headers=headers) as response:
            assert response.status_code == 200
            kind, data = await Events(response).next()
            assert (kind, data["id"]) == ("next", "mine")
            assert (await post(client, home, token, "theirs", **NAMESAKE)).status_code == 404


async def test_the_home_checks_the_owner_of_what_another_server_passes_on(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    async with (
        two_servers(nats_server, app_of_users()) as (home, other),
        httpx.AsyncClient() as client,
    ):
        token = await reserve(client, home, **ALICE)
        relay, home_id = relay_of(other), relay_of(home).worker
        alice, namesake = owner_fingerprint(User("alice", "1")), owner_fingerprint(User("x", "9"))
        with trio.fail_after(5):
            for kind in ("find", "open", "stop"):
                message = {"k": kind, "t": token, "id": "1", "o": namesake}
                asked = await relay.call(home_id, message)
                assert asked["s"] == 404, (kind, asked)
            found = await relay.call(home_id, {"k": "find", "t": token, "o": alice})
        assert found["s"] == 200
        assert len(registry_of(home)) == 1 and registry_of(home).waiting == 1  # not handed over
