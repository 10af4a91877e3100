"""The document cache: bounded by bytes, caps on tokens and length, slim errors, turns."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import trio
from graphql import GraphQLError, parse, validate

from meshsub_trio._execution import _cpu_bound
from meshsub_trio._execution._cpu_bound import OVERLAP_BUDGET, TOO_COSTLY
from meshsub_trio._execution._documents import (
    BYTES_PER_TOKEN,
    CHARS_PER_TOKEN,
    SPECIFIED_RULES,
    Document,
    DocumentCache,
)
from meshsub_trio._execution._limits import Limits
from meshsub_trio._execution._turns import Turns
from meshsub_trio.examples.countdown import app

SCHEMA = app.schema


def aliases(count: int, prefix: str = "a") -> str:
    return "{ " + " ".join(f"{prefix}{i}: __typename" for i in range(count)) + " }"


def test_entries_are_estimated_from_their_tokens() -> None:
    cache = DocumentCache(SCHEMA)
    small = cache.get("{ hello }")
    large = cache.get(aliases(200))
    assert small.node is not None and large.node is not None
    assert small.size >= BYTES_PER_TOKEN * 5  # SOF { hello } EOF
    assert large.size >= BYTES_PER_TOKEN * 600
    assert cache.bytes == small.size + large.size


def test_the_cache_is_bounded_by_bytes_as_well_as_entries() -> None:
    one = DocumentCache(SCHEMA).get(aliases(50, "a")).size
    cache = DocumentCache(SCHEMA, max_bytes=9 * one + one // 2)
    queries = [aliases(50, prefix) for prefix in "abcdefghijk"]  # all of one size
    for query in queries:
        cache.get(query)
    assert len(cache) == 9 and one * 9 == cache.bytes <= cache.max_bytes
    cache.get(queries[2])  # still cached: the oldest went first
    assert (cache.hits, cache.misses) == (1, 11)
    cache.get(queries[1])  # evicted
    assert cache.misses == 12

    by_count = DocumentCache(SCHEMA, size=2)
    for query in queries:
        by_count.get(query)
    assert len(by_count) == 2


def test_an_entry_over_an_eighth_of_the_bytes_is_not_cached() -> None:
    query = aliases(100)
    cache = DocumentCache(SCHEMA, max_bytes=8 * BYTES_PER_TOKEN * 100)
    for _ in range(2):
        assert cache.get(query).node is not None
    assert (len(cache), cache.bytes, cache.misses) == (0, 0, 2)


def test_a_refused_document_keeps_only_small_errors() -> None:
    cache = DocumentCache(SCHEMA, limits=Limits(max_fields=10))
    query = "{ ...F } fragment F on Query { " + " ".join(f"a{i}: hello" for i in range(40)) + " }"
    document = cache.get(query)
    assert document.node is None
    (error,) = document.errors
    assert error.message == "Operation 'anonymous' selects 40 fields; the limit is 10 (max_fields)."
    assert error.locations is not None and error.formatted["locations"] == [
        {"line": 1, "column": 1}
    ]
    # No AST node, source text or traceback (parser frames) stays alive with it.
    assert error.nodes is None and error.source is None and error.__traceback__ is None
    assert document.size < len(query) + 1000


def test_syntax_errors_are_cached_slim() -> None:
    cache = DocumentCache(SCHEMA)
    (error,) = cache.get("{ hello ").errors
    assert error.message.startswith("Syntax Error")
    assert error.source is None and error.__traceback__ is None
    assert error.formatted["locations"] == [{"line": 1, "column": 9}]


def test_limits_run_first_and_skip_the_specified_rules() -> None:
    cache = DocumentCache(SCHEMA, limits=Limits(max_depth=1))
    errors = cache.get("query Q { nope { deeper } }").errors
    assert [e.message for e in errors] == ["Operation 'Q' is 2 levels deep; the limit is 1."]
    # Within the limits, graphql-core's rules report as before.
    errors = cache.get("query Q { nope }").errors
    assert [e.message for e in errors] == ["Cannot query field 'nope' on type 'Query'."]


def test_the_token_cap_names_the_setting() -> None:
    cache = DocumentCache(SCHEMA, max_tokens=50)
    (error,) = cache.get(aliases(20)).errors
    assert error.message == "Document has more than 50 tokens; the limit is 50 (max_tokens)."
    (error,) = cache.get("#\n" * 60 + "{ hello }").errors  # a comment is a line
    assert error.message == "Document has 61 lines; the limit is 50 (max_tokens)."
    assert cache.get(aliases(10)).node is not None


def test_the_length_cap_follows_the_token_cap() -> None:
    cache = DocumentCache(SCHEMA, max_tokens=50)
    limit = 50 * CHARS_PER_TOKEN
    (error,) = cache.get("{ hello" + " " * limit + "}").errors
    assert error.message == (
        f"Document has {limit + 8} characters; the limit is {limit}"
        f" ({CHARS_PER_TOKEN} per token of max_tokens)."
    )
    assert (len(cache), cache.bytes) == (0, 0)  # refused at a glance, not kept
    assert DocumentCache(SCHEMA, max_tokens=None).get("{ hello" + " " * limit + "}").node


def test_a_megabyte_of_aliases_is_refused_without_lexing_it() -> None:
    query = aliases(60_000)
    assert len(query) > 1_000_000
    (error,) = DocumentCache(SCHEMA).get(query).errors
    # The length cap, which is checked before the lexer sees a character.
    assert error.message.startswith(f"Document has {len(query)} characters;")
    assert "max_tokens" in error.message


def test_many_same_named_fields_abort_validation_early() -> None:
    """graphql-core compares same-named fields pairwise. 600 of them cost 359,400
    units: within graphql-core's budget (500,000) they validate, so an abort
    proves ours is the one in force. Counted, not timed (no clock here)."""
    query = "{ " + " ".join("a: __typename" for _ in range(600)) + " }"
    errors = validate(SCHEMA, parse(query), SPECIFIED_RULES)
    assert [e.message for e in errors] == ["Validation aborted."]
    assert OVERLAP_BUDGET < 359_400 < 500_000
    assert not validate(SCHEMA, parse(query))  # graphql-core's own budget lets it through


@pytest.mark.parametrize(
    "query",
    [
        aliases(650),
        "{ " + " ".join(f"a{i}: __typename @include(if: true)" for i in range(190)) + " }",
        " ".join(f"query Q{i} {{ __typename }}" for i in range(400)),
        "{ hello } " + " ".join(f"fragment F{i} on Query {{ hello }}" for i in range(280)),
        "{ " + " ".join(f"nope{i}" for i in range(1990)) + " }",
    ],
    ids=["aliases", "directives", "operations", "unused-fragments", "unknown-fields"],
)
def test_the_costliest_documents_within_the_default_caps_stay_cheap(query: str) -> None:
    """About 45 ms each on the development machine; 0.25 s leaves room for a busy CI."""
    cache = DocumentCache(SCHEMA, limits=Limits(), max_tokens=2_000)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        cache.prepare(query)
        best = min(best, time.perf_counter() - started)
    assert best < 0.25, f"{best:.3f} s"


# ---- turns: a burst of new documents is spread over passes of the loop -----------


async def test_work_within_the_budget_goes_without_a_checkpoint() -> None:
    turns = Turns(budget=0.01)
    with trio.CancelScope() as scope:
        scope.cancel()
        await turns.take()  # no checkpoint: the pending cancel is not delivered
    assert not scope.cancelled_caught


async def test_work_over_the_budget_waits_for_the_next_pass() -> None:
    turns = Turns(budget=0.01)
    turns.spent(0.02)
    with trio.CancelScope() as scope:
        scope.cancel()
        await turns.take()
    assert scope.cancelled_caught
    with trio.fail_after(1):
        await turns.take()  # the loop went round: a new budget
    turns.spent(0.001)


async def test_a_burst_of_new_documents_is_spread_over_passes_of_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sixteen new documents started at once, each costing 40 ms: back to back
    they would hold the loop for 640 ms (a task that runs once per pass waits at
    least half of it); spread out, that task waits for one or two of them."""
    cache = DocumentCache(SCHEMA)
    prepare = cache._prepare

    def costly_prepare(query: str, clock: Any = None) -> Any:
        time.sleep(0.04)  # stands for 40 ms of parsing
        return prepare(query, clock)

    monkeypatch.setattr(cache, "_prepare", costly_prepare)
    longest = 0.0

    async def watch_the_loop() -> None:
        nonlocal longest
        last = time.perf_counter()
        while True:
            await trio.sleep(0)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_the_loop)
            await trio.sleep(0)
            async with trio.open_nursery() as burst:
                for name in "abcdefghijklmnop":
                    burst.start_soon(cache.fetch, aliases(5, name))
            nursery.cancel_scope.cancel()
    assert cache.misses == 16
    assert longest < 0.2, f"the loop was held for {longest:.3f} s"
    with trio.CancelScope() as scope:
        scope.cancel()
        await cache.fetch(aliases(5, "a"))  # cached: no wait, no checkpoint
    assert not scope.cancelled_caught


def test_errors_survive_a_round_trip_through_the_engine_format() -> None:
    errors = DocumentCache(SCHEMA).get("{ nope }").errors
    assert all(isinstance(e, GraphQLError) for e in errors)
    assert errors[0].formatted == {
        "message": "Cannot query field 'nope' on type 'Query'.",
        "locations": [{"line": 1, "column": 3}],
    }


def test_the_config_reaches_the_cache_on_both_hosts() -> None:
    from meshsub_trio import ASGIApp, Config
    from meshsub_trio._core._state import ServerState

    config = Config(
        max_depth=4, max_tokens=70, max_fields=30, max_cost=200, document_cache_bytes=12345
    )
    for state in (ServerState(app, config), ASGIApp(app, config).state):
        documents = state.engine.documents
        assert documents.limits == Limits(max_depth=4, max_fields=30, max_cost=200)
        assert (documents.max_tokens, documents.max_bytes) == (70, 12345)


# ---- preparation in slices: the loop goes round between them --------------------


async def passes_during(cache: DocumentCache, query: str) -> tuple[int, Document]:
    """How many times the loop polled for I/O while *cache* fetched *query*.

    Counted by an instrument, not by a task that counts its own turns: such
    a task, run after the fetch in the last batch, met the cancellation that
    ended it before it could count that batch (a third of the runs read 0).
    """
    polls = _PollCounter()
    trio.lowlevel.add_instrument(polls)
    try:
        with trio.fail_after(5):
            document = await cache.fetch(query)
    finally:
        trio.lowlevel.remove_instrument(polls)
    return polls.count, document


class _PollCounter(trio.abc.Instrument):
    """Counts the event loop's waits for I/O: one per pass of the loop."""

    def __init__(self) -> None:
        self.count = 0

    def before_io_wait(self, timeout: float) -> None:
        self.count += 1


async def test_a_new_document_is_prepared_between_passes_of_the_loop() -> None:
    """With no budget left in any pass, each slice waits for the loop to have
    polled for I/O: parsing is one, validating the next."""
    cache = DocumentCache(SCHEMA)
    cache._turns = Turns(budget=0.0)
    passes, document = await passes_during(cache, "{ a: hello b: hello }")
    assert document.node is not None and not document.errors
    assert passes >= 1
    assert cache.get("{ a: hello b: hello }") is document


async def test_a_costly_validation_is_cut_into_slices() -> None:
    """600 same-named fields are tens of milliseconds of field merging in one
    call of graphql-core's: the clock pauses it every few milliseconds."""
    cache = DocumentCache(SCHEMA)
    cache._turns = Turns(budget=0.0)
    query = "{ " + " ".join("a: __typename" for _ in range(600)) + " }"
    passes, document = await passes_during(cache, query)
    assert [e.message for e in document.errors] == ["Validation aborted."]
    assert passes >= 3


async def test_a_cancelled_preparation_ends_its_thread() -> None:
    cache = DocumentCache(SCHEMA)
    cache._turns = Turns(budget=0.0)
    threads = threading.active_count()
    with trio.move_on_after(0.001) as scope:
        await cache.fetch("{ " + " ".join("a: __typename" for _ in range(600)) + " }")
    assert scope.cancelled_caught
    assert threading.active_count() == threads
    assert len(cache) == 0


async def test_a_document_the_clock_stops_is_refused_and_not_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_cpu_bound, "DOCUMENT_CPU_LIMIT", 0.0)
    monkeypatch.setattr(_cpu_bound.Clock.__init__, "__defaults__", (None, 0.0))
    cache = DocumentCache(SCHEMA)
    query = "{ " + " ".join(f"a{i}: hello" for i in range(300)) + " }"
    document = await cache.fetch(query)
    assert [e.message for e in document.errors] == [TOO_COSTLY]
    assert not document.lasting and len(cache) == 0


#: Documents that pass, fail graphql-core's rules, fail field merging, fail
#: both, or abort it: validated in slices, they must get the errors one call
#: of graphql-core's validate gives with the same rules.
DIFFERENTIAL = [
    "{ hello }",
    "{ a: hello a: hello }",
    "{ a: hello a: __typename }",
    "{ nope a: hello a: __typename }",
    "{ nope }",
    "query ($v: Int) { hello }",
    "{ ...F ...G } fragment F on Query { a: hello } fragment G on Query { a: __typename }",
    "{ ...F } fragment F on Query { ...F }",
    "{ " + " ".join("a: __typename" for _ in range(600)) + " }",
    "{ " + " ".join(f"a: {('hello', '__typename')[i % 2]}" for i in range(300)) + " }",
    "{ " + " ".join(f"... on Quer{chr(65 + i % 26)} {{ __typename }}" for i in range(101)) + " }",
    "{ "
    + " ".join(f"...C{i}" for i in range(15))
    + " } "
    + " ".join(
        f"fragment C{i} on Query {{ a: hello ...D{i}x0 ...D{i}x1 ...D{i}x2 }} "
        + " ".join(f"fragment D{i}x{j} on Query {{ a: hello b: __typename }}" for j in range(3))
        for i in range(15)
    ),
]


@pytest.mark.parametrize("query", DIFFERENTIAL)
async def test_sliced_validation_agrees_with_one_call(query: str) -> None:
    one_call = [error.message for error in validate(SCHEMA, parse(query), SPECIFIED_RULES)]
    cache = DocumentCache(SCHEMA)
    prepared = await cache.fetch(query)
    sliced = [error.message for error in prepared.errors]
    if sliced == [TOO_COSTLY]:  # a slow machine: refused for now, never cached
        assert len(cache) == 0
    else:
        assert sliced == one_call
        assert (prepared.node is None) == bool(one_call)


async def test_did_you_mean_suggestions_are_sliced_and_bounded() -> None:
    """101 unknown type names close to real ones (611 tokens, within every cap):
    graphql-core compares each with every type of Meshery's schema for its
    "Did you mean", 0.3-0.5 s in one call. Sliced, and stopped by the clock."""
    from meshsub_trio.meshery._api._schema import build_meshery_schema

    cache = DocumentCache(build_meshery_schema())
    cache._turns = Turns(budget=0.0)
    near = "MesheryControllersStatusListItm"
    query = (
        "{ "
        + " ".join(f"... on {near}{chr(65 + i % 26)} {{ __typename }}" for i in range(101))
        + " }"
    )
    passes, document = await passes_during(cache, query)
    assert document.node is None and document.errors
    assert passes >= 5


async def test_concurrent_fetches_of_one_new_document_prepare_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Clients reconnecting after a deploy all send the same few documents."""
    cache = DocumentCache(SCHEMA)
    prepare, calls = cache._prepare, []

    def counted(query: str, clock: Any = None) -> Any:
        calls.append(query)
        return prepare(query, clock)

    monkeypatch.setattr(cache, "_prepare", counted)
    got: list[Document] = []

    async def fetch() -> None:
        got.append(await cache.fetch(aliases(30)))

    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(fetch)
    assert len(calls) == 1
    assert len(got) == 30 and all(document is got[0] for document in got)


def test_a_document_of_more_lines_than_max_tokens_is_refused_at_a_glance() -> None:
    """A tester's 27,000 blank lines before 450 unused variables: graphql-core
    found each of its 100 errors' line by counting the lines before it, 0.46 s
    inside one rule's call, which neither the slices nor the clock can pause."""
    variables = " ".join(f"$a{i}: Int" for i in range(450))
    query = "\n" * 27_000 + f"query q({variables}) {{ __typename }}"
    cache = DocumentCache(SCHEMA)
    started = time.thread_time()
    errors = cache.get(query).errors
    assert time.thread_time() - started < 0.01
    assert [e.message for e in errors] == [
        "Document has 27001 lines; the limit is 2000 (max_tokens)."
    ]
    crlf = "{ hello }" + "\r\n" * 1999
    assert not DocumentCache(SCHEMA).get(crlf).errors  # CRLF is one line break
