"""Parse and validate each distinct document once, within bounds.

Parsing and validating costs about a millisecond; executing one event about
forty microseconds. Subscriptions re-send the same few documents all day, so
the outcome for each query text is cached (errors included) in an LRU bounded
by entries and by estimated bytes.

A new document is expensive only within bounds: the parser stops at
``max_tokens`` tokens (and at ``max_tokens * CHARS_PER_TOKEN`` characters,
since lexing long tokens and whitespace costs too), then the cheap linear
limits of :mod:`._limits` (depth, fields, cost) run, and graphql-core's
specified rules run only on a document those let through. A refused document
is cached as its errors alone, copied without the AST nodes they point to.

A new document is validated in slices of a few milliseconds with the event
loop going round between them (:meth:`DocumentCache.fetch`, ``_lockstep``),
and stops at a CPU-time limit (``_cpu_bound``): graphql-core's rules do work
per node that no cap predicts.
"""

from __future__ import annotations

import gc
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import cast

import trio
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    Token,
    ValidationContext,
    parse,
    specified_rules,
    validate,
)
from graphql.validation import ASTValidationRule, OverlappingFieldsCanBeMergedRule

from ._cpu_bound import TOO_COSTLY, Clock, DeadlineRule, OverlapWithinBudget
from ._limits import Limits, check_limits
from ._lockstep import Lockstep
from ._plan import Plan
from ._round_robin import RoundRobinLock, preparing_for
from ._turns import Turns

#: Characters allowed per token of ``max_tokens``: real documents use about
#: ten (indentation included); lexing costs up to 0.2 us per character.
CHARS_PER_TOKEN = 16

#: Bytes a parsed document keeps per token (AST nodes, their locations and the
#: token list they point into): 180-690 measured across document shapes.
BYTES_PER_TOKEN = 700

#: Bytes a cached error keeps besides its message (measured: about 430).
BYTES_PER_ERROR = 500

#: graphql-core's specified rules, field merging within a budget.
SPECIFIED_RULES: tuple[type[ASTValidationRule], ...] = tuple(
    OverlapWithinBudget if rule is OverlappingFieldsCanBeMergedRule else rule
    for rule in specified_rules
)

#: CPU seconds of validation after which its garbage is collected at once.
COLLECT_AFTER = 0.01

#: Slices a new document may take before it counts as costly: parsing is
#: one, and a cheap document validates in the next.
FREE_STEPS = 3

#: New documents tried at once before they count as costly.
TRYING_AT_ONCE = 2


def _timed(clock: Clock, made: list[OverlapWithinBudget]) -> list[type[ASTValidationRule]]:
    """:data:`SPECIFIED_RULES` looking at *clock*, behind a :class:`DeadlineRule`;
    the field-merging rule validate() makes is put in *made* (to release it)."""

    def overlap(context: ValidationContext) -> OverlapWithinBudget:
        made.append(OverlapWithinBudget(context, clock))
        return made[-1]

    bound: list[Callable[[ValidationContext], ASTValidationRule]] = [
        partial(DeadlineRule, clock=clock)
    ]
    bound += [overlap if rule is OverlapWithinBudget else rule for rule in SPECIFIED_RULES]
    return cast("list[type[ASTValidationRule]]", bound)  # validate() only calls rule(context)


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed document, or the errors that stop it from running."""

    node: DocumentNode | None
    errors: tuple[GraphQLError, ...]
    #: Estimated bytes this entry keeps alive.
    size: int = 0
    #: Compiled plans by (operation name, variables), None where graphql-core
    #: runs the operation (see ``_plans``); they live and go with the entry.
    plans: dict[tuple[str | None, bytes], Plan | None] = field(
        default_factory=dict, compare=False, repr=False
    )
    #: False for a refusal that depends on the moment (the CPU clock): not cached.
    lasting: bool = True


class DocumentCache:
    """A bounded LRU of parse + validate outcomes, keyed by query text."""

    def __init__(
        self,
        schema: GraphQLSchema,
        *,
        max_depth: int | None = 15,
        size: int = 1024,
        limits: Limits | None = None,
        max_tokens: int | None = 2_000,
        max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.schema = schema
        self.size = size
        self.max_bytes = max_bytes
        self.max_tokens = max_tokens
        self.limits = limits if limits is not None else Limits(max_depth=max_depth)
        self.hits = 0
        self.misses = 0
        #: Estimated bytes of the cached entries.
        self.bytes = 0
        self._entries: OrderedDict[str, Document] = OrderedDict()
        self._turns = Turns()
        self._preparing = RoundRobinLock()
        self._trying = trio.CapacityLimiter(TRYING_AT_ONCE)
        #: New texts being prepared, and when they are done.
        self._in_flight: dict[str, trio.Event] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _known(self, query: str) -> Document | None:
        """The cached outcome (a hit), or the refusal of a text refused at a
        glance (not worth keeping a long key for); None: to be prepared (a miss)."""
        entry = self._entries.get(query)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(query)
            return entry
        self.misses += 1
        return self._too_long(query)

    def get(self, query: str) -> Document:
        """The outcome for *query*, prepared now if it is not cached."""
        known = self._known(query)
        if known is not None:
            return known
        entry = self._prepare(query)
        self._store(query, entry)
        return entry

    async def fetch(self, query: str) -> Document:
        """:meth:`get`, but a new document is prepared in slices of a few
        milliseconds (``_lockstep``), each taken when the pass of the event
        loop has budget left (``_turns``), so neither a costly document nor a
        burst of them holds the loop for long. Cached documents come back
        without a checkpoint."""
        known = self._known(query)
        if known is not None:
            return known
        first = self._in_flight.get(query)
        if first is not None:  # the same new text, being prepared for another task
            await first.wait()
            entry = self._entries.get(query)
            if entry is not None:
                return entry
        done = self._in_flight[query] = trio.Event()
        try:
            # Cheap documents (nearly all) go at once, with no checkpoint, as a
            # plain call would; one that needs more than FREE_STEPS slices is
            # dropped and prepared again holding the one lock costly documents
            # take in turn, so they delay cheap ones by a few slices at most,
            # and few documents' validation state is alive at a time (it
            # would be promoted by the collector, then die in an old
            # generation: passes of 0.5 s). The lock goes round the
            # connections waiting for it, so one that floods it delays
            # another's costly document by one of its own at most.
            try:
                self._trying.acquire_nowait()
            except trio.WouldBlock:
                await self._trying.acquire()
            try:
                outcome = await self._prepare_in_turns(query, FREE_STEPS)
            finally:
                self._trying.release()
            if outcome is None:
                async with self._preparing.hold(preparing_for.get()):
                    outcome = await self._prepare_in_turns(query, None)
            assert outcome is not None
            self._store(query, outcome)
            return outcome
        finally:
            del self._in_flight[query]
            done.set()

    async def _prepare_in_turns(self, query: str, steps: int | None) -> Document | None:
        """Prepare *query* in slices, each when the loop's pass has budget; None
        if it needs more than *steps* of them."""
        try:
            run = Lockstep(partial(self._prepare_in_slices, query))
        except RuntimeError:  # no thread to be had: in one go, as get() does
            return self._prepare(query)
        try:
            while steps is None or steps > 0:
                await self._turns.take()
                started = time.perf_counter()
                try:
                    if run.step():
                        return run.result()
                finally:
                    self._turns.spent(time.perf_counter() - started)
                if steps is not None:
                    steps -= 1
            return None
        finally:
            run.close()

    def prepare(self, query: str) -> Document:
        """Parse, check the limits, validate: the outcome, not cached."""
        return self._too_long(query) or self._prepare(query)

    def _prepare_in_slices(self, query: str, pause: Callable[[], None]) -> Document:
        clock = Clock(pause)
        document = self._prepare(query, clock)
        if clock.used() > COLLECT_AFTER:
            # What graphql-core's visitors leave is cyclic (5,000-11,000 objects
            # for a costly document). Collected now, while young, it costs a few
            # milliseconds; left to the collector, a burst of such documents
            # made passes of 150,000-900,000 that held the loop 0.25-0.66 s.
            pause()
            gc.collect(1)
        return document

    def _too_long(self, query: str) -> Document | None:
        """The refusal of a document too long to lex (at 0.2 us a character),
        or of more lines than ``max_tokens``: every error's location is found
        by counting the lines before it, so 100 errors at the end of 27,000
        blank lines took 0.46 s in one call no clock can pause."""
        if self.max_tokens is None:
            return None
        if len(query) > self.max_tokens * CHARS_PER_TOKEN:
            message = (
                f"Document has {len(query)} characters; the limit is"
                f" {self.max_tokens * CHARS_PER_TOKEN} ({CHARS_PER_TOKEN} per token of max_tokens)."
            )
            return Document(None, (GraphQLError(message),))
        lines = query.count("\n") + query.count("\r") - query.count("\r\n") + 1
        if lines > self.max_tokens:
            message = f"Document has {lines} lines; the limit is {self.max_tokens} (max_tokens)."
            return Document(None, (GraphQLError(message),))
        return None

    def _prepare(self, query: str, clock: Clock | None = None) -> Document:
        """Parse, check the limits, validate, looking at *clock* (made here
        when not given: it measures the CPU time of the thread it is made in)."""
        clock = clock or Clock()
        try:
            node = parse(query, max_lexical_tokens=self.max_tokens, max_comments=self.max_tokens)
        except GraphQLError as error:
            return _refused(query, (self._parse_error(error),))
        clock.between()
        errors = check_limits(self.schema, node, self.limits)
        if not errors:
            made: list[OverlapWithinBudget] = []
            try:
                errors = validate(self.schema, node, _timed(clock, made))
            finally:
                for rule in made:
                    rule.release()
        tokens = _unlink_tokens(node)
        if clock.expired:
            return _refused(query, (GraphQLError(TOO_COSTLY),), lasting=False)
        if errors:
            return _refused(query, tuple(errors))
        return Document(node, (), sys.getsizeof(query) + BYTES_PER_TOKEN * tokens)

    def _parse_error(self, error: GraphQLError) -> GraphQLError:
        """A token cap's syntax error, reworded to name the setting."""
        # (Comments cannot pass the cap: each ends a line, and a document of
        # more lines than max_tokens is refused before it is parsed.)
        if error.message == (
            f"Syntax Error: Document contains more than {self.max_tokens} tokens. Parsing aborted."
        ):
            return GraphQLError(
                f"Document has more than {self.max_tokens} tokens;"
                f" the limit is {self.max_tokens} (max_tokens)."
            )
        return error

    def _store(self, query: str, entry: Document) -> None:
        if not entry.lasting or entry.size > self.max_bytes // 8:
            return  # one entry would crowd out many: prepared again when asked
        self._entries[query] = entry
        self.bytes += entry.size
        while len(self._entries) > self.size or self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size


def _refused(query: str, errors: tuple[GraphQLError, ...], *, lasting: bool = True) -> Document:
    """The errors alone: copies without nodes, source or traceback, so caching
    them keeps no AST (or parser frames) alive (*lasting*: worth caching)."""
    slim = []
    size = sys.getsizeof(query)  # the cache key
    for error in errors:
        copy = GraphQLError(error.message, extensions=error.extensions or None)
        copy.locations = error.locations
        slim.append(copy)
        size += BYTES_PER_ERROR + len(error.message)
    return Document(None, tuple(slim), size, lasting=lasting)


def _unlink_tokens(node: DocumentNode) -> int:
    """Count the document's tokens and unlink their list (each points to the
    next and the previous), which nothing reads after parsing: the document
    is then free of cycles, and freed by reference counting when it goes
    instead of by the cyclic collector."""
    tokens = 0
    token: Token | None = node.loc.start_token if node.loc is not None else None
    while token is not None:
        tokens += 1
        following = token.next
        token.prev = token.next = None
        token = following
    return tokens
