"""Parse and validate each distinct document once.

Parsing and validating costs about a millisecond; executing one event about
forty microseconds. Subscriptions re-send the same few documents all day, so
the outcome for each query text is cached (errors included) in a bounded LRU.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse, specified_rules, validate

from ._depth import depth_limit_rule


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed document, or the errors that stop it from running."""

    node: DocumentNode | None
    errors: tuple[GraphQLError, ...]


class DocumentCache:
    """A bounded LRU of parse + validate outcomes, keyed by query text."""

    def __init__(
        self, schema: GraphQLSchema, *, max_depth: int | None = 15, size: int = 1024
    ) -> None:
        self.schema = schema
        self.size = size
        self.hits = 0
        self.misses = 0
        rules = list(specified_rules)
        if max_depth is not None:
            rules.append(depth_limit_rule(max_depth))
        self._rules = tuple(rules)
        self._entries: OrderedDict[str, Document] = OrderedDict()

    def get(self, query: str) -> Document:
        entry = self._entries.get(query)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(query)
            return entry
        self.misses += 1
        entry = self._prepare(query)
        self._entries[query] = entry
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry

    def _prepare(self, query: str) -> Document:
        try:
            node = parse(query)
        except GraphQLError as error:
            return Document(None, (error,))
        errors = validate(self.schema, node, self._rules)
        if errors:
            return Document(None, tuple(errors))
        return Document(node, ())
