"""The transport limit on asyncio: pre-encoded frames over uvicorn + websockets, no GraphQL.

It speaks just enough graphql-transport-ws for the load generator
(``connection_init`` -> ``connection_ack``, ``subscribe``, ``complete``,
``ping``), and encodes each event once per (topic, operation id), then
queues the same text to every subscriber. Any POST publishes, taking the
``variables`` of the bench's ``publish`` mutation.

Run: ``python -m servers.raw_uvicorn_server --port N``
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from workload import BUFFER_CAPACITY, event, hello

from servers import gcstats
from servers.asgi_common import serve

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: topic -> operation id -> queues of the subscribed connections
TOPICS: dict[str, dict[str, set[asyncio.Queue[str]]]] = {}
STATE = {"next_id": 0}
TASKS: set[asyncio.Task[None]] = set()


def _groups(topic: str | None) -> list[dict[str, set[asyncio.Queue[str]]]]:
    if topic is not None:
        return [TOPICS.get(topic, {})]
    return list(TOPICS.values())


async def _publish(first: int, count: int, rate: float | None, topic: str | None) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index in range(count):
        if rate:
            await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
        else:
            await asyncio.sleep(0)
        data = {"data": {"events": event(first + index, time.time())}}
        for by_id in _groups(topic):
            for op_id, queues in list(by_id.items()):
                frame = orjson.dumps({"id": op_id, "type": "next", "payload": data}).decode()
                for queue in tuple(queues):
                    queue.put_nowait(frame)


async def _http(receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    variables = orjson.loads(body).get("variables") or {}
    count = int(variables["count"])
    first = STATE["next_id"]
    STATE["next_id"] += count
    task = asyncio.get_running_loop().create_task(
        _publish(first, count, variables.get("rate"), variables.get("topic"))
    )
    TASKS.add(task)
    task.add_done_callback(TASKS.discard)
    payload = orjson.dumps({"data": {"publish": first}})
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _writer(queue: asyncio.Queue[str], send: Send) -> None:
    while True:
        frame = await queue.get()
        await send({"type": "websocket.send", "text": frame})


async def _websocket(receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": "graphql-transport-ws"})
    queue: asyncio.Queue[str] = asyncio.Queue(BUFFER_CAPACITY)
    writer = asyncio.get_running_loop().create_task(_writer(queue, send))
    subscriptions: dict[str, str] = {}
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            request = orjson.loads(message.get("text") or message.get("bytes") or b"{}")
            kind = request.get("type")
            if kind == "connection_init":
                queue.put_nowait('{"type":"connection_ack"}')
            elif kind == "ping":
                queue.put_nowait('{"type":"pong"}')
            elif kind == "subscribe":
                topic = request["payload"]["variables"]["topic"]
                subscriptions[request["id"]] = topic
                TOPICS.setdefault(topic, {}).setdefault(request["id"], set()).add(queue)
                greeting = hello(topic)
                if greeting is not None:
                    data = {"data": {"events": greeting}}
                    next_message = {"id": request["id"], "type": "next", "payload": data}
                    queue.put_nowait(orjson.dumps(next_message).decode())
            elif kind == "complete":
                topic = subscriptions.pop(request["id"], None)
                if topic is not None:
                    _forget(topic, request["id"], queue)
    finally:
        for op_id, topic in subscriptions.items():
            _forget(topic, op_id, queue)
        writer.cancel()


def _forget(topic: str, op_id: str, queue: asyncio.Queue[str]) -> None:
    by_id = TOPICS.get(topic, {})
    queues = by_id.get(op_id)
    if queues is not None:
        queues.discard(queue)
        if not queues:
            del by_id[op_id]
    if not by_id:
        TOPICS.pop(topic, None)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app: WebSocket subscribers, and POST to publish."""
    if scope["type"] == "websocket":
        await _websocket(receive, send)
    elif scope["type"] == "http":
        await _http(receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    gcstats.install()
    serve(app, args.port)


if __name__ == "__main__":
    main()
