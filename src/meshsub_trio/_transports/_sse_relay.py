"""Request/reply between workers over the broker, for graphql-sse single connection mode.

Each worker listens on one subject of its own, ``meshsub.sse.<worker id>``
(a random id per process, which tokens carry: see :mod:`._sse_tokens`). A
worker that must ask another (about a token issued there, or for a stream
held there) publishes a request there naming its own subject; the answer
comes back on it, matched by a call number. One subscription per worker,
whatever the number of streams, rather than one per token: opening a stream
then costs no subscription round trip, and the worker, not the token, is the
unit that lives and dies (a dead worker's subject simply goes unanswered).

Every wait is bounded (:data:`CALL_TIMEOUT`): an answer that does not come,
a broker that is down or refuses the message is a :class:`RelayError` (503,
or 413 for a message NATS cannot carry), never a hang. A request carries its
deadline and is refused after it (a broker that held it through an outage
must not deliver it late), so a 503 means it was not carried out. What a request means
is the desk's business (:mod:`._sse_desk`); this module only carries it.

The relay is a worker's own: it runs in the worker's long-lived task (see
:func:`meshsub_trio._supervisor._child.end_with_parent`) on a NATS connection
of its own to the workers' broker, so it needs nothing from the app.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from ..brokers import BrokerClosed, ConnectionState, PublishQueueFull
from ._sse_tokens import MIN_SECRET_LENGTH, SECRET_ENV, StreamTokens, new_worker_id

log = logging.getLogger("meshsub_trio.sse_relay")

#: Seconds a worker waits for another's answer (a forwarded request's own
#: answer included, so a request forwarded twice waits within it).
CALL_TIMEOUT = 5.0
#: How long an asker waits past its request's deadline for an answer sent in time.
GRACE = 0.5
#: Requests from other workers handled at once; beyond it they are refused (503).
MAX_INBOUND = 512
#: Messages waiting for the relay's task; beyond it the broker drops the oldest.
INBOX = 4096
#: Where the worker's own subject lives.
SUBJECT_PREFIX = "meshsub.sse."
_BROKER_ENV = "MESHSUB_BROKER"

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]


class RelayError(Exception):
    """Another worker could not be asked: its ``status`` is this request's answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Call:
    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.answer: dict[str, Any] | None = None


class StreamRelay:
    """One worker's link to the others (see module doc)."""

    def __init__(self, tokens: StreamTokens, *, timeout: float = CALL_TIMEOUT) -> None:
        self.tokens = tokens
        self.worker = tokens.worker
        self.timeout = timeout
        #: The connected broker (None until :meth:`serve` has subscribed).
        self.broker: Any = None
        #: What handles requests from other workers (set by the first request here).
        self.handler: Handler | None = None
        self._calls: dict[int, _Call] = {}
        self._next_call = 0
        self._ready = trio.Event()
        #: Requests from other workers being handled now.
        self._busy = 0
        #: Counters for operators and tests.
        self.forwarded = 0
        self.answered = 0
        self.timeouts = 0
        self.late = 0

    @property
    def subject(self) -> str:
        return SUBJECT_PREFIX + self.worker

    async def wait_ready(self) -> None:
        """Until the relay listens (a token issued before then could not be asked about)."""
        with trio.move_on_after(self.timeout):
            await self._ready.wait()
        if not self._ready.is_set():
            raise RelayError(503, "This worker is not connected to the others yet")

    # ---- asking another worker ------------------------------------------
    async def call(
        self, worker: str, message: dict[str, Any], *, deadline: float | None = None
    ) -> dict[str, Any]:
        """*message* to *worker*; its answer.

        The request carries its *deadline* (wall-clock seconds; default
        :attr:`timeout` from now) and is refused by a worker that gets it
        later, so a request answered 503 here has not been carried out there
        (unless its answer, sent in time, takes over :data:`GRACE` to come
        back: the only window left). The workers of one supervisor share a
        clock; hosts behind one balancer must keep theirs in step.
        """
        self._check_link()
        now = time.time()
        if deadline is None:
            deadline = now + self.timeout
        if deadline <= now:
            raise RelayError(503, "No time left to ask another worker")
        self._next_call += 1
        number = self._next_call
        call = self._calls[number] = _Call()
        try:
            self._publish(worker, {**message, "c": number, "d": deadline})
            self.forwarded += 1
            with trio.move_on_after(deadline - now + GRACE):
                await call.done.wait()
        finally:
            del self._calls[number]
        if call.answer is None:
            self.timeouts += 1
            raise RelayError(503, "The worker holding this stream did not answer")
        return call.answer

    def tell(self, worker: str, message: dict[str, Any]) -> None:
        """*message* to *worker*, answered by nobody (lost if the broker is down)."""
        try:
            self._check_link()
            self._publish(worker, message)
        except RelayError as error:
            log.info("could not tell worker %s: %s", worker, error)

    def link_up(self) -> bool:
        broker = self.broker
        return broker is not None and broker.state is ConnectionState.CONNECTED

    def _check_link(self) -> None:
        if not self.link_up():
            raise RelayError(503, "The broker between workers is unavailable")

    def _publish(self, worker: str, message: dict[str, Any]) -> None:
        """*message*, signed with our name (``r``: where answers go), to *worker*."""
        try:
            self.broker.publish(SUBJECT_PREFIX + worker, {**message, "r": self.worker})
        except (PublishQueueFull, BrokerClosed) as error:
            raise RelayError(503, "The broker between workers is unavailable") from error
        except TypeError as error:  # orjson's, for what JSON cannot hold
            raise RelayError(400, "Cannot pass this request between workers") from error
        except ValueError as error:  # past NATS's max payload
            raise RelayError(413, "Too large to pass between workers") from error

    # ---- answering the others -------------------------------------------
    async def serve(
        self, broker: Any, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on this worker's subject on *broker* until it closes."""
        subscription: AbstractAsyncContextManager[Any] = broker.subscribe(
            self.subject, capacity=INBOX
        )
        async with subscription as inbox, trio.open_nursery() as nursery:
            self.broker = broker
            self._ready.set()
            task_status.started()
            try:
                async for message in inbox:
                    self._receive(message, nursery)
            finally:
                self.broker = None
                self._ready = trio.Event()
                nursery.cancel_scope.cancel()

    def _receive(self, message: Any, nursery: trio.Nursery) -> None:
        if not isinstance(message, dict):
            log.warning("ignored a relay message that is not an object")
            return
        if message.get("k") == "reply":
            number = message.get("c")
            call = self._calls.get(number) if isinstance(number, int) else None
            if call is not None and not call.done.is_set():
                call.answer = message
                call.done.set()
            return
        deadline = message.get("d")
        if "c" in message and not (isinstance(deadline, float) and time.time() < deadline):
            self.late += 1  # its asker has given up, or will before we are done
            self._answer(message, {"s": 503, "m": "The request reached the worker too late"})
            return
        if self._busy >= MAX_INBOUND:
            self._answer(message, {"s": 503, "m": "Too many requests between workers"})
            return
        self._busy += 1
        nursery.start_soon(self._handle, message)

    async def _handle(self, message: dict[str, Any]) -> None:
        try:
            handler = self.handler
            kind = message.get("k")
            if handler is None or not isinstance(kind, str):
                answer: dict[str, Any] | None = {"s": 404, "m": "Stream not found"}
            else:
                answer = await handler(kind, message)
        except Exception:
            log.exception("a relayed graphql-sse request failed")
            answer = {"s": 500, "m": "Internal server error"}
        finally:
            self._busy -= 1
        if answer is not None:
            self._answer(message, answer)

    def _answer(self, message: dict[str, Any], answer: dict[str, Any]) -> None:
        asker, number = message.get("r"), message.get("c")
        if not isinstance(asker, str) or not isinstance(number, int):
            return  # a notice: nobody waits for an answer
        self.answered += 1
        self.tell(asker, {**answer, "k": "reply", "c": number})


# ---- the relay of this process --------------------------------------------

_process_relay: StreamRelay | None = None
_decided = False


def process_relay(environ: Mapping[str, str] = os.environ) -> StreamRelay | None:
    """This worker's relay, made once; None outside ``serve --workers`` (one
    process keeps its reservations to itself, with no broker hop).

    A worker relays when its supervisor gave it a broker and a stream secret
    (both through its environment, never its command line).
    """
    global _process_relay, _decided
    if _decided:
        return _process_relay
    _decided = True
    from .._supervisor._worker import WORKER_ENV

    secret = environ.get(SECRET_ENV, "")
    broker = environ.get(_BROKER_ENV, "")
    if not environ.get(WORKER_ENV) or not broker.startswith(("nats://", "tls://")):
        return None
    if len(secret) < MIN_SECRET_LENGTH:
        log.error(
            "%s is missing or shorter than %d characters: graphql-sse single connection "
            "streams will only work when every request lands on the worker that reserved it",
            SECRET_ENV,
            MIN_SECRET_LENGTH,
        )
        return None
    _process_relay = StreamRelay(StreamTokens(secret.encode(), new_worker_id()))
    return _process_relay


async def run_process_relay(environ: Mapping[str, str] = os.environ) -> None:
    """Connect this worker's relay to the broker and serve it, reconnecting as
    needed, until cancelled (a no-op outside a relaying worker)."""
    relay = process_relay(environ)
    if relay is None:
        return
    from ..brokers import NatsBroker, NatsOptions

    servers = [part.strip() for part in environ[_BROKER_ENV].split(",") if part.strip()]
    options = NatsOptions(log=None, name=f"meshsub-trio[{os.getpid()}] sse relay")
    delay = 0.1
    while True:
        try:
            async with NatsBroker.connect(servers, options=options) as broker:
                delay = 0.1
                await relay.serve(broker)
        except (ConnectionError, OSError) as error:
            log.warning("graphql-sse relay: cannot use the broker (%s): retrying", error)
        except Exception:  # a bug here costs single connection streams, never the worker
            log.exception("graphql-sse relay failed: restarting it")
        await trio.sleep(delay)
        delay = min(delay * 2, 5.0)
