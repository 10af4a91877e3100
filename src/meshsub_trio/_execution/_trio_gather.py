"""Let graphql-core run sibling async resolvers under Trio.

graphql-core awaits one awaitable directly, but as soon as two sibling fields
(or two list items) are awaitable it calls ``gather_with_cancel``, which is
built on asyncio's ``ensure_future`` + ``gather``. Under Trio that fails (and
leaks never-run asyncio tasks). graphql-core offers no hook for it: the
executor calls the module-level function. So we replace that one name with a
dispatcher that uses a Trio nursery under Trio and the original under asyncio,
keeping asyncio users of graphql-core in the same process working.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import sniffio
import trio
from graphql.execution import executor as _executor_module

_original_gather = _executor_module.gather_with_cancel  # type: ignore[attr-defined]


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
    if sniffio.current_async_library() == "trio":
        return await trio_gather(*awaitables)
    return await _original_gather(*awaitables)


def install() -> None:
    """Install the dispatcher (idempotent)."""
    _executor_module.gather_with_cancel = gather_dispatch  # type: ignore[attr-defined]
