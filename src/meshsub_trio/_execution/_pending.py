"""The asynchronous half of a compiled plan: settling values that must be awaited.

Each coroutine here is the counterpart of one of graphql-core's (named in its
docstring), with the same order of awaiting and error handling, so a plan's
result and error list match graphql-core's when resolvers are async too.
Siblings are gathered with the engine's dispatcher (a Trio nursery under
Trio), the first failure cancelling the rest, as graphql-core does.

Whoever first wraps an application awaitable sets the run's ``pending``
flag (``later`` does it for resolver values and list items; the abstract
type, ``is_type_of`` and async iterable paths of ``_completion`` do it
themselves): objects and lists look for pending values only then.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import suppress
from typing import Any

from graphql import GraphQLError, located_error
from graphql.language import FieldNode

from ._plan import PENDING, FailFn, LazyPath, ObjectFn, Run, ValueFn, as_list
from ._trio_gather import gather_dispatch

Pending = Coroutine[Any, Any, Any]


def later(
    awaitable: Awaitable[Any], complete: ValueFn, fail: FailFn, path: LazyPath, run: Run
) -> Pending:
    """The pending completion of *awaitable* (see ``awaited_value``); flags the run."""
    run.pending = True
    return awaited_value(awaitable, complete, fail, path, run)


def pending_keys(result: dict[str, Any]) -> list[str]:
    """The keys of *result* whose values are still pending, in order."""
    return [key for key, value in result.items() if type(value) is PENDING]


def pending_indices(items: list[Any]) -> list[int]:
    """The indices of *items* still pending, in order."""
    return [index for index, value in enumerate(items) if type(value) is PENDING]


async def awaited_value(
    awaitable: Awaitable[Any], complete: ValueFn, fail: FailFn, path: LazyPath, run: Run
) -> Any:
    """A resolver's (or list item's) awaitable, completed: ``complete_awaitable_value``."""
    try:
        completed = complete(await awaitable, path, run)
        if type(completed) is PENDING:
            completed = await completed
    except Exception as raw:
        fail(raw, path, run)
        return None
    return completed


async def awaited_completion(pending: Pending, fail: FailFn, path: LazyPath, run: Run) -> Any:
    """A completion that turned asynchronous: ``execute_field``'s ``await_completed``."""
    try:
        return await pending
    except Exception as raw:
        fail(raw, path, run)
        return None


async def settle_fields(result: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """An object's pending fields, awaited together: ``execute_fields``' ``get_results``."""
    if len(keys) == 1:
        result[keys[0]] = await result[keys[0]]
        return result
    values = await gather_dispatch(*(result[key] for key in keys))
    result.update(zip(keys, values, strict=True))
    return result


async def settle_items(items: list[Any], indices: list[int]) -> list[Any]:
    """A list's pending items, awaited together: ``get_completed_results``."""
    if len(indices) == 1:
        items[indices[0]] = await items[indices[0]]
        return items
    values = await gather_dispatch(*(items[index] for index in indices))
    for index, value in zip(indices, values, strict=True):
        items[index] = value
    return items


def close_all(pending: Iterable[Any]) -> None:
    """Dispose of pending siblings a synchronous error abandons (graphql-core's
    ``settle_in_background`` closes them too when no asyncio loop runs)."""
    for value in pending:
        if type(value) is PENDING:
            value.close()


async def serial_rest(
    result: dict[str, Any],
    key: str,
    pending: Pending,
    rest: tuple[tuple[str, ValueFn], ...],
    source: Any,
    path: LazyPath,
    run: Run,
) -> dict[str, Any]:
    """A mutation's remaining root fields, each after the one before it
    (``execute_fields_serially``)."""
    result[key] = await pending
    for key, field in rest:
        value = field(source, path, run)
        result[key] = await value if type(value) is PENDING else value
    return result


async def typed_later(
    runtime_type: Awaitable[Any],
    finish: Callable[[Any, Any, LazyPath, Run], Any],
    value: Any,
    path: LazyPath,
    run: Run,
) -> Any:
    """An abstract value once ``resolve_type`` has answered: ``await_complete_object_value``."""
    completed = finish(await runtime_type, value, path, run)
    return await completed if type(completed) is PENDING else completed


async def checked_later(
    verdict: Awaitable[Any],
    invalid: Callable[[Any], GraphQLError],
    run_object: ObjectFn,
    value: Any,
    path: LazyPath,
    run: Run,
) -> Any:
    """An object once ``is_type_of`` has answered: ``execute_subfields_async``."""
    if not await verdict:
        raise invalid(value)
    completed = run_object(value, path, run)
    return await completed if type(completed) is PENDING else completed


async def async_items(
    iterator: AsyncIterator[Any],
    complete_item: ValueFn,
    item_fail: FailFn,
    is_awaitable: Callable[[Any], bool],
    nodes: list[FieldNode],
    path: LazyPath,
    run: Run,
) -> list[Any]:
    """A list field given as an async iterable: ``complete_async_iterator_value``."""
    items: list[Any] = []
    indices: list[int] = []
    early_return = getattr(iterator, "aclose", None)
    index = 0
    try:
        while True:
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                break
            except Exception as raw:
                raise located_error(raw, nodes, as_list(path)) from raw
            item_path = (path, index, None)
            if is_awaitable(item):
                items.append(awaited_value(item, complete_item, item_fail, item_path, run))
                indices.append(index)
            else:
                items.append(complete_one(item, complete_item, item_fail, item_path, run))
                if type(items[-1]) is PENDING:
                    indices.append(index)
            index += 1
    except Exception:
        if early_return is not None:
            with suppress(Exception):  # graphql-core ignores these too
                await early_return()
        close_all(items[index] for index in indices)
        raise
    return await settle_items(items, indices) if indices else items


def complete_one(
    item: Any, complete_item: ValueFn, item_fail: FailFn, path: LazyPath, run: Run
) -> Any:
    """One list item, its error handled: ``complete_list_item_value``."""
    try:
        completed = complete_item(item, path, run)
    except Exception as raw:
        item_fail(raw, path, run)
        return None
    if type(completed) is PENDING:
        return awaited_completion(completed, item_fail, path, run)
    return completed


def item_failer(nodes: list[FieldNode], nonnull: bool) -> FailFn:
    """Error handling at a list item: raised when the item type is non-null."""

    def item_fail(raw: Exception, path: LazyPath, run: Run) -> None:
        error = located_error(raw, nodes, as_list(path))
        if nonnull:
            raise error from raw
        run.errors.append(error)

    return item_fail
