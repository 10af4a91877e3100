"""Request/reply between processes over the broker, for graphql-sse single connection mode.

Each process (a worker of ``serve --workers N``, or one ``serve --broker
nats://`` process of several behind a balancer) listens on one subject of
its own, ``meshsub.sse.<id>`` (a random id per process, which tokens carry:
see :mod:`._sse_tokens`), with NATS request/reply on the app's own broker
connection (``NatsBroker.request`` / ``serve_requests``). One subscription
per process, whatever the number of streams, rather than one per token:
opening a stream then costs no subscription round trip, and the process,
not the token, is the unit that lives and dies. A dead process's subject
has no subscriber left, which nats-server says at once (*no responders*):
that is :attr:`RelayError.gone`, a 404 for the stream, not a 503 after the
deadline.

Every wait is bounded (:data:`CALL_TIMEOUT`): an answer that does not come,
a broker that is down or refuses the message is a :class:`RelayError` (503,
or 413 for a message NATS cannot carry), never a hang. A request carries its
deadline and is refused after it (a broker that held it through an outage
must not deliver it late), so a 503 means it was not carried out. What a
request means is the desk's business (:mod:`._sse_desk`, which also runs the
relay for as long as the server runs); this module only carries it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from ..brokers import BrokerClosed, ConnectionState, NoResponders, PublishQueueFull
from ._sse_tokens import MIN_SECRET_LENGTH, SECRET_ENV, StreamTokens, new_worker_id

log = logging.getLogger("meshsub_trio.sse_relay")

#: Seconds a process waits for another's answer (a forwarded request's own
#: answer included, so a request forwarded twice waits within it).
CALL_TIMEOUT = 5.0
#: How long an asker waits past its request's deadline for an answer sent in time.
GRACE = 0.5
#: Requests from other processes handled at once; beyond it they are refused (503).
MAX_INBOUND = 512
#: Messages waiting for the relay's task; beyond it the oldest are dropped.
INBOX = 4096
#: Where each process's own subject lives.
SUBJECT_PREFIX = "meshsub.sse."

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]


class RelayError(Exception):
    """Another process could not be asked: its ``status`` is this request's answer.

    ``gone``: nothing listens on that process's subject any more (the broker
    said so at once): the process has ended, and with it whatever it held.
    ``unanswered``: the request went out and no answer came in time (the
    process is wedged, or the broker lost it). Neither is set when the
    request was never sent (no time left, the broker down or its queue full):
    that says nothing of the other process.
    """

    def __init__(
        self, status: int, message: str, *, gone: bool = False, unanswered: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.gone = gone
        self.unanswered = unanswered


class StreamRelay:
    """One process's link to the others (see module doc).

    *broker* is the one :func:`._sse_desk.relay_running` serves on (the app's
    own connection); :meth:`serve` may be given another.
    """

    def __init__(
        self, tokens: StreamTokens, *, broker: Any = None, timeout: float = CALL_TIMEOUT
    ) -> None:
        self.tokens = tokens
        self.worker = tokens.worker
        self.timeout = timeout
        #: The broker to serve on for as long as the server runs.
        self.bus: Any = broker
        #: The broker served on (None until :meth:`serve` has subscribed).
        self.broker: Any = None
        #: What handles requests from other processes (the desk, while the server runs).
        self.handler: Handler | None = None
        self._next_call = 0
        self._ready = trio.Event()
        #: Requests from other processes being handled now.
        self._busy = 0
        #: Times :meth:`serve` has started listening.
        self.listened = 0
        #: Counters for operators and tests.
        self.forwarded = 0
        self.answered = 0
        self.timeouts = 0
        self.late = 0
        self.gone = 0

    @property
    def subject(self) -> str:
        return SUBJECT_PREFIX + self.worker

    async def wait_ready(self) -> None:
        """Until the relay listens (a token issued before then could not be asked about)."""
        with trio.move_on_after(self.timeout):
            await self._ready.wait()
        if not self._ready.is_set():
            raise RelayError(503, "This worker is not connected to the others yet")

    # ---- asking another process -----------------------------------------
    async def call(
        self, worker: str, message: dict[str, Any], *, deadline: float | None = None
    ) -> dict[str, Any]:
        """*message* to *worker*; its answer.

        The request carries its *deadline* (wall-clock seconds; default
        :attr:`timeout` from now) and is refused by a process that gets it
        later, so a request answered 503 here has not been carried out there
        (unless its answer, sent in time, takes over :data:`GRACE` to come
        back: the only window left). The workers of one supervisor share a
        clock; hosts behind one balancer must keep theirs in step. A *worker*
        nobody listens for any more is a :class:`RelayError` with ``gone``,
        at once.
        """
        self._check_link()
        now = time.time()
        if deadline is None:
            deadline = now + self.timeout
        if deadline <= now:
            raise RelayError(503, "No time left to ask another worker")
        self._next_call += 1
        request = {**message, "c": self._next_call, "d": deadline, "r": self.worker}
        self.forwarded += 1
        try:
            answer = await self.broker.request(
                SUBJECT_PREFIX + worker, request, timeout=deadline - now + GRACE
            )
        except TimeoutError:
            self.timeouts += 1
            silent = "The worker holding this stream did not answer"
            raise RelayError(503, silent, unanswered=True) from None
        except (PublishQueueFull, BrokerClosed) as error:
            raise RelayError(503, "The broker between workers is unavailable") from error
        except TypeError as error:  # orjson's, for what JSON cannot hold
            raise RelayError(400, "Cannot pass this request between workers") from error
        except ValueError as error:  # past NATS's max payload, or an answer not JSON
            raise RelayError(413, "Too large to pass between workers") from error
        except NoResponders:
            self.gone += 1
            raise RelayError(503, "The worker holding this stream is gone", gone=True) from None
        if not isinstance(answer, dict):
            return {"s": 502, "m": "A worker gave a malformed answer"}
        return answer

    def tell(self, worker: str, message: dict[str, Any]) -> None:
        """*message* to *worker*, answered by nobody (lost if the broker is down)."""
        try:
            self._check_link()
            self.broker.publish(SUBJECT_PREFIX + worker, {**message, "r": self.worker})
        except (RelayError, PublishQueueFull, BrokerClosed, TypeError, ValueError) as error:
            log.info("could not tell worker %s: %s", worker, error)

    def link_up(self) -> bool:
        broker = self.broker
        return broker is not None and broker.state is ConnectionState.CONNECTED

    def _check_link(self) -> None:
        if not self.link_up():
            raise RelayError(503, "The broker between workers is unavailable")

    # ---- answering the others -------------------------------------------
    async def serve(
        self, broker: Any, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer the requests sent to this process's subject on *broker* until it closes."""
        requests: AbstractAsyncContextManager[Any] = broker.serve_requests(
            self.subject, capacity=INBOX
        )
        async with requests as inbox, trio.open_nursery() as nursery:
            self.broker = broker
            self.listened += 1
            self._ready.set()
            task_status.started()
            try:
                async for request in inbox:
                    self._receive(request, nursery)
            finally:
                self.broker = None
                self._ready = trio.Event()
                nursery.cancel_scope.cancel()

    def _receive(self, request: Any, nursery: trio.Nursery) -> None:
        message = request.message
        if not isinstance(message, dict):
            log.warning("ignored a relay message that is not an object")
            return
        deadline = message.get("d")
        if "c" in message and not (isinstance(deadline, float) and time.time() < deadline):
            self.late += 1  # its asker has given up, or will before we are done
            self._answer(request, {"s": 503, "m": "The request reached the worker too late"})
            return
        if self._busy >= MAX_INBOUND:
            self._answer(request, {"s": 503, "m": "Too many requests between workers"})
            return
        self._busy += 1
        nursery.start_soon(self._handle, request)

    async def _handle(self, request: Any) -> None:
        message: dict[str, Any] = request.message
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
            self._answer(request, answer)

    def _answer(self, request: Any, answer: dict[str, Any]) -> None:
        """*answer* to *request*'s asker (a notice has none: nobody waits for it)."""
        broker = self.broker
        if broker is None or request.reply is None:
            return
        try:
            if broker.reply(request, answer):
                self.answered += 1
        except (PublishQueueFull, BrokerClosed, TypeError, ValueError) as error:
            log.info("could not answer another worker: %s", error)


def relay_secret(environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The secret graphql-sse stream tokens are signed with, shared by every
    process of one server: ``MESHSUB_STREAM_SECRET`` (never a command-line
    option, which every local user can read). None when it is not set (each
    process then keeps its tokens to itself); a start-up refusal when it is too
    short to sign with."""
    secret = environ.get(SECRET_ENV, "")
    if not secret:
        return None
    if len(secret) < MIN_SECRET_LENGTH:
        raise SystemExit(
            f"meshsub-trio: {SECRET_ENV} must be at least {MIN_SECRET_LENGTH} characters"
        )
    return secret.encode()


def relay_for(broker: Any, secret: bytes | None) -> StreamRelay | None:
    """This process's relay on *broker* (its shared one), or None without a
    *secret*, which is said once: single connection mode then needs every
    request of a stream to reach the process that reserved it."""
    if secret is None:
        log.warning(
            "%s is not set: graphql-sse single connection streams need session affinity "
            "(give every process behind the balancer the same secret of %d+ characters "
            "to make them one server)",
            SECRET_ENV,
            MIN_SECRET_LENGTH,
        )
        return None
    return StreamRelay(StreamTokens(secret, new_worker_id()), broker=broker)
