"""Executing GraphQL under Trio: one entry point for every host and protocol.

The engine turns a request (query text, variables, operation name, context)
into an executor, runs single-result operations, opens subscription sources
and executes one source event at a time. Documents come from the cache;
graphql-core's asyncio gather is replaced by a Trio one.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any

from graphql import ExecutionResult, GraphQLError, OperationType
from graphql.execution import create_source_event_stream
from graphql.execution.executor_throwing_on_incremental import ExecutorThrowingOnIncremental
from graphql.pyutils import is_awaitable

from .._app import App, Cursored, StreamerSource
from .._encoding import dumps
from ._documents import Document, DocumentCache
from ._errors import public_errors
from ._limits import MAX_VARIABLE_VALUES, Limits, variables_over_limit
from ._plan import Plan
from ._plans import Plans
from ._trio_gather import install as install_trio_gather

Errors = list[dict[str, Any]]

#: ``Prepared.plan`` before the first event has looked for one.
UNCOMPILED: Any = object()


@dataclass(slots=True)
class Prepared:
    """A validated operation, ready to execute."""

    executor: ExecutorThrowingOnIncremental
    kind: OperationType
    #: Who runs it, as error messages and logs name it ("operation 3").
    label: str = "request"
    #: Its compiled plan (for a subscription, of its events): UNCOMPILED until
    #: first needed, None when graphql-core executes it (see ``_plans``).
    plan: Plan | None = UNCOMPILED
    #: What the plan is found by: the cache entry, the operation, the variables.
    document: Document | None = None
    operation_name: str | None = None
    variables: dict[str, Any] | None = None

    def release(self) -> None:
        """Break the executor's reference cycle (it holds helpers bound to itself)
        once nothing will run on it again: reference counting then frees it at
        once instead of leaving a dozen objects per operation to the cyclic
        collector, which under connection churn costs more than the work."""
        self.executor.async_helpers = None  # type: ignore[assignment]


def format_errors(
    errors: list[GraphQLError] | tuple[GraphQLError, ...], label: str = "request"
) -> Errors:
    """Errors as the client sees them: internal ones masked (see ``_errors``)."""
    return public_errors(errors, label)


def format_result(result: ExecutionResult, label: str = "request") -> dict[str, Any]:
    """The response map: ``data``, then ``errors``/``extensions`` only when present."""
    response: dict[str, Any] = {"data": result.data}
    if result.errors:
        response["errors"] = public_errors(result.errors, label)
    if result.extensions:
        response["extensions"] = result.extensions
    return response


class Engine:
    """Executes operations against one :class:`App`."""

    def __init__(
        self,
        app: App,
        *,
        max_depth: int | None = 15,
        max_fields: int | None = 2_000,
        max_cost: int | None = 100_000,
        max_tokens: int | None = 2_000,
        cache_size: int = 1024,
        cache_bytes: int = 32 * 1024 * 1024,
        compiled: bool = True,
    ) -> None:
        # Process-wide and idempotent: the first engine checks graphql-core's
        # internals and patches its gather (a clear error if they moved).
        install_trio_gather()
        self.app = app
        #: Compiled execution of operations and subscription events, and its counters.
        self.plans = Plans(compiled)
        self.documents = DocumentCache(
            app.schema,
            limits=Limits(max_depth, max_fields, max_cost),
            max_tokens=max_tokens,
            size=cache_size,
            max_bytes=cache_bytes,
        )

    def prepare(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
        label: str = "request",
    ) -> Prepared | list[GraphQLError]:
        """Build an executor, or return the request errors that prevent one."""
        return self._build(self.documents.get(query), variables, operation_name, context, label)

    async def prepare_async(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
        label: str = "request",
    ) -> Prepared | list[GraphQLError]:
        """:meth:`prepare` for hosts: a new document waits its turn to be parsed
        and validated (see :meth:`DocumentCache.fetch`)."""
        document = await self.documents.fetch(query)
        return self._build(document, variables, operation_name, context, label)

    def _build(
        self,
        document: Document,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
        label: str,
    ) -> Prepared | list[GraphQLError]:
        if document.node is None:
            return list(document.errors)
        if variables and variables_over_limit(variables):
            message = f"Variables hold more than {MAX_VARIABLE_VALUES} values"
            return [GraphQLError(message, extensions={"code": "VARIABLES_TOO_LARGE"})]
        executor = ExecutorThrowingOnIncremental.build(
            self.app.schema,
            document.node,
            self.app.root_value,
            context,
            variables,
            operation_name,
        )
        if isinstance(executor, list):
            return executor
        assert isinstance(executor, ExecutorThrowingOnIncremental)
        kind = executor.operation.operation
        if not self.plans.enabled:
            return Prepared(executor, kind, label, None)
        return Prepared(executor, kind, label, UNCOMPILED, document, operation_name, variables)

    async def execute(self, prepared: Prepared) -> ExecutionResult:
        """Run a query or mutation to its single result: on its compiled plan
        when it has one (a mutation's root fields one after the other)."""
        executor = prepared.executor
        plan = self._plan_of(prepared)
        if plan is not None:
            self.plans.compiled_events += 1
            result: Any = plan.run(
                executor.root_value, executor.context_value, executor.async_helpers
            )
        else:
            if self.plans.enabled:
                self.plans.fallback_events += 1
            result = executor.execute_operation()
        if is_awaitable(result):
            result = await result
        assert isinstance(result, ExecutionResult)
        return result

    async def open_source(
        self, prepared: Prepared
    ) -> AsyncIterable[Any] | StreamerSource | ExecutionResult:
        """Call the subscription field's subscribe resolver: a source, or errors."""
        source = create_source_event_stream(prepared.executor)
        if is_awaitable(source):
            source = await source
        return source  # type: ignore[return-value]

    async def execute_event(self, prepared: Prepared, event: Any) -> ExecutionResult:
        """Execute the subscription's selection set with *event* as root value."""
        result = self._execute_now(prepared, event)
        if is_awaitable(result):
            result = await result
        assert isinstance(result, ExecutionResult)
        return result

    async def event_payload(self, prepared: Prepared, item: Any) -> bytes:
        """Execute one source item and encode its response (with its cursor, if any)."""
        payload = self.event_payload_now(prepared, item)
        return payload if isinstance(payload, bytes) else await payload

    def event_payload_now(
        self, prepared: Prepared, item: Any
    ) -> bytes | Coroutine[Any, Any, bytes]:
        """The payload at once when execution needs no await; else a coroutine for it."""
        cursor = None
        if type(item) is Cursored:
            cursor, item = item.cursor, item.value
        result = self._execute_now(prepared, item)
        if is_awaitable(result):
            return _encode_later(result, cursor, prepared.label)
        assert isinstance(result, ExecutionResult)
        return _encode(result, cursor, prepared.label)

    def _execute_now(self, prepared: Prepared, event: Any) -> Any:
        """The event's result, or an awaitable of it when a resolver needs awaiting:
        from the compiled plan when there is one, else from graphql-core."""
        plan = self._plan_of(prepared)
        executor = prepared.executor
        if plan is not None:
            self.plans.compiled_events += 1
            return plan.run(event, executor.context_value, executor.async_helpers)
        if self.plans.enabled:
            self.plans.fallback_events += 1
        return executor.build_per_event_executor(event).execute_operation(False)

    def _plan_of(self, prepared: Prepared) -> Plan | None:
        """*prepared*'s plan, found (or compiled) the first time it is needed."""
        plan = prepared.plan
        if plan is UNCOMPILED:
            plan = prepared.plan = self.plans.find(
                prepared.document, prepared.operation_name, prepared.variables, prepared.executor
            )
            prepared.document = prepared.variables = None  # found: no longer needed
        return plan


def _encode(result: ExecutionResult, cursor: str | None, label: str) -> bytes:
    response = format_result(result, label)
    if cursor is not None:
        response["extensions"] = {**response.get("extensions", {}), "cursor": cursor}
    return dumps(response)


async def _encode_later(result: Awaitable[Any], cursor: str | None, label: str) -> bytes:
    outcome = await result
    assert isinstance(outcome, ExecutionResult)
    return _encode(outcome, cursor, label)
