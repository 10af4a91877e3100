"""Running an app's interceptor chain for one operation.

Only operations of an app with interceptors come here: ``enter`` in order,
then each interceptor's optional ``gate`` (see
:class:`~.._intercept.ValueInterceptor`), and ``leave`` in reverse from the
operation's ``finally``. A gate is applied where the source's values appear,
one way per kind of source, so the ungated paths stay exactly as they are:

- a subscribe generator: wrapped by :class:`GatedSource`;
- an own streamer: :class:`GatedStream`, whose ``emit`` gates, then emits;
- a shared streamer: not shared (see :meth:`Operation._cohort_key`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import replace
from time import perf_counter as clock
from typing import TYPE_CHECKING, Any

import trio
from graphql import GraphQLError, get_operation_ast

from .._app import Streamer
from .._execution import Prepared, format_errors
from .._intercept import SKIP, Gate, OperationInfo, OperationOutcome, Reason
from ._stream import PrivateStream

if TYPE_CHECKING:
    from ._operation import Operation

log = logging.getLogger("meshsub_trio.operation")


async def enter(operation: Operation) -> bool:
    """The ``enter`` chain: whether the operation goes on (False: refused, and answered).

    A document that does not validate never reaches the chain: it goes on,
    and the usual path answers it (the document cache makes the second look
    free).
    """
    sink = operation.sink
    request = operation.request
    document = await sink.engine.documents.fetch(request.query)
    node = document.node
    ast = get_operation_ast(node, request.operation_name) if node else None
    if ast is None:
        return True
    info = OperationInfo(
        id=operation.id,
        document=request.query,
        variables=dict(request.variables or {}),
        operation_name=ast.name.value if ast.name else None,
        kind=ast.operation.value,
        context=replace(sink.context, extensions=request.extensions or {}),
        protocol=sink.protocol,
        transport=sink.transport,
    )
    operation.info = info
    try:
        for interceptor in sink.app.interceptors:
            await interceptor.enter(info)
            info.entered += 1
    except GraphQLError as refusal:
        operation.end = "refused"
        extra = operation.log_fields()
        log.info("%s refused: %s", operation.label, refusal.message, extra=extra)
        await operation.delivery.error(operation, format_errors([refusal], operation.label))
        return False
    if info.variables != (request.variables or {}):
        operation.request = replace(request, variables=info.variables)
    if info.kind == "subscription":
        operation.gate = chain_gate(sink.app.interceptors, info)
    return True


def chain_gate(interceptors: Iterable[object], op: OperationInfo) -> Gate | None:
    """The gates of *interceptors* for *op*, composed in order (None: no gate at all)."""
    gates: list[Gate] = []
    for interceptor in interceptors:
        make = getattr(interceptor, "gate", None)
        if make is not None:
            gate = make(op)
            if gate is not None:
                gates.append(gate)
    if len(gates) <= 1:
        return gates[0] if gates else None

    def chained(value: Any) -> Any:
        for gate in gates:
            value = gate(value)
            if value is SKIP:
                break
        return value

    return chained


def leave(operation: Operation, info: OperationInfo) -> None:
    """``leave`` in reverse, for each interceptor whose ``enter`` completed."""
    if not info.entered:
        return
    end = operation.end
    reason: Reason
    if operation.stopped_by_client:
        reason = "stopped"
    elif end in ("complete", "error", "closed", "refused"):
        reason = end  # type: ignore[assignment]
    else:
        reason = "error"  # crashed
    duration = clock() - operation.started
    outcome = OperationOutcome(
        reason, duration, operation.sent, operation.dropped, operation.skipped
    )
    chain = operation.sink.app.interceptors[: info.entered]
    for interceptor in reversed(chain):
        try:
            interceptor.leave(info, outcome)
        except Exception:
            # One failing observer must not skip the others' cleanup.
            log.exception("interceptor %r failed in leave", interceptor)


class GatedSource:
    """A subscribe generator's values through a gate; closing it closes the generator."""

    __slots__ = ("_gate", "_iterator", "_operation")

    def __init__(self, operation: Operation, gate: Gate, source: AsyncIterable[Any]) -> None:
        self._operation = operation
        self._gate = gate
        self._iterator: AsyncIterator[Any] = aiter(source)

    def __aiter__(self) -> GatedSource:
        return self

    async def __anext__(self) -> Any:
        while True:
            value = self._gate(await anext(self._iterator))
            if value is not SKIP:
                return value
            self._operation.skipped += 1
            # A skipped value sends nothing, so nothing else would yield to the loop.
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class GatedStream(PrivateStream):
    """An own streamer whose values pass the operation's gate before ``emit``.

    A subclass, so that an ungated stream's ``emit`` does not even look for a gate.
    """

    __slots__ = ("_gate",)

    def __init__(self, operation: Operation, prepared: Prepared, spec: Streamer, gate: Gate):
        super().__init__(operation, prepared, spec)
        self._gate = gate

    def emit(self, item: Any) -> None:
        if self.failure is not None or self.buffer.consumer_closed:
            super().emit(item)  # ignores it, or raises BufferClosed to a publisher
            return
        try:
            value = self._gate(item)
        except Exception as error:
            self._fail(error)
            return
        if value is SKIP:
            self.operation.skipped += 1
            return
        super().emit(value)
