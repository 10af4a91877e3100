"""Cohorts: subscribers that share one streamer, one execution, one encoding.

Subscriptions to a shared streamer with the same document, variables,
operation name and cohort scope are a cohort (Hasura's multiplexing). The
cohort runs the streamer once, executes the selection set once per value,
encodes the JSON payload once, and hands the same bytes to every member's
bounded lane (:mod:`._delivery`); only the per-subscriber envelope (the
operation id) differs.

Cohort tasks live in one server-level nursery: a cohort starts with its
first member. When its last member leaves it lingers (``Config.cohort_linger``
seconds): a client that comes back, or the next one to ask the same thing,
joins the running streamer instead of starting it again. Reconnect storms and
page navigations re-subscribe the same documents within moments. One reaper
task per server cancels the cohorts that stayed empty past their linger, so
a member coming and going costs a timestamp, not a deadline update.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from time import perf_counter as clock
from typing import Any

import trio

from .._app import StreamerSource, emitter
from .._encoding import dumps_canonical
from .._execution import Engine, Prepared
from .._metrics import Metrics
from ..brokers._buffer import BufferClosed, EventBuffer
from ._delivery import BurstCache, Lane

log = logging.getLogger("meshsub_trio.cohort")

CohortKey = tuple[str, bytes, str | None, Hashable]

#: Most values executed before fanning out, when a burst is already queued.
_BURST = 64
#: Members served between two checkpoints of one fan-out.
_FAN_OUT_SLICE = 2048


class Cohort:
    """One shared streamer and the buffers of its members."""

    def __init__(
        self, registry: Cohorts, key: CohortKey, prepared: Prepared, source: StreamerSource
    ) -> None:
        self.registry = registry
        self.key = key
        self.prepared = prepared
        self.source = source
        self.members: set[Lane] = set()
        self.latest: bytes | None = None
        self.events = 0
        self.cancel_scope = trio.CancelScope()
        #: When the last member left (None: it has members, or never had any yet).
        self.empty_since: float | None = None
        self._ended = False

    @property
    def open(self) -> bool:
        """Whether a member may still join (not ended, not past its linger)."""
        return not self._ended and not self.cancel_scope.cancel_called

    def add(self, member: Lane) -> None:
        self.empty_since = None
        self.members.add(member)
        if self.latest is not None and self.source.streamer.share == "state":
            member.put(self.latest)

    def remove(self, member: Lane) -> None:
        self.members.discard(member)
        if self.members or self.empty_since is not None:
            return
        if self.registry.linger > 0 and self.open:
            self.empty_since = trio.current_time()  # the reaper ends it unless someone joins
        else:
            self.stop()

    def stop(self) -> None:
        self.registry.forget(self)
        self.cancel_scope.cancel()

    async def run(self) -> None:
        spec = self.source.streamer
        inbox: EventBuffer[Any] = EventBuffer(spec.capacity, spec.policy)
        failure: BaseException | None = None
        try:
            with self.cancel_scope:
                failure = await self._pump(inbox)
        except Exception as error:
            failure = error
        finally:
            self._ended = True
            self.registry.forget(self)
            self.prepared.release()
            for member in self.members:
                member.close(failure)
            self.members.clear()

    async def _pump(self, inbox: EventBuffer[Any]) -> BaseException | None:
        """Run the streamer; execute, encode and fan out each value it emits.

        Each value is stamped when emitted (one clock read per value, not per
        member); a burst's latency is observed once for all the members it was
        written to at once, up to the end of the fan-out (an upper bound for
        each), and by each member that buffered it when that member drains.
        """
        spec = self.source.streamer
        failure: list[BaseException] = []
        metrics = self.registry.metrics

        def put(value: Any) -> None:
            dropped = inbox.dropped
            inbox.put((value, clock()))
            if inbox.dropped != dropped:
                self._overflowed(spec.policy.value, inbox.dropped - dropped, dropped == 0)

        async def run_streamer() -> None:
            try:
                await spec.fn(self.source.context, self.source.args, emitter(put))
            except Exception as error:
                failure.append(error)
            finally:
                inbox.close()

        engine: Engine = self.registry.engine
        execution = metrics.event_execution
        latency = metrics.delivery_latency
        keep_latest = spec.share == "state"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_streamer)
            async for value, since in inbox:
                if not self.members and not keep_latest:
                    continue  # lingering: no one to execute an event for
                began = clock()
                payloads = [await engine.event_payload(self.prepared, value)]
                # Take the rest of a burst that is already waiting, so every
                # member's socket gets one write for all of it.
                while len(payloads) < _BURST:
                    try:
                        value, _ = inbox.get_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    payloads.append(await engine.event_payload(self.prepared, value))
                count = len(payloads)
                execution.observe((clock() - began) / count, count)
                self.events += count
                if keep_latest:
                    self.latest = payloads[-1]
                written = 0
                cache: BurstCache = {}
                for n, member in enumerate(tuple(self.members), 1):
                    try:
                        written += member.put_many(payloads, since, cache)
                    except BufferClosed:
                        self.members.discard(member)
                    if not n % _FAN_OUT_SLICE:
                        # A fan-out to tens of thousands takes a while: let
                        # accepts, pongs and HTTP requests in between slices.
                        await trio.lowlevel.checkpoint()
                if written:
                    latency.observe(clock() - since, written * count)
            nursery.cancel_scope.cancel()
        return failure[0] if failure else None

    def _overflowed(self, policy: str, count: int, first: bool) -> None:
        """The shared streamer emits faster than its values are executed: count it;
        warn the first time only."""
        self.registry.metrics.dropped_by_policy(policy).inc(count)
        if first and log.isEnabledFor(logging.WARNING):
            log.warning(
                "shared stream fell behind its streamer (%s)",
                policy,
                extra={"policy": policy, "capacity": self.source.streamer.capacity},
            )


class Cohorts:
    """The live cohorts of one server, and the nursery their tasks run in."""

    def __init__(
        self, engine: Engine, *, linger: float = 0.0, metrics: Metrics | None = None
    ) -> None:
        self.engine = engine
        #: Where execution time, delivery latency and overflows are counted.
        self.metrics = metrics if metrics is not None else Metrics()
        #: Seconds a cohort stays up with no members.
        self.linger = linger
        self._nursery: trio.Nursery | None = None
        self._cohorts: dict[CohortKey, Cohort] = {}

    def __len__(self) -> int:
        return len(self._cohorts)

    @property
    def available(self) -> bool:
        return self._nursery is not None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Host cohort tasks for as long as the server runs."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.linger > 0:
                nursery.start_soon(self._reap)
            try:
                yield
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    def join(
        self, key: CohortKey, prepared: Prepared, source: StreamerSource, member: Lane
    ) -> Cohort:
        """Add *member* to the cohort for *key*, starting the cohort if needed."""
        assert self._nursery is not None, "join() needs running()"
        cohort = self.get(key)
        if cohort is None:
            cohort = Cohort(self, key, prepared, source)
            self._cohorts[key] = cohort
            self._nursery.start_soon(cohort.run)
        cohort.add(member)
        return cohort

    async def _reap(self) -> None:
        """End the cohorts that stayed empty for their linger (checked every half linger)."""
        while True:
            await trio.sleep(self.linger / 2)
            now = trio.current_time()
            for cohort in list(self._cohorts.values()):
                since = cohort.empty_since
                if since is not None and now - since >= self.linger:
                    cohort.stop()

    def get(self, key: CohortKey) -> Cohort | None:
        """The cohort for *key* that a member may join, if there is one."""
        cohort = self._cohorts.get(key)
        return cohort if cohort is not None and cohort.open else None

    def forget(self, cohort: Cohort) -> None:
        if self._cohorts.get(cohort.key) is cohort:
            del self._cohorts[cohort.key]


def cohort_key(
    query: str, variables: dict[str, Any] | None, operation_name: str | None, scope: Hashable
) -> CohortKey | None:
    """The sharing key, or None when the scope cannot be hashed (no sharing)."""
    try:
        hash(scope)
    except TypeError:
        return None
    return (query, dumps_canonical(variables or {}), operation_name, scope)
