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

Preparation goes in three pieces (parse; limits and every rule but field
merging; field merging, the one rule quadratic in a document), and
:meth:`DocumentCache.fetch` lets the event loop go round between them, so
no single piece holds it for long (``_turns``).
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Generator
from dataclasses import dataclass, field

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

from ._limits import Limits, check_limits
from ._plan import Plan
from ._turns import Turns

#: Characters allowed per token of ``max_tokens``: real documents use about
#: ten (indentation included); lexing costs up to 0.2 us per character.
CHARS_PER_TOKEN = 16

#: Bytes a parsed document keeps per token (AST nodes, their locations and the
#: token list they point into): 180-690 measured across document shapes.
BYTES_PER_TOKEN = 700

#: Bytes a cached error keeps besides its message (measured: about 430).
BYTES_PER_ERROR = 500

#: Work graphql-core's field-merging rule may spend (its default is 500,000).
#: A unit costs 0.6-1.8 us here, so 10,000 is at most about 18 ms: the
#: documents of the suite and of Meshery's UI spend none, 60 fragments spread
#: side by side that all select the same alias spend 8,970, and 500 different
#: fields under one alias would spend 250,000 (each pair conflicts).
OVERLAP_BUDGET = 10_000


class _OverlappingFieldsWithinBudget(OverlappingFieldsCanBeMergedRule):
    """graphql-core's rule with a smaller complexity budget, so documents
    quadratic to compare abort validation ("Validation aborted.") within ~18 ms."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.rule_context.remaining_complexity_budget = OVERLAP_BUDGET


#: graphql-core's specified rules but field merging, which runs on its own.
RULES_BUT_OVERLAP: tuple[type[ASTValidationRule], ...] = tuple(
    rule for rule in specified_rules if rule is not OverlappingFieldsCanBeMergedRule
)
OVERLAP_RULES: tuple[type[ASTValidationRule], ...] = (_OverlappingFieldsWithinBudget,)


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

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: str) -> Document:
        """The outcome for *query*, prepared now if it is not cached."""
        entry = self._entries.get(query)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(query)
            return entry
        self.misses += 1
        too_long = self._too_long(query)
        if too_long is not None:
            return too_long  # refused at a glance: not worth keeping a long key for
        entry = self._prepare(query)
        self._store(query, entry)
        return entry

    async def fetch(self, query: str) -> Document:
        """:meth:`get`, but a new document is prepared in pieces metered by
        passes of the event loop (see ``_turns``), so neither one costly
        document nor a burst of them holds the loop for long. Cached documents,
        and new ones within the pass's budget, come back without a checkpoint."""
        entry = self._entries.get(query)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(query)
            return entry
        self.misses += 1
        too_long = self._too_long(query)
        if too_long is not None:
            return too_long
        pieces = self._pieces(query)
        while True:
            await self._turns.take()
            prepared = self._entries.get(query)
            if prepared is not None:  # by another task meanwhile
                pieces.close()
                return prepared
            started = time.perf_counter()
            try:
                next(pieces)
            except StopIteration as done:
                outcome: Document = done.value
                break
            finally:
                self._turns.spent(time.perf_counter() - started)
        self._store(query, outcome)
        return outcome

    def prepare(self, query: str) -> Document:
        """Parse, check the limits, validate: the outcome, not cached."""
        return self._too_long(query) or self._prepare(query)

    def _prepare(self, query: str) -> Document:
        """All of :meth:`_pieces` in one go."""
        pieces = self._pieces(query)
        try:
            while True:
                next(pieces)
        except StopIteration as done:
            entry: Document = done.value
            return entry

    def _too_long(self, query: str) -> Document | None:
        """The refusal of a document too long to lex (at 0.2 us a character)."""
        if self.max_tokens is None or len(query) <= self.max_tokens * CHARS_PER_TOKEN:
            return None
        message = (
            f"Document has {len(query)} characters; the limit is"
            f" {self.max_tokens * CHARS_PER_TOKEN} ({CHARS_PER_TOKEN} per token of max_tokens)."
        )
        return Document(None, (GraphQLError(message),))

    def _pieces(self, query: str) -> Generator[None, None, Document]:
        """Prepare *query*, yielding between pieces of at most tens of
        milliseconds each; the outcome is the generator's return value.

        Field merging runs only on a document every other rule accepts, so a
        document refused by both reports the other rules' errors alone."""
        try:
            node = parse(query, max_lexical_tokens=self.max_tokens, max_comments=self.max_tokens)
        except GraphQLError as error:
            return _refused(query, (self._parse_error(error),))
        yield
        errors = check_limits(self.schema, node, self.limits)
        if not errors:
            errors = validate(self.schema, node, RULES_BUT_OVERLAP)
        if not errors:
            yield
            errors = validate(self.schema, node, OVERLAP_RULES)
        if errors:
            return _refused(query, tuple(errors))
        return Document(node, (), sys.getsizeof(query) + BYTES_PER_TOKEN * _tokens(node))

    def _parse_error(self, error: GraphQLError) -> GraphQLError:
        """A token cap's syntax error, reworded to name the setting."""
        for what in ("tokens", "comments"):
            if error.message == (
                f"Syntax Error: Document contains more than {self.max_tokens} {what}."
                " Parsing aborted."
            ):
                return GraphQLError(
                    f"Document has more than {self.max_tokens} {what};"
                    f" the limit is {self.max_tokens} (max_tokens)."
                )
        return error

    def _store(self, query: str, entry: Document) -> None:
        if entry.size > self.max_bytes // 8:
            return  # one entry would crowd out many: prepared again when asked
        self._entries[query] = entry
        self.bytes += entry.size
        while len(self._entries) > self.size or self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size


def _refused(query: str, errors: tuple[GraphQLError, ...]) -> Document:
    """The errors alone: copies without nodes, source or traceback, so caching
    them keeps no AST (or parser frames) alive."""
    slim = []
    size = sys.getsizeof(query)  # the cache key
    for error in errors:
        copy = GraphQLError(error.message, extensions=error.extensions or None)
        copy.locations = error.locations
        slim.append(copy)
        size += BYTES_PER_ERROR + len(error.message)
    return Document(None, tuple(slim), size)


def _tokens(node: DocumentNode) -> int:
    """How many tokens a parsed document holds, counted along their list."""
    tokens = 0
    token: Token | None = node.loc.start_token if node.loc is not None else None
    while token is not None:
        tokens += 1
        token = token.next
    return tokens
