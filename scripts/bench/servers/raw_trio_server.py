"""The transport limit of meshsub-trio itself: its native WebSocket, no GraphQL.

The same pieces the native host uses (Trio streams, its upgrade parser and
frame reader, ``NativeWebSocket``'s unmasked frames) with the GraphQL
engine, protocol machine and operation tasks taken out. Each event is encoded
once per (topic, operation id) and the same bytes go to every subscriber.

Writes take the transport's fastest path: ``write_frames`` straight to the
socket from the publisher, with a per-connection task flushing any backlog,
where this meshsub-trio has it; otherwise a writer task per connection that
joins whatever is queued into one ``send_frames``.

It speaks just enough graphql-transport-ws for the load generator. Any POST
publishes, taking the ``variables`` of the bench's ``publish`` mutation.

Run: ``python -m servers.raw_trio_server --port N``
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

import h11
import orjson
import trio
from workload import BUFFER_CAPACITY, event, hello

from meshsub_trio._transports._native_ws import NativeWebSocket
from meshsub_trio._transports._socket import SocketClosed
from meshsub_trio._wire._upgrade import HEAD_END, parse_upgrade, switching_protocols
from servers import gcstats

_BATCH_LIMIT = 512
#: Bytes a subscriber may leave unsent before it counts as overflowing.
_BACKLOG_LIMIT = 8 << 20
_DIRECT = hasattr(NativeWebSocket, "write_frames")


class Peer:
    """One connection's way out; ``put`` never waits."""

    def __init__(self, socket: NativeWebSocket) -> None:
        self.socket = socket
        self.broken = False
        self._wake = trio.Event()
        self._send, self._receive = trio.open_memory_channel[bytes](BUFFER_CAPACITY)
        if _DIRECT:
            socket.on_backlog = self._wake.set

    def put(self, frame: bytes) -> None:
        if self.broken:
            return
        try:
            if not _DIRECT:
                self._send.send_nowait(frame)
            elif self.socket.backlog > _BACKLOG_LIMIT:
                raise trio.WouldBlock
            else:
                self.socket.write_frames([frame])
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True  # overflow or gone: the subscriber loses the rest
            self._wake.set()
            self._send.close()

    async def run(self) -> None:
        """Flush the backlog (direct writes) or write what is queued (writer task)."""
        try:
            if _DIRECT:
                while not self.broken:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    await self.socket.flush()
            else:
                await self._writer()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.broken = True

    async def _writer(self) -> None:
        async for frame in self._receive:
            frames = [frame]
            while len(frames) < _BATCH_LIMIT:
                try:
                    frames.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            await self.socket.send_frames(frames)


class Hub:
    """Topics -> operation ids -> subscribed peers, and the publisher."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.topics: dict[str, dict[str, set[Peer]]] = {}
        self.next_id = 0

    def add(self, topic: str, op_id: str, peer: Peer) -> None:
        self.topics.setdefault(topic, {}).setdefault(op_id, set()).add(peer)

    def remove(self, topic: str, op_id: str, peer: Peer) -> None:
        by_id = self.topics.get(topic, {})
        peers = by_id.get(op_id)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del by_id[op_id]
        if not by_id:
            self.topics.pop(topic, None)

    def start(self, count: int, rate: float | None, topic: str | None) -> int:
        first = self.next_id
        self.next_id += count
        self.nursery.start_soon(self._publish, first, count, rate, topic)
        return first

    async def _publish(self, first: int, count: int, rate: float | None, topic: str | None) -> None:
        start = trio.current_time()
        for index in range(count):
            if rate:
                await trio.sleep_until(start + index / rate)
            else:
                await trio.sleep(0)
            data = {"data": {"events": event(first + index, time.time())}}
            groups = [self.topics.get(topic, {})] if topic is not None else self.topics.values()
            for by_id in list(groups):
                for op_id, peers in list(by_id.items()):
                    frame = orjson.dumps({"id": op_id, "type": "next", "payload": data})
                    for peer in tuple(peers):
                        peer.put(frame)


async def _read_head(stream: trio.SocketStream) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(65536)
        if not data or len(head) > 65536:
            return b""
        head += data
    return head


async def _publish_request(stream: trio.SocketStream, head: bytes, hub: Hub) -> None:
    http = h11.Connection(h11.SERVER)
    http.receive_data(head)
    body = b""
    while True:
        item = http.next_event()
        if item is h11.NEED_DATA:
            http.receive_data(await stream.receive_some(65536))
        elif isinstance(item, h11.Data):
            body += bytes(item.data)
        elif isinstance(item, h11.EndOfMessage | h11.ConnectionClosed):
            break
    variables: dict[str, Any] = orjson.loads(body).get("variables") or {}
    first = hub.start(int(variables["count"]), variables.get("rate"), variables.get("topic"))
    payload = orjson.dumps({"data": {"publish": first}})
    headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
    data = http.send(h11.Response(status_code=200, headers=headers))
    data += http.send(h11.Data(data=payload)) + http.send(h11.EndOfMessage())
    await stream.send_all(data)


async def _websocket(stream: trio.SocketStream, head: bytes, hub: Hub) -> None:
    end = head.index(HEAD_END)
    request = parse_upgrade(head[:end])
    if request is None:
        return
    key = request.headers["sec-websocket-key"]
    await stream.send_all(switching_protocols(key, "graphql-transport-ws"))
    socket = NativeWebSocket(stream.socket, leftover=head[end + 4 :], max_message_size=1 << 20)
    peer = Peer(socket)
    subscriptions: dict[str, str] = {}
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.run)
            while True:
                try:
                    message = await socket.receive()
                except SocketClosed:
                    await socket.close(1000, "")
                    break
                request = orjson.loads(message.data)
                kind = request.get("type")
                if kind == "connection_init":
                    peer.put(b'{"type":"connection_ack"}')
                elif kind == "ping":
                    peer.put(b'{"type":"pong"}')
                elif kind == "subscribe":
                    topic = request["payload"]["variables"]["topic"]
                    subscriptions[request["id"]] = topic
                    hub.add(topic, request["id"], peer)
                    greeting = hello(topic)
                    if greeting is not None:
                        data = {"data": {"events": greeting}}
                        next_message = {"id": request["id"], "type": "next", "payload": data}
                        peer.put(orjson.dumps(next_message))
                elif kind == "complete":
                    topic = subscriptions.pop(request["id"], None)
                    if topic is not None:
                        hub.remove(topic, request["id"], peer)
            nursery.cancel_scope.cancel()
    finally:
        for op_id, topic in subscriptions.items():
            hub.remove(topic, op_id, peer)


async def _handle(stream: trio.SocketStream, hub: Hub) -> None:
    try:
        head = await _read_head(stream)
        if b"upgrade: websocket" in head.lower():
            await _websocket(stream, head, hub)
        elif head:
            await _publish_request(stream, head, hub)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, SocketClosed):
        pass
    except Exception as error:  # a bug in one connection must not stop the server
        print(f"raw trio: connection failed: {error!r}", file=sys.stderr)
    finally:
        await trio.aclose_forcefully(stream)


async def serve(port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            hub = Hub(nursery)
            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1", backlog=4096)
            handler = lambda stream: _handle(stream, hub)  # noqa: E731
            nursery.start_soon(trio.serve_listeners, handler, listeners)
            print(f"raw trio serving on http://127.0.0.1:{port}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    gcstats.install()
    trio.run(serve, port)


if __name__ == "__main__":
    main()
