"""Subscription interceptors: an ordered chain around every operation.

Lacinia-Pedestal's ``:subscription-interceptors``, reduced to what an operator
needs: ``enter`` sees an operation after its document validated and before it
executes (refuse it, or adjust its context and variables); ``leave`` sees how
it ended. ``enter`` runs in order, ``leave`` in reverse, and ``leave`` runs
exactly once for every interceptor whose ``enter`` completed, in the
operation's ``finally`` (so a slot taken in ``enter`` is always given back).

The chain runs once per operation. Events pass through it only where an
interceptor asks for that subscription's values (:class:`ValueInterceptor`,
e.g. :class:`Throttle`, :class:`Filter`): it then returns a *gate*, one
function per operation, called with each value the source produces before it
is executed. Operations without gates pay nothing per event.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import trio
from graphql import GraphQLError

from ._app import Context

#: How an operation ended, as ``leave`` sees it: ``complete`` (its source or
#: result ended), ``stopped`` (the client stopped it), ``error`` (an ``error``
#: was sent, or it crashed), ``closed`` (its connection or the server went
#: away), ``refused`` (an interceptor refused it; only earlier ones see this).
Reason = Literal["complete", "stopped", "error", "closed", "refused"]


class Refused(GraphQLError):
    """Raised by an interceptor's ``enter`` to refuse the operation.

    The client gets the ``error`` a validation error gets on its protocol,
    with ``extensions.code`` (default ``OPERATION_REFUSED``) and any other
    extensions given, so a client can tell a limit from a bad document.
    """

    def __init__(self, message: str, *, code: str = "OPERATION_REFUSED", **extensions: Any) -> None:
        super().__init__(message, extensions={"code": code, **extensions})


@dataclass(slots=True, eq=False)
class OperationInfo:
    """One operation as interceptors see it; ``enter`` may change
    ``context`` and ``variables`` (the resolvers see the result)."""

    #: The client's operation id (an HTTP stream's is its own).
    id: str
    #: The document text, as sent.
    document: str
    #: The request's variables; replace or edit before execution.
    variables: dict[str, Any]
    #: The executed operation's name, from the document (None if anonymous).
    operation_name: str | None
    #: ``"query"``, ``"mutation"`` or ``"subscription"``.
    kind: str
    #: This operation's own copy of the connection's context (its ``state``
    #: dict is still the connection's: replace it to keep changes local).
    context: Context
    #: ``"graphql-transport-ws"``, ``"graphql-ws"`` or ``"sse"``.
    protocol: str
    #: ``"ws"`` or ``"sse"``.
    transport: str
    #: Free space for interceptors to carry data from ``enter`` to ``leave``.
    state: dict[str, Any] = field(default_factory=dict)
    #: How many interceptors' ``enter`` completed (they, and only they, leave).
    entered: int = 0


@dataclass(frozen=True, slots=True)
class OperationOutcome:
    """How an operation ended: the reason, seconds it ran, frames sent for it."""

    reason: Reason
    duration: float
    sent: int
    #: Values its overflow policy dropped (a slow subscriber).
    dropped: int = 0
    #: Values its gates (:class:`ValueInterceptor`) held back.
    skipped: int = 0


class Interceptor(Protocol):
    """One link of ``App(interceptors=[...])``."""

    async def enter(self, op: OperationInfo) -> None:
        """Before execution: raise :class:`Refused` (or any ``GraphQLError``)
        to refuse, or adjust ``op.context`` / ``op.variables``."""

    def leave(self, op: OperationInfo, outcome: OperationOutcome) -> None:
        """After the end (not awaited: it runs in a ``finally``, maybe cancelled)."""


class _Skip:
    """The type of :data:`SKIP` (one instance, compared by identity)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIP"


#: What a gate returns to hold a value back: it is neither executed nor sent.
SKIP: Any = _Skip()

#: One subscription's gate: a source value in, the value to execute (the same
#: one, or a replacement) or :data:`SKIP` out. Called on the Trio thread, never
#: awaited: it must not block.
Gate = Callable[[Any], Any]


class ValueInterceptor(Interceptor, Protocol):
    """An interceptor that also sees a subscription's values (``Throttle``, ``Filter``).

    ``gate`` is called once per subscription, after the whole ``enter``
    chain: return a gate for its values, or None to leave them alone (an
    operation without any gate pays nothing per event). Gates run in chain
    order on the source's values (what a streamer emits or a subscribe
    generator yields), before each is executed, for all three kinds of
    source. A subscription with a gate never joins a cohort: it runs the
    shared streamer on its own, because a cohort's members share one
    execution and the same bytes, and a gate decides per subscriber. A gate
    that raises ends its operation with an ``error``, like a failing source.
    """

    def gate(self, op: OperationInfo) -> Gate | None:
        """This subscription's gate (its own state lives in the closure), or None."""


#: Which operations a value interceptor applies to (default: every subscription).
_Applies = Callable[[OperationInfo], bool]


def _every(_op: OperationInfo) -> bool:
    return True


class Throttle:
    """At most ``rate`` values per ``per`` seconds for each subscription; the
    rest are dropped.

    Dropped, not delayed: a value that arrives when the subscription's last
    ``per`` seconds already hold ``rate`` values is skipped outright (no
    timer, no buffer, no task), so the last value of a burst may be one of
    them. Suits streams that re-send the whole state (the next one sent
    carries everything); for events that must all arrive, use a streamer's
    ``Overflow.COALESCE`` instead. A sliding window: never more than
    ``rate`` in any ``per`` seconds. ``when(op)`` picks the subscriptions.
    """

    def __init__(
        self,
        rate: int,
        *,
        per: float = 1.0,
        when: _Applies = _every,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if rate < 1 or per <= 0:
            raise ValueError("Throttle needs rate >= 1 and per > 0")
        self.rate = rate
        self.per = per
        self.when = when
        self.clock = clock

    async def enter(self, op: OperationInfo) -> None:
        pass

    def leave(self, op: OperationInfo, outcome: OperationOutcome) -> None:
        pass

    def gate(self, op: OperationInfo) -> Gate | None:
        if op.kind != "subscription" or not self.when(op):
            return None
        rate, per, clock = self.rate, self.per, self.clock
        passed: deque[float] = deque()  # when the values still in the window were let through

        def throttle(value: Any) -> Any:
            now = clock()
            while passed and now - passed[0] >= per:
                passed.popleft()
            if len(passed) >= rate:
                return SKIP
            passed.append(now)
            return value

        return throttle


class Filter:
    """Only the values ``predicate(op, value)`` accepts reach the subscriber.

    The predicate sees each source value (what the streamer emitted or the
    generator yielded) before it is executed: a refused value costs no
    execution. ``when(op)`` picks the subscriptions.
    """

    def __init__(
        self, predicate: Callable[[OperationInfo, Any], bool], *, when: _Applies = _every
    ) -> None:
        self.predicate = predicate
        self.when = when

    async def enter(self, op: OperationInfo) -> None:
        pass

    def leave(self, op: OperationInfo, outcome: OperationOutcome) -> None:
        pass

    def gate(self, op: OperationInfo) -> Gate | None:
        if op.kind != "subscription" or not self.when(op):
            return None
        predicate = self.predicate

        def accept(value: Any) -> Any:
            return value if predicate(op, value) else SKIP

        return accept


#: Who a context belongs to: what ``authenticate`` returned (``ctx.auth``).
_UserKey = Callable[[Context], Hashable]


def _auth_key(context: Context) -> Hashable:
    key: Hashable = context.auth
    return key


class PerUserLimit:
    """At most ``max_active`` live subscriptions per user across connections,
    and at most ``max_per_minute`` started in any 60 seconds.

    Queries and mutations pass untouched. The counts live in this object, so
    they hold per process (several processes behind a balancer each count
    their own). A refusal names the limit in ``extensions``: ``code``
    ``SUBSCRIPTION_LIMIT``, ``limit`` (``max_active`` / ``max_per_minute``), ``max``.
    """

    def __init__(
        self,
        *,
        max_active: int | None = None,
        max_per_minute: int | None = None,
        key: _UserKey = _auth_key,
    ) -> None:
        self.max_active = max_active
        self.max_per_minute = max_per_minute
        self.key = key
        self._active: dict[Hashable, int] = {}
        self._starts: dict[Hashable, deque[float]] = {}
        self._swept = 0.0
        #: Where an operation's own slot is noted (unique per instance).
        self._slot = f"PerUserLimit@{id(self):x}"

    def active(self, user: Hashable) -> int:
        """How many subscriptions *user* holds now (for tests and dashboards)."""
        return self._active.get(user, 0)

    async def enter(self, op: OperationInfo) -> None:
        if op.kind != "subscription":
            return
        user = self.key(op.context)
        if self.max_active is not None and self._active.get(user, 0) >= self.max_active:
            raise Refused(
                f"Too many active subscriptions: at most {self.max_active} per user",
                code="SUBSCRIPTION_LIMIT",
                limit="max_active",
                max=self.max_active,
            )
        if self.max_per_minute is not None:
            self._admit_rate(user)
        self._active[user] = self._active.get(user, 0) + 1
        op.state[self._slot] = user

    def _admit_rate(self, user: Hashable) -> None:
        """Count a start in *user*'s sliding minute, or refuse it (not counted)."""
        now = trio.current_time()
        horizon = now - 60.0
        if now - self._swept > 60.0:
            # Forget users idle for a minute, so the map stays as small as the traffic.
            self._swept = now
            idle = [k for k, starts in self._starts.items() if not starts or starts[-1] <= horizon]
            for k in idle:
                del self._starts[k]
        starts = self._starts.setdefault(user, deque())
        while starts and starts[0] <= horizon:
            starts.popleft()
        assert self.max_per_minute is not None
        if len(starts) >= self.max_per_minute:
            raise Refused(
                f"Too many subscriptions started: at most {self.max_per_minute} per minute",
                code="SUBSCRIPTION_LIMIT",
                limit="max_per_minute",
                max=self.max_per_minute,
            )
        starts.append(now)

    def leave(self, op: OperationInfo, outcome: OperationOutcome) -> None:
        if self._slot not in op.state:
            return
        user = op.state.pop(self._slot)
        left = self._active.get(user, 0) - 1
        if left > 0:
            self._active[user] = left
        else:
            self._active.pop(user, None)


class AuditLog:
    """One INFO line per operation start and end: user key, operation name
    and id, protocol; at the end also the reason, duration and frames sent.

    The same fields travel as ``extra`` for structured (JSON) logging.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        key: _UserKey = _auth_key,
    ) -> None:
        self.logger = logger or logging.getLogger("meshsub_trio.audit")
        self.key = key

    def _fields(self, op: OperationInfo) -> dict[str, object]:
        name = op.operation_name
        return {
            "user": str(self.key(op.context))[:200],
            "operation_name": name[:100] if name else None,
            "operation_id": op.id[:64],
            "protocol": op.protocol,
        }

    async def enter(self, op: OperationInfo) -> None:
        fields = self._fields(op)
        self.logger.info(
            "operation started: user=%s name=%s id=%s protocol=%s kind=%s",
            fields["user"],
            fields["operation_name"],
            fields["operation_id"],
            fields["protocol"],
            op.kind,
            extra=fields,
        )

    def leave(self, op: OperationInfo, outcome: OperationOutcome) -> None:
        fields = self._fields(op)
        fields.update(
            reason=outcome.reason, duration_s=round(outcome.duration, 6), sent=outcome.sent
        )
        self.logger.info(
            "operation ended: user=%s name=%s id=%s reason=%s duration=%.3fs sent=%d",
            fields["user"],
            fields["operation_name"],
            fields["operation_id"],
            outcome.reason,
            outcome.duration,
            outcome.sent,
            extra=fields,
        )


if TYPE_CHECKING:  # both satisfy the protocol (checked by mypy only)
    _LIMIT: Interceptor = PerUserLimit()
    _AUDIT: Interceptor = AuditLog()
    _THROTTLE: ValueInterceptor = Throttle(1)
    _FILTER: ValueInterceptor = Filter(lambda _op, _value: True)
