"""Which plan runs an operation (or a subscription's events), and how often
graphql-core stood in.

A plan depends on the document, the operation and the variables (they decide
@skip/@include and the arguments), never on the root value, the event or the
context, so it is compiled when first needed (a query's execution, a
subscription's first event) and cached on the document's cache entry, keyed
by operation name and the variables' canonical JSON. An operation whose
document cannot be compiled runs on graphql-core: the counters say how often.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from graphql.execution.executor import Executor

from ._compiler import Unsupported, compile_plan
from ._documents import Document
from ._plan import Plan

log = logging.getLogger("meshsub_trio.execution")

#: Plans kept per document (distinct variables); the oldest goes first.
PLANS_PER_DOCUMENT = 32


class Plans:
    """Finds the plan of an operation; counts compiled and fallback executions."""

    def __init__(self, enabled: bool = True) -> None:
        #: Whether events run on compiled plans at all (``Config.compiled_execution``).
        self.enabled = enabled
        #: Executions (subscription events, queries, mutations) by a compiled plan.
        self.compiled_events = 0
        #: Executions by graphql-core while compiled execution is on
        #: (``meshsub_compiled_fallbacks_total``).
        self.fallback_events = 0
        #: Plans refused: (document, operation, variables) left to graphql-core.
        self.refused = 0
        #: Operations moved to graphql-core midway: none since plans await
        #: async resolvers themselves; kept for ``meshsub_compiled_bailouts``.
        self.bailed = 0

    def find(
        self,
        document: Document | None,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        executor: Executor[Any],
    ) -> Plan | None:
        """The plan for this operation, compiled now if needed; None: graphql-core."""
        if not self.enabled:
            return None
        key = _variables_key(variables)
        if document is None or key is None:
            return self._compile(executor)
        cache = document.plans
        entry = (operation_name, key)
        if entry in cache:
            return cache[entry]
        plan = self._compile(executor)
        cache[entry] = plan
        if len(cache) > PLANS_PER_DOCUMENT:
            del cache[next(iter(cache))]
        return plan

    def _compile(self, executor: Executor[Any]) -> Plan | None:
        try:
            return compile_plan(executor)
        except Unsupported as reason:
            self.refused += 1
            log.debug("graphql-core executes this operation: %s", reason)
        except Exception:  # a compiler bug must cost speed, never a response
            self.refused += 1
            log.exception("compiling an operation failed; graphql-core executes it")
        return None


def _variables_key(variables: dict[str, Any] | None) -> bytes | None:
    """The variables as canonical JSON, None if they are not JSON (then not cached)."""
    try:
        return orjson.dumps(variables, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
