"""Validation that pauses, and stops at a CPU-time limit.

The caps on tokens, depth, fields and field merging's budget make a new
document's cost finite, not small: graphql-core's rules do work per node
that no count predicts. A "Did you mean" suggestion compares one unknown
name with every type of the schema, so 101 unknown type names close to real
ones (611 tokens, within every cap) cost 0.3-0.5 s, and a Relay-style page
costs field merging 40 ms though it is valid. So validation looks at a
:class:`Clock` on entering every AST node and every few units of field
merging's budget. Run in slices (``_lockstep``), the clock pauses the work
every :data:`SLICE` seconds, so the loop goes round and valid documents need
no time limit of their own; in every mode it stops a document's validation
once it has used :data:`DOCUMENT_CPU_LIMIT` of its thread's CPU time.

A document stopped by the clock is refused, but not cached: the same text
may pass on a quieter machine, and an attacker sending it again pays the
limit again, in slices like every new document.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from time import perf_counter, thread_time
from typing import Any

from graphql import DocumentNode, ValidationContext
from graphql.validation import ASTValidationRule, OverlappingFieldsCanBeMergedRule
from graphql.validation.rules.overlapping_fields_can_be_merged import RuleContext
from graphql.validation.validate import ValidationAbortedError

#: CPU seconds one document's validation may use in all (pausing between
#: slices, so the loop is not held for it). The costliest realistic documents
#: seen took 40 ms (a Relay-style list page); the attacks above, 0.3-1 s.
DOCUMENT_CPU_LIMIT = 0.1

#: Seconds of work between two pauses when validating in slices.
SLICE = 0.005

#: Work graphql-core's field-merging rule may spend (its default is 500,000).
#: A unit costs 0.35-1.8 us here. A Relay-style list page of 15 components
#: with 3 child fragments each spends 17,925, one of 40 flat components
#: 11,280. Past the budget a document is refused for good (and cached so).
OVERLAP_BUDGET = 50_000

#: graphql-core's per-validation caches on its ValidationContext (emptied by
#: :meth:`OverlapWithinBudget.release`; a name that is gone is skipped).
_CONTEXT_CACHES = (
    "_fragments",
    "_fragment_spreads",
    "_recursively_referenced_fragments",
    "_variable_usages",
    "_recursive_variable_usages",
    "_fragment_variable_usages",
)

#: Units of that budget between two looks at the clock.
UNITS_PER_LOOK = 64

#: The refusal of a document the clock stopped (not cached: it may pass later).
TOO_COSTLY = (
    f"Validation aborted: the document took over {DOCUMENT_CPU_LIMIT * 1000:.0f} ms"
    " of CPU time to validate."
)


class _CollectorTime(threading.local):
    """CPU seconds the cyclic collector has run in this thread: not the
    document's to pay (a full pass over a large heap, triggered by whatever
    allocated last, took a whole limit in a busy test process)."""

    spent = 0.0
    started = 0.0


_collector = _CollectorTime()


def _on_collection(phase: str, _info: dict[str, Any]) -> None:
    if phase == "start":
        _collector.started = thread_time()
    else:
        _collector.spent += thread_time() - _collector.started


gc.callbacks.append(_on_collection)


def _cpu_now() -> float:
    """This thread's CPU time, less what the collector used of it."""
    return thread_time() - _collector.spent


class Clock:
    """What validation looks at: the CPU limit of one document and, when run
    in slices, when to pause. Made in the thread that validates (CPU time is
    per thread). Looking is cheap: the wall clock (a fraction of the cost of
    the CPU clock) says when there can be something to do."""

    __slots__ = ("_cpu_end", "_limit", "_next", "_pause", "expired")

    def __init__(
        self, pause: Callable[[], None] | None = None, limit: float = DOCUMENT_CPU_LIMIT
    ) -> None:
        self._cpu_end = _cpu_now() + limit
        self._limit = limit
        self._pause = pause
        self._next = perf_counter() + (SLICE if pause is not None else limit)
        #: Set once the limit stopped the validation.
        self.expired = False

    def spent(self) -> bool:
        """Whether the CPU limit is spent (then :attr:`expired`); pauses first
        when this slice is over."""
        if perf_counter() < self._next:
            return False
        if _cpu_now() >= self._cpu_end:
            self.expired = True
            return True
        self.between()
        if self._pause is None:  # wall time runs at least as fast as CPU time
            self._next = perf_counter() + (self._cpu_end - _cpu_now())
        return False

    def check(self) -> None:
        """Abort the validation in progress once the limit is spent."""
        if self.spent():
            raise ValidationAbortedError(TOO_COSTLY)

    def used(self) -> float:
        """CPU seconds used since the clock was made (in its thread)."""
        return self._limit - (self._cpu_end - _cpu_now())

    def between(self) -> None:
        """A point where pausing costs nothing to the work: pause if sliced."""
        if self._pause is not None:
            self._pause()
            self._next = perf_counter() + SLICE


class DeadlineRule(ASTValidationRule):
    """A rule that validates nothing: it looks at the clock on entering every
    node, before the other rules' work there."""

    def __init__(self, context: ValidationContext, clock: Clock) -> None:
        super().__init__(context)
        self._clock = clock

    def enter(self, *_args: Any) -> None:
        self._clock.check()


class _CountedBudget:
    """Stands in for graphql-core's integer budget of field merging (it only
    subtracts and compares with zero): counts units, and every
    :data:`UNITS_PER_LOOK` looks at the clock too."""

    __slots__ = ("_clock", "_look_at", "units")

    def __init__(self, units: int, clock: Clock) -> None:
        self.units = units
        self._clock = clock
        self._look_at = units - UNITS_PER_LOOK

    def __isub__(self, cost: int) -> _CountedBudget:
        self.units -= cost
        return self

    def __lt__(self, zero: int) -> bool:
        if self.units < zero:
            return True
        if self.units <= self._look_at:
            self._look_at = self.units - UNITS_PER_LOOK
            return self._clock.spent()
        return False


class OverlapWithinBudget(OverlappingFieldsCanBeMergedRule):
    """graphql-core's field-merging rule within :data:`OVERLAP_BUDGET` units,
    looking at *clock*; past either it aborts with graphql-core's
    "Validation aborted." (:attr:`Clock.expired` tells which)."""

    def __init__(self, context: ValidationContext, clock: Clock | None = None) -> None:
        super().__init__(context)
        budget = _CountedBudget(OVERLAP_BUDGET, clock or Clock(limit=float("inf")))
        # graphql-core declares an int; the rule only subtracts and compares.
        setattr(self.rule_context, "remaining_complexity_budget", budget)  # noqa: B010

    def release(self) -> None:
        """Drop what this validation cached, once it is over.

        The rules, their context and graphql-core's visitors refer to each
        other, so all they hold (tens of thousands of comparisons and field
        lists for a costly document) would wait for the cyclic collector, and
        a burst of such documents made one collection of ~900,000 objects
        (0.66 s with the loop waiting). Emptied here (and the document let go),
        reference counting frees them at once."""
        self.rule_context = RuleContext()
        self.context.document = DocumentNode(definitions=())
        for name in _CONTEXT_CACHES:
            clear = getattr(getattr(self.context, name, None), "clear", None)
            if callable(clear):
                clear()
