"""Topic names: one token per id, so no two owners' names are one string.

User "a.b"'s profile "c" and user "a"'s profile "b.c" once made the same
results topic, sharing its count bound, its floor in the resume log and its
cursors' expiry, and the name read back as "a"'s. Ids are escaped now; the
ids Meshery uses keep the names earlier versions stored their data under,
and entries stored under an older name are filed under their owner's topic
when read back (a database, a NATS stream).
"""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from meshsub_trio.brokers import CursorExpired, LogBroker
from meshsub_trio.brokers._nats_options import _check_topic
from meshsub_trio.meshery import topics
from meshsub_trio.meshery._model._quota import log_owner
from meshsub_trio.meshery._model._tokens import (
    DIGESTED,
    MAX_TOKEN,
    _kept,
    _percent,
    escape,
    unescape,
)
from meshsub_trio.meshery._replication._history import ReplicaHistory
from meshsub_trio.meshery._replication._resume_log import ResumeLogBroker

ODD_IDS = ["a.b", "a b", "x*", ">", "%", "%2E", "", "a\tb\n", "..", "é.ü", "\x00", "\ud800"]


def result(user: str, profile: str, pad: int = 0) -> dict[str, Any]:
    fields = {"user_id": user, "performance_profile": profile, "meshery_id": "m", "pad": "x" * pad}
    return {"type": "perf_result", "op": "append", "result": fields}


def event(user: str, pad: int = 0) -> dict[str, Any]:
    return {"type": "event", "op": "append", "event": {"userID": user, "pad": "x" * pad}}


def test_ids_that_once_collided_name_topics_of_their_own() -> None:
    mine, theirs = topics.perf_results("a.b", "c"), topics.perf_results("a", "b.c")
    assert mine != theirs
    assert (topics.results_owner(mine), topics.results_owner(theirs)) == ("a.b", "a")
    assert log_owner(mine, None) == "a.b"
    assert topics.events("a.b") != topics.events("a%2Eb")
    assert log_owner(topics.configuration("a.b"), None) == "a.b"


async def test_a_flood_under_one_owner_never_expires_the_other_s_cursor() -> None:
    """The resume log's per-topic count bound: "a"'s results on "b.c" push out
    only "a"'s own, never "a.b"'s on "c"."""
    broker = ResumeLogBroker(log_capacity=10)
    mine = topics.perf_results("a.b", "c")
    broker.publish(mine, result("a.b", "c"))
    seen = broker.last_seq
    broker.publish(mine, result("a.b", "c"))
    for _ in range(20):
        broker.publish(topics.perf_results("a", "b.c"), result("a", "b.c"))
    with trio.fail_after(5):
        async with broker.subscribe_log(mine, after=seen) as resumed:
            assert (await resumed.get()).seq == seen + 1


@pytest.mark.parametrize("odd", ODD_IDS)
def test_every_id_is_one_token_the_nats_broker_takes(odd: str) -> None:
    for topic in (topics.events(odd), topics.configuration(odd)):
        _check_topic(topic)
        assert topic.count(".") == 2
        assert topics.topic_user(topic) == odd
    for user, profile in ((odd, "p"), ("u", odd), (odd, odd)):
        topic = topics.perf_results(user, profile)
        _check_topic(topic)
        assert topic.count(".") == 3
        assert topics.results_owner(topic) == user


@given(st.text())
@example("\ud800")
@example("a%2Eb")
def test_escaping_round_trips_into_one_token(value: str) -> None:
    token = escape(value)
    assert token and "." not in token and not any(c.isspace() for c in token)
    escaped = sum(1 if _kept(c) else len(_percent(c)) for c in value)
    if escaped > MAX_TOKEN:  # too long escaped: a digest, not read back
        assert token.startswith(DIGESTED) and len(token) <= MAX_TOKEN
    else:
        assert unescape(token) == value


@pytest.mark.parametrize(
    "plain", ["alice", "7f3f8b9e-4a55-4d36-9c1e-6d6f63616c00", "José", "ann@host", "a_b-c:d/e+f"]
)
def test_the_ids_meshery_uses_keep_their_names(plain: str) -> None:
    """What an earlier version stored under these names is still theirs."""
    assert topics.events(plain) == topics.EVENTS_PREFIX + plain
    assert topics.perf_results(plain, plain) == f"{topics.PERF_RESULTS_PREFIX}{plain}.{plain}"
    assert not topics.has_older_names(topics.events(plain))


@pytest.mark.parametrize("token", ["a.b", "a%2eb", "a%2", "%ZZ", "a%41", "%C3", "a b", "", "%%"])
def test_a_token_no_escape_made_names_no_id(token: str) -> None:
    assert unescape(token) is None


def test_an_earlier_version_s_results_topic_names_no_owner() -> None:
    assert topics.results_owner("meshery.perf_results.legacy-profile") is None
    assert topics.results_owner("meshery.perf_results.a.b.c") is None  # unescaped "a.b", "c"
    assert topics.results_owner(topics.events("a")) is None


def test_entries_under_older_names_resume_under_their_owner_s_topic() -> None:
    old = "meshery.perf_results.a.b.c"  # both owners' results, before ids were escaped
    assert topics.resumed_topic(old, result("a.b", "c")) == topics.perf_results("a.b", "c")
    assert topics.resumed_topic(old, result("a", "b.c")) == topics.perf_results("a", "b.c")
    assert topics.resumed_topic("meshery.events.a.b", event("a.b")) == topics.events("a.b")
    # The old raw name of user "a%2Eb" is user "a.b"'s name now: the message decides.
    assert topics.resumed_topic("meshery.events.a%2Eb", event("a%2Eb")) == topics.events("a%2Eb")
    upsert = {"type": "pattern", "op": "upsert", "pattern": {"user_id": "a b", "id": "1"}}
    delete = {"type": "filter", "op": "delete", "user_id": "a b", "id": "1"}
    for message in (upsert, delete):
        assert topics.resumed_topic("meshery.configuration.a b", message) == (
            topics.configuration("a b")
        )
    # Current names, and messages naming no owner, stay where they are.
    assert topics.resumed_topic(topics.events("a.b"), event("a.b")) == topics.events("a.b")
    assert topics.resumed_topic("meshery.events.x", {"type": "other"}) == "meshery.events.x"
    assert topics.resumed_topic(topics.CONTROLLERS, event("a")) == topics.CONTROLLERS


def test_only_renamed_topics_had_older_names() -> None:
    assert topics.has_older_names(topics.perf_results("a", "b"))
    assert topics.has_older_names(topics.events("a.b"))
    assert topics.has_older_names(topics.configuration("a b"))
    assert not topics.has_older_names(topics.events("a"))
    assert not topics.has_older_names(topics.PERF_PROFILES)


class NoStream:
    """A shared log a test must not fall back to."""

    def subscribe_log(self, topic: str, **_: Any) -> Any:
        raise AssertionError(f"fell back to the stream for {topic}")


async def test_a_replica_files_an_older_name_s_entries_under_the_owner_s_topic() -> None:
    history = ReplicaHistory(log_bytes=None)
    history.record(3, "meshery.events.a.b", {"message": event("a.b")})
    history.record(4, "meshery.events.a", {"message": event("a")})
    history.record(7, "meshery.events.a.b", {"message": event("a.b", 1)})
    shared = cast(LogBroker, NoStream())
    with trio.fail_after(5):
        async with history.open(shared, topics.events("a.b"), 3, 8) as resumed:
            assert (await resumed.get()).seq == 7
    # A cursor it cannot serve expires: the stream has these under the old name.
    history.start_at(0)
    history.skipped_to(5)
    with pytest.raises(CursorExpired):
        async with history.open(shared, topics.events("a.b"), 3, 8):
            pass


# ---- long ids: a digest, so no topic can outgrow what NATS takes ----------------


def test_a_long_id_becomes_a_short_digest_token() -> None:
    """A reviewer's find: profile ids are the client's, escaping triples a dot,
    and a topic over NATS's 4 KiB control line closed the broker's connection
    for good. A token over MAX_TOKEN is a digest of the id instead."""
    from meshsub_trio.meshery._model._tokens import is_token

    long_ids = ["p." * 1200, "x" * (MAX_TOKEN + 1), "é" * 5000, "p." * 1200 + "q"]
    tokens = [escape(value) for value in long_ids]
    assert len(set(tokens)) == len(long_ids)
    for token in tokens:
        assert token.startswith(DIGESTED) and len(token) <= MAX_TOKEN
        assert is_token(token) and unescape(token) is None  # a digest is not read back
        assert "." not in token
    assert escape("x" * MAX_TOKEN) == "x" * MAX_TOKEN  # up to the bound: kept as it was
    topic = topics.perf_results("p." * 1200, "q." * 1200)
    _check_topic(topic)  # the NATS broker takes it
    assert len(topic) < 200
    assert topics.results_owner(topics.perf_results("alice", "p." * 1200)) == "alice"
    assert topics.has_older_names(topics.events("u" * 500))


@given(st.text(min_size=1, max_size=40))
def test_no_escape_looks_like_a_digest(value: str) -> None:
    assert not escape(value).startswith(DIGESTED)
