"""Retry policy, close-code table, buffers, request payloads: the client's rules, without I/O."""

from __future__ import annotations

import random

import pytest
import trio

from meshsub_trio import Overflow
from meshsub_trio.client import CLOSE_CODES, RetryPolicy, Verdict, close_verdict, status_verdict
from meshsub_trio.client._buffer import StreamBuffer
from meshsub_trio.client._operations import Kind, Request, cursor_of, is_after, operation_kind
from meshsub_trio.client._transport import Disconnect, resolve, transport_for


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(base=0.5, cap=4.0)
    assert [policy.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.ceiling(10_000) == 4.0
    rng = random.Random(1)
    delays = [policy.delay(3, rng) for _ in range(2000)]
    assert all(0.0 <= d <= 2.0 for d in delays)
    # Full jitter: spread over the whole window, not clustered at its top.
    assert min(delays) < 0.1 and max(delays) > 1.9
    assert 0.9 < sum(delays) / len(delays) < 1.1


def test_retry_limits() -> None:
    assert RetryPolicy(max_attempts=3).exhausted(3, 0.0)
    assert not RetryPolicy(max_attempts=3).exhausted(2, 0.0)
    assert RetryPolicy(max_elapsed=10.0).exhausted(1, 10.5)
    assert not RetryPolicy(max_elapsed=None).exhausted(10**6, 10.0**9)
    for bad in ({"base": 0}, {"base": 1.0, "cap": 0.5}, {"max_attempts": 0}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (1000, Verdict.RETRY),
        (1001, Verdict.RETRY),
        (1006, Verdict.RETRY),
        (1011, Verdict.RETRY),
        (1012, Verdict.RETRY),
        (4408, Verdict.RETRY),
        (4500, Verdict.RETRY),
        (4504, Verdict.RETRY),
        (4401, Verdict.AUTH),
        (4403, Verdict.AUTH),
        (4400, Verdict.FATAL),
        (4406, Verdict.FATAL),
        (4409, Verdict.FATAL),
        (4429, Verdict.FATAL),
        (4004, Verdict.FATAL),
        (1002, Verdict.FATAL),
        (4321, Verdict.FATAL),  # an application code nobody told us about
    ],
)
def test_close_code_table(code: int, verdict: Verdict) -> None:
    assert close_verdict(code) is verdict
    if code != 4321:
        assert CLOSE_CODES[code] is verdict


def test_status_and_disconnect_verdicts() -> None:
    assert status_verdict(401) is Verdict.AUTH
    assert status_verdict(403) is Verdict.AUTH
    assert status_verdict(404) is Verdict.FATAL
    assert status_verdict(503) is Verdict.RETRY
    assert status_verdict(429) is Verdict.RETRY
    assert Disconnect("u", cause="OSError: refused").verdict is Verdict.RETRY
    assert Disconnect("u", code=1011, refusal={"message": "no"}).verdict is Verdict.AUTH
    assert "close 1001 Going away" in str(Disconnect("u", code=1001, reason="Going away"))


def test_transports_behind_the_seam() -> None:
    for name in ("auto", "ws", "legacy", "sse", "poll"):
        assert transport_for(name) is not None
    with pytest.raises(ValueError):
        transport_for("carrier-pigeon")


async def test_buffer_close_refuses_when_full_and_hands_out_in_order() -> None:
    drained: list[int] = []
    buffer = StreamBuffer(4, Overflow.CLOSE, on_drained=lambda: drained.append(len(buffer)))
    assert all(buffer.offer({"n": n}) for n in range(4))
    assert not buffer.offer({"n": 4})
    assert [await buffer.get() for _ in range(2)] == [{"n": 0}, {"n": 1}]
    assert drained == [2]  # half the capacity: the caller may resume now
    buffer.finish(RuntimeError("boom"))
    assert [await buffer.get() for _ in range(2)] == [{"n": 2}, {"n": 3}]
    with pytest.raises(RuntimeError, match="boom"):
        await buffer.get()


async def test_buffer_drop_oldest_and_coalesce_count_what_they_drop() -> None:
    oldest = StreamBuffer(2, Overflow.DROP_OLDEST)
    for n in range(5):
        assert oldest.offer({"n": n})
    assert oldest.dropped == 3
    assert [await oldest.get(), await oldest.get()] == [{"n": 3}, {"n": 4}]
    latest = StreamBuffer(2, Overflow.COALESCE)
    for n in range(5):
        latest.offer({"n": n})
    latest.finish()
    assert await latest.get() == {"n": 4}
    with pytest.raises(trio.EndOfChannel):
        await latest.get()


def test_request_payload_and_cursors() -> None:
    request = Request("subscription { s }", {"a": 1}, "S", {"trace": "t"})
    assert request.payload(None) == {
        "query": "subscription { s }",
        "variables": {"a": 1},
        "operationName": "S",
        "extensions": {"trace": "t"},
    }
    assert request.payload("41")["extensions"] == {"trace": "t", "cursor": "41"}
    assert Request("{ x }").payload(None) == {"query": "{ x }"}
    assert cursor_of({"data": {}, "extensions": {"cursor": "9"}}) == "9"
    assert cursor_of({"data": {}, "extensions": {"cursor": 9}}) == "9"
    assert cursor_of({"data": {}}) is None
    assert is_after("10", "9") and not is_after("9", "10") and not is_after("9", "9")
    assert is_after("b", "a") and not is_after("a", "a")  # opaque: only repeats are caught


def test_operation_kind() -> None:
    assert operation_kind("{ x }", None) is Kind.QUERY
    assert operation_kind("mutation { m }", None) is Kind.MUTATION
    assert operation_kind("subscription { s }", None) is Kind.SUBSCRIPTION
    two = "query A { x } mutation B { m }"
    assert operation_kind(two, "A") is Kind.QUERY
    assert operation_kind(two, "B") is Kind.MUTATION
    assert operation_kind(two, None) is Kind.MUTATION  # ambiguous: never resent
    assert operation_kind("{ broken", None) is Kind.MUTATION


async def test_providers_may_be_values_or_plain_or_async_functions() -> None:
    async def later() -> str:
        await trio.lowlevel.checkpoint()
        return "async"

    assert await resolve("value") == "value"
    assert await resolve(lambda: "plain") == "plain"
    assert await resolve(later) == "async"
    assert await resolve(None) is None
