"""Request/reply over NATS: one answer to one question, and "nobody serves that" at once.

Publish/subscribe cannot tell an unanswered question from one nobody can
answer: the asker waits out its deadline either way. NATS can: a request to a
subject no connection subscribes to gets the server's *no responders* status
straight back (nats-server 2.2+, which every supported server is). So a
process that asks another (graphql-sse single connection mode, whose streams
live on one process each) learns that the other is gone in a round trip,
not after its timeout.

The answering side is a bounded buffer of :class:`Request` items (as
:meth:`NatsBroker.subscribe` gives messages), each answered with
:meth:`NatsRequests.reply`, which queues like ``publish`` and never blocks.
Payloads are JSON, encoded with orjson, as for ``publish``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import trio

from nats import errors as nats_errors

from ._broker import ConnectionState, NoResponders
from ._buffer import BufferClosed, EventBuffer, Overflow
from ._nats_link import NatsLink
from ._nats_options import _check_topic
from ._nats_outbox import BrokerClosed


@dataclass(frozen=True, slots=True)
class Request:
    """One message received by :meth:`NatsRequests.serve_requests`.

    ``reply`` is where its answer goes (None: a plain publish, which nobody
    waits on; :meth:`NatsRequests.reply` then does nothing).
    """

    subject: str
    message: Any
    reply: str | None


class NatsRequests(NatsLink):
    """Request/reply on top of the link (see module doc); :class:`NatsBroker` has it."""

    _serving: set[EventBuffer[Request]] | None = None

    async def _close(self) -> None:
        """Closing ends every :meth:`serve_requests` buffer too (after what it holds)."""
        await super()._close()
        for buffer in tuple(self._serving or ()):
            buffer.close()

    async def request(self, subject: str, message: Any, *, timeout: float) -> Any:
        """*message* to whoever serves *subject*; their answer (decoded).

        Raises :class:`NoResponders` as soon as the server knows nobody
        subscribes to *subject*; :class:`TimeoutError` when no answer came
        within *timeout* seconds (also during an outage: the link is not
        waited for); :class:`BrokerClosed` after close; ``ValueError`` for a
        message past the NATS max payload or an answer that is not JSON;
        ``TypeError`` for what JSON cannot hold.
        """
        _check_topic(subject)
        if self._closing or self.state is ConnectionState.CLOSED:
            raise BrokerClosed("the NATS broker is closed")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        payload = self._encode(message)
        # nats-py's own timeout, and ours a little later: a cancelled asyncio
        # wait must not be the only thing that ends this.
        with trio.move_on_after(timeout + 1.0):
            try:
                answer = await self._aio(self._nc.request)(subject, payload, timeout=timeout)
            except nats_errors.NoRespondersError:
                raise NoResponders(subject) from None
            except nats_errors.TimeoutError:
                raise TimeoutError(f"no answer on {subject!r} within {timeout}s") from None
            except (nats_errors.ConnectionClosedError, nats_errors.ConnectionDrainingError):
                raise BrokerClosed("the NATS broker is closed") from None
            try:
                return orjson.loads(answer.data)
            except orjson.JSONDecodeError:
                raise ValueError(f"the answer on {subject!r} is not JSON") from None
        raise TimeoutError(f"no answer on {subject!r} within {timeout}s")

    @asynccontextmanager
    async def serve_requests(
        self, subject: str, *, capacity: int = 256, policy: Overflow = Overflow.DROP_OLDEST
    ) -> AsyncIterator[EventBuffer[Request]]:
        """A buffer of the requests (and plain messages) sent to *subject*,
        while the context is open: answer each with :meth:`reply`.

        When this yields the server has registered the subscription, so a
        request sent after that never gets :class:`NoResponders` while the
        link is up; when it exits the server has dropped it, so a request
        sent after that gets :class:`NoResponders` at once rather than being
        routed here to time out (while the link is up). Messages that are
        not JSON are counted in ``decode_errors`` and dropped; past
        *capacity*, *policy* decides (an asker of a dropped request times out).
        """
        _check_topic(subject)
        if self._closing:
            raise BrokerClosed("the NATS broker is closed")
        buffer: EventBuffer[Request] = EventBuffer(capacity, policy)

        async def deliver(msg: Any) -> None:  # (asyncio, on the Trio thread)
            self.received += 1
            try:
                message = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                self.decode_errors += 1
                return
            with contextlib.suppress(BufferClosed):
                buffer.put(Request(msg.subject, message, msg.reply or None))

        async def subscribe() -> Any:
            sub = await self._nc.subscribe(subject, cb=deliver)
            await self._pinger.round_trip(self.options.flush_timeout)
            return sub

        async def unsubscribe(sub: Any) -> None:
            # Confirmed like the subscription: the UNSUB alone only queues it,
            # and the server, reading each connection on its own, may still
            # route another's request here meanwhile, where nobody answers it.
            await sub.unsubscribe()
            await self._pinger.round_trip(self.options.flush_timeout)

        with trio.CancelScope(shield=True):  # a subscription made but lost would leak
            sub = await self._aio(subscribe)()
        if self._serving is None:
            self._serving = set()
        self._serving.add(buffer)
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            yield buffer
        finally:
            self._serving.discard(buffer)
            buffer.detach()
            if not self._closing and not self._nc.is_closed:
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(self.options.flush_timeout),
                    contextlib.suppress(Exception),
                ):
                    await self._aio(unsubscribe)(sub)

    def reply(self, request: Request, message: Any) -> bool:
        """Queue *message* as *request*'s answer; never blocks. False when
        *request* expects none (a plain publish).

        Raises as ``publish`` does: :class:`PublishQueueFull`,
        :class:`BrokerClosed`, ``ValueError`` past the max payload,
        ``TypeError`` for what JSON cannot hold.
        """
        if request.reply is None:
            return False
        payload = self._encode(message, "answer")
        self._outbox.put(request.reply, payload)
        return True
