"""Let graphql-core run sibling async resolvers under Trio.

graphql-core awaits one awaitable directly, but as soon as two sibling fields
(or two list items) are awaitable it calls ``gather_with_cancel``, which is
built on asyncio's ``ensure_future`` + ``gather``. Under Trio that fails (and
leaks never-run asyncio tasks). graphql-core offers no hook for it: the
executor calls the module-level function. So we replace that one name with a
dispatcher that uses a Trio nursery under Trio and the original under asyncio,
keeping asyncio users of graphql-core in the same process working.

The patch is process-wide, so it is applied explicitly (:func:`install`, when
the first :class:`Engine` is built), never as a side effect of an import, and
checked first: if graphql-core's internals moved, the server refuses to start
with :class:`GraphQLCoreIncompatible` instead of failing on the first query.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import graphql
import sniffio
import trio
from graphql.execution import executor as _executor_module

#: The name graphql-core's executor calls to gather sibling awaitables.
PATCHED = "gather_with_cancel"

Gather = Callable[..., Awaitable[list[Any]]]

#: graphql-core's own gather, kept for asyncio callers; set by :func:`install`.
_original_gather: Gather | None = None


class GraphQLCoreIncompatible(RuntimeError):
    """graphql-core's executor no longer has the function we replace, as we expect it."""


async def trio_gather(*awaitables: Awaitable[Any]) -> list[Any]:
    """Await all concurrently; on the first exception cancel the rest and raise it bare.

    graphql-core's error handling needs the exception itself, never an
    ExceptionGroup, so the first failure is captured and re-raised unwrapped.
    """
    results: list[Any] = [None] * len(awaitables)
    failure: list[BaseException] = []

    async def run_one(index: int, awaitable: Awaitable[Any]) -> None:
        try:
            results[index] = await awaitable
        except Exception as error:
            if not failure:
                failure.append(error)
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for index, awaitable in enumerate(awaitables):
            nursery.start_soon(run_one, index, awaitable)
    if failure:
        raise failure[0]
    return results


async def gather_dispatch(*awaitables: Awaitable[Any]) -> list[Any]:
    """Trio's gather under Trio, graphql-core's own under asyncio."""
    if sniffio.current_async_library() == "trio":
        return await trio_gather(*awaitables)
    assert _original_gather is not None, "install() first"
    return await _original_gather(*awaitables)


def _incompatible(reason: str) -> GraphQLCoreIncompatible:
    return GraphQLCoreIncompatible(
        f"graphql-core {graphql.__version__}: graphql.execution.executor.{PATCHED} {reason}; "
        "meshsub-trio replaces it to run sibling async resolvers under Trio and supports "
        "the graphql-core versions its pyproject.toml pins"
    )


def check(original: object) -> Gather:
    """*original* if it is the gather we replace: ``async def f(*awaitables)``."""
    if not callable(original):
        raise _incompatible("is missing")
    try:
        parameters = list(inspect.signature(original).parameters.values())
    except (TypeError, ValueError) as error:
        raise _incompatible("has no readable signature") from error
    variadic = len(parameters) == 1 and parameters[0].kind is inspect.Parameter.VAR_POSITIONAL
    if not variadic or not inspect.iscoroutinefunction(original):
        raise _incompatible(f"has an unexpected signature {inspect.signature(original)}")
    return original


def install() -> None:
    """Check graphql-core's gather, then replace it with the dispatcher (idempotent).

    Raises :class:`GraphQLCoreIncompatible` when the attribute is missing or
    not ``async def gather_with_cancel(*awaitables)``.
    """
    global _original_gather
    current = getattr(_executor_module, PATCHED, None)
    if current is gather_dispatch:
        return
    _original_gather = check(current)
    setattr(_executor_module, PATCHED, gather_dispatch)


def installed() -> bool:
    """Whether graphql-core's executor currently calls the dispatcher."""
    return getattr(_executor_module, PATCHED, None) is gather_dispatch
