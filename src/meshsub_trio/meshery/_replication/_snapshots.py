"""Snapshots of a replicated model, so a process never needs the whole log.

Why: a replica rebuilds its state by applying the shared log, and the log is
bounded (JetStream retention). Without snapshots, a process started after
the log evicted its oldest changes would serve a state missing them. With
them, a process loads the newest snapshot and replays only what follows the
log sequence it covers.

* A snapshot is the model's state as change messages (``Model.state_messages``)
  plus the log sequence ``seq`` it covers, JSON, zlib-compressed.
* It is taken between two log entries, when this replica has no pending own
  change (one applied early but not yet back from the log), so it is exactly
  "the log up to ``seq``", the same on every replica.
* Taken every ``every`` entries (by default a quarter of the log's
  ``max_msgs``, so three quarters of the retention are left for the time one
  save takes) and at least every ``interval`` seconds while anything changed.
  Before saving, a replica looks at the newest stored snapshot: if another
  replica saved one recently, it skips its own.
* Bounded: a snapshot larger than ``max_bytes`` is not saved (logged and
  counted); only the newest ``keep`` are kept, older ones are deleted.
* Stored in a JetStream object store bucket next to the log stream
  (:class:`NatsSnapshots`), so it lives where the log lives.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import trio

from ..._decimal import decimal
from .._model._model import Model

log = logging.getLogger("meshsub_trio.meshery.snapshots")

FORMAT = 1
#: Upper bound of one compressed snapshot.
MAX_BYTES = 64 * 1024 * 1024
#: Snapshots kept in the bucket.
KEEP = 2
#: Entries between snapshots when the log's retention does not suggest fewer.
EVERY = 10_000
#: Seconds between snapshots while something changed, however little.
INTERVAL = 300.0

Messages = list[dict[str, Any]]
#: What a replica hands over when asked: ``(seq, messages)``, or None when it
#: cannot be snapshotted right now (pending own changes).
Capture = Callable[[], "tuple[int, Messages] | None"]


@dataclass(frozen=True)
class Snapshot:
    seq: int
    messages: Messages


def encode(seq: int, messages: Messages) -> bytes:
    """The JSON text of a snapshot (call at once: *messages* are the model's own)."""
    return orjson.dumps({"format": FORMAT, "seq": seq, "messages": messages})


def decode(data: bytes) -> Snapshot:
    body = orjson.loads(zlib.decompress(data))
    if body.get("format") != FORMAT:
        raise ValueError(f"unknown snapshot format {body.get('format')!r}")
    return Snapshot(int(body["seq"]), list(body["messages"]))


class SnapshotStore(Protocol):
    """Where snapshots are kept (see :class:`NatsSnapshots`)."""

    #: Suggested entries between snapshots (from the log's retention).
    every: int

    async def newest(self) -> Snapshot | None:
        """The newest snapshot that reads back whole, or None."""

    async def newest_seq(self) -> int:
        """The log sequence of the newest stored snapshot (0 for none)."""

    async def save(self, seq: int, data: bytes) -> None:
        """Store compressed snapshot *data* covering *seq*; drop the oldest beyond the bound."""

    async def log_last_seq(self) -> int | None:
        """The shared log's newest sequence (None if unknown)."""


class Snapshotter:
    """Restores the newest snapshot at start, then takes new ones while serving."""

    def __init__(
        self,
        store: SnapshotStore,
        *,
        every: int | None = None,
        interval: float = INTERVAL,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.store = store
        self.every = max(1, every if every is not None else store.every)
        self.interval = interval
        self.max_bytes = max_bytes
        #: The log sequence the newest snapshot (ours or another replica's) covers.
        self.covered = 0
        #: The newest log sequence this replica applied.
        self.seen = 0
        #: Where the next snapshot is counted from (``covered``, or a refused one's seq).
        self._base = 0
        self._due = trio.Event()
        self._covered_changed = trio.Event()
        #: Counters.
        self.restored_seq = 0
        self.taken = 0
        self.skipped = 0
        self.too_big = 0
        self.failures = 0

    async def restore(self, model: Model) -> int:
        """Apply the newest usable snapshot to (empty) *model*; the seq it covers, or 0."""
        try:
            snapshot = await self.store.newest()
            newest = await self.store.log_last_seq() if snapshot is not None else None
        except Exception as error:  # no snapshot beats no start: replay the log instead
            log.warning("cannot read snapshots (%r); replaying the whole log", error)
            return 0
        if snapshot is None:
            return 0
        if newest is not None and snapshot.seq > newest:
            log.warning(
                "snapshot at %d is ahead of the log (newest %d): the log was reset; ignoring it",
                snapshot.seq,
                newest,
            )
            return 0
        for message in snapshot.messages:
            try:
                model.apply(message)
            except Exception as error:
                log.warning("snapshot message not applied: %r (%r)", message, error)
        self.seen = self.restored_seq = snapshot.seq
        self._cover(snapshot.seq)
        log.info("loaded the snapshot at log sequence %d", snapshot.seq)
        return snapshot.seq

    def note(self, seq: int) -> None:
        """The replica applied the log up to *seq* (called for every entry)."""
        self.seen = seq
        if seq - self._base >= self.every and not self._due.is_set():
            self._due.set()

    async def run(self, capture: Capture) -> None:
        """Take and save snapshots until cancelled (see module doc)."""
        while True:
            with trio.move_on_after(self.interval):
                await self._due.wait()
            self._due = trio.Event()
            if self.seen <= self._base:
                continue
            await self.snapshot(capture)

    async def snapshot(self, capture: Capture) -> bool:
        """One snapshot now, unless another replica saved a recent one; True if saved."""
        try:
            stored = await self.store.newest_seq()
        except Exception as error:
            stored = 0
            log.debug("cannot list snapshots: %r", error)
        if stored > self.covered and self.seen - stored < self.every // 2:
            self._cover(stored)  # another replica's is recent enough
            self.skipped += 1
            return False
        taken = capture()
        if taken is None:
            return False  # pending own changes: the next entry asks again
        seq, messages = taken
        raw = encode(seq, messages)  # before any checkpoint: the messages are live state
        data = await trio.to_thread.run_sync(zlib.compress, raw, 6)
        if len(data) > self.max_bytes:
            self.too_big += 1
            self._base = seq  # back off for another `every` entries
            log.error(
                "snapshot at %d is %d bytes, over the %d byte bound: not saved",
                seq,
                len(data),
                self.max_bytes,
            )
            return False
        try:
            await self.store.save(seq, data)
        except Exception as error:  # an outage: the next due snapshot tries again
            self.failures += 1
            log.warning("snapshot at %d not saved: %r", seq, error)
            return False
        self._cover(seq)
        self.taken += 1
        if self.seen - self._base >= self.every:
            self._due.set()  # a burst went on meanwhile: catch up at once
        return True

    def _cover(self, seq: int) -> None:
        self._base = max(self._base, seq)
        if seq > self.covered:
            self.covered = seq
            self._covered_changed.set()
            self._covered_changed = trio.Event()

    async def wait_covered(self, seq: int) -> None:
        """Wait until a snapshot known here covers the log up to *seq*."""
        while self.covered < seq:
            await self._covered_changed.wait()

    def stats(self) -> dict[str, int]:
        return {
            "snapshot_covered": self.covered,
            "snapshot_restored": self.restored_seq,
            "snapshots_taken": self.taken,
            "snapshots_skipped": self.skipped,
            "snapshots_too_big": self.too_big,
            "snapshot_failures": self.failures,
        }


class NatsSnapshots:
    """Snapshots in a JetStream object store bucket beside the broker's log stream.

    Uses the broker's own NATS connection and JetStream context on its
    asyncio loop (trio-asyncio), like its log readers do.
    """

    def __init__(self, broker: Any, *, keep: int = KEEP, max_bytes: int = MAX_BYTES) -> None:
        self._broker = broker
        self._stream = broker.options.log
        self.bucket = f"{self._stream.name}_SNAPSHOTS"
        self.keep = keep
        self.max_bytes = max_bytes
        self.every = max(1, min(EVERY, self._stream.max_msgs // 4))

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run asyncio coroutine function ``fn(js, *args)`` on the broker's loop."""
        js = getattr(self._broker, "_js", None)
        if js is None:
            raise RuntimeError("the broker has no JetStream context")
        return await self._broker._aio(fn)(js, *args)

    async def _open(self, js: Any) -> Any:
        from nats.js import api
        from nats.js.errors import BucketNotFoundError

        try:
            return await js.object_store(self.bucket)
        except BucketNotFoundError:
            storage = api.StorageType.MEMORY if self._stream.memory else api.StorageType.FILE
            config = api.ObjectStoreConfig(
                description="meshsub-trio snapshots of the Meshery model",
                max_bytes=(self.keep + 1) * self.max_bytes,
                storage=storage,
            )
            return await js.create_object_store(self.bucket, config=config)

    async def _names(self, store: Any) -> list[tuple[int, str]]:
        """``(seq, name)`` of the stored snapshots, newest first."""
        from nats.js.errors import NotFoundError

        try:
            infos = await store.list(ignore_deletes=True)
        except NotFoundError:
            return []
        found = []
        for info in infos:
            name = str(info.name)
            prefix, _, number = name.partition("-")
            seq = decimal(number)
            if prefix == "model" and seq is not None:
                found.append((seq, name))
        return sorted(found, reverse=True)

    async def newest_seq(self) -> int:
        async def run(js: Any) -> int:
            names = await self._names(await self._open(js))
            return names[0][0] if names else 0

        return int(await self._call(run))

    async def newest(self) -> Snapshot | None:
        async def run(js: Any) -> bytes | None:
            store = await self._open(js)
            for seq, name in await self._names(store):
                try:
                    return bytes((await store.get(name)).data)
                except Exception as error:  # deleted meanwhile, or half written
                    log.warning("snapshot %d unreadable: %r", seq, error)
            return None

        data = await self._call(run)
        if data is None:
            return None
        return await trio.to_thread.run_sync(decode, data)

    async def save(self, seq: int, data: bytes) -> None:
        async def run(js: Any) -> None:
            store = await self._open(js)
            await store.put(f"model-{seq:020d}", data)
            for _, old in (await self._names(store))[self.keep :]:
                try:
                    await store.delete(old)
                except Exception as error:  # another replica deleted it first
                    log.debug("snapshot %s not deleted: %r", old, error)

        await self._call(run)

    async def log_last_seq(self) -> int | None:
        async def run(js: Any) -> int:
            info = await js.stream_info(self._stream.name)
            return int(info.state.last_seq)

        return int(await self._call(run))


def snapshots_for(broker: Any) -> NatsSnapshots | None:
    """Snapshot storage for a shared *broker*: a NATS broker with a JetStream log."""
    options = getattr(broker, "options", None)
    if getattr(options, "log", None) is None or not hasattr(broker, "_js"):
        return None
    return NatsSnapshots(broker)
