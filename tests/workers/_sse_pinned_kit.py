"""HTTP/1.1 requests placed on a chosen worker of ``serve --workers N``.

The workers share one port, so a connection's worker is the kernel's choice:
:func:`connection_on` connects until the kernel has put one on the wanted
worker (read from ``/proc``, see :func:`._kit.owner_of`). One request per
connection, spoken with h11, so a test says exactly which worker answers it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import trio

from meshsub_trio._wire._sse import SseEvent, SseParser

from ._kit import GRAPHQL, SOON, Supervisor, owner_of

TOKEN = "x-graphql-event-stream-token"
EVENT_STREAM = "text/event-stream"


async def connection_on(supervisor: Supervisor, index: int) -> trio.SocketStream:
    """A TCP connection that worker *index* has accepted (others are closed at once)."""
    pid = supervisor.workers[index]
    pids = list(supervisor.workers.values())
    for _ in range(64):  # on the other worker 64 times: p = 2**-64
        stream = await trio.open_tcp_stream("127.0.0.1", supervisor.port)
        client_port = stream.socket.getsockname()[1]
        owner = None
        with trio.fail_after(SOON):  # accepted soon after the handshake
            while (owner := owner_of(supervisor.port, client_port, pids)) is None:
                await trio.sleep(0.005)
        if owner == pid:
            return stream
        await stream.aclose()
    raise AssertionError(f"no connection landed on worker {index}")


class Answer:
    """One response: its status, headers and (for a plain response) its body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.body[:200]!r}>"


class Pinned:
    """One HTTP exchange on a connection of a known worker."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self._parser = SseParser()
        self._ready: list[SseEvent] = []

    async def send(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> Answer:
        """Send the request; return the response head (the body is read by the caller)."""
        fields = [("host", "127.0.0.1"), *headers.items()]
        if body or method in ("POST", "PUT"):
            fields.append(("content-length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=fields))
        data += self.conn.send(h11.Data(data=body)) if body else b""
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        event = await self._next_event()
        assert isinstance(event, h11.Response), event
        head = {k.decode(): v.decode() for k, v in event.headers}
        return Answer(event.status_code, head, b"")

    async def _next_event(self) -> Any:
        with trio.fail_after(SOON):
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA:
                    self.conn.receive_data(await self.stream.receive_some(65536))
                    continue
                return event

    async def read_body(self, answer: Answer) -> Answer:
        chunks = []
        while not isinstance(event := await self._next_event(), h11.EndOfMessage):
            assert isinstance(event, h11.Data), event
            chunks.append(bytes(event.data))
        answer.body = b"".join(chunks)
        return answer

    async def next_sse(self) -> tuple[str, Any]:
        """The next ``event:``/``data:`` of an open event stream (comments skipped)."""
        while not self._ready:
            event = await self._next_event()
            assert isinstance(event, h11.Data), f"the stream ended: {event}"
            self._ready += self._parser.receive_data(bytes(event.data))
        sse = self._ready.pop(0)
        return sse.event, json.loads(sse.data) if sse.data else None


async def request(
    supervisor: Supervisor,
    index: int,
    method: str,
    *,
    token: str | None = None,
    target: str = GRAPHQL,
    body: Any = None,
    accept: str = "*/*",
    connection: trio.SocketStream | None = None,
) -> Answer:
    """One whole request answered by worker *index* (on *connection*, if given:
    one :func:`connection_on` made for that worker beforehand)."""
    headers = {"accept": accept}
    if token is not None:
        headers[TOKEN] = token
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    stream = connection if connection is not None else await connection_on(supervisor, index)
    async with stream:
        pinned = Pinned(stream)
        return await pinned.read_body(await pinned.send(method, target, headers, data))


@asynccontextmanager
async def event_stream(supervisor: Supervisor, index: int, token: str) -> AsyncIterator[Pinned]:
    """The reservation's event stream, opened (200) on worker *index*."""
    stream = await connection_on(supervisor, index)
    async with stream:
        pinned = Pinned(stream)
        answer = await pinned.send("GET", GRAPHQL, {"accept": EVENT_STREAM, TOKEN: token})
        if answer.status != 200 or not answer.headers["content-type"].startswith(EVENT_STREAM):
            raise AssertionError(f"no stream on worker {index}: {answer}")
        yield pinned


def operation(op_id: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """A single-connection operation's body: its id travels in ``extensions``."""
    body: dict[str, Any] = {"query": query, "extensions": {"operationId": op_id}}
    if variables is not None:
        body["variables"] = variables
    return body
