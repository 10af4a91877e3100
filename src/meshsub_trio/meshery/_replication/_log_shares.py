"""Who holds how much of the resume log, and who gives way when it is full.

Why: the resume log is capped in bytes for everyone together, so evicting
simply the oldest entries let one user's flood push out every other user's
history, and with it their cursors. :class:`Shares` keeps, per holder (a user
id, or None for entries that are no user's), the bytes it holds and its
entries oldest first, and answers the two questions the log's eviction asks:

* :meth:`over_share`: does this holder hold more than its share, the cap split
  evenly between the holders? Then it makes room from its own entries.
* :meth:`heaviest`: who holds the most? That holder makes room for one still
  within its share. Since the holders together are over the cap, the
  heaviest is over its share too: a holder within its share never loses an
  entry to another's writes.

Every operation is O(log holders), amortized: the heaviest comes from a lazy
max-heap (one valid item per holder, pushed again only after it shrank), and
stale items (entries that left the log by other means) are skipped when met
and compacted away before they outnumber the live ones, so the memory stays
proportional to what the log retains.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

#: A user id, or None: the entries of no user (one share together).
Owner = str | None
#: ``alive(seq, topic)``: whether that entry is still retained by the log.
Alive = Callable[[int, str], bool]

#: Stale items tolerated beyond the live ones before a compaction.
_SLACK = 64


class _Holder:
    __slots__ = ("bytes", "count", "seqs", "token", "topics")

    def __init__(self) -> None:
        self.bytes = 0
        #: Which of the heap's items for this holder is valid (the newest).
        self.token = 0
        #: Live entries; ``seqs``/``topics`` may hold stale ones besides.
        self.count = 0
        self.seqs: deque[int] = deque()
        self.topics: deque[str] = deque()


class Shares:
    """Per holder: the bytes held and the entries, oldest first (see module doc)."""

    def __init__(self, alive: Alive) -> None:
        self._alive = alive
        self._holders: dict[Owner, _Holder] = {}
        #: (-bytes as pushed, token, holder): a lazy max-heap of holdings.
        self._heap: list[tuple[int, int, Owner]] = []
        self._pushes = 0

    def __len__(self) -> int:
        """How many holders hold anything."""
        return len(self._holders)

    def held(self, owner: Owner) -> int:
        holder = self._holders.get(owner)
        return 0 if holder is None else holder.bytes

    def holdings(self) -> dict[Owner, int]:
        """Bytes per holder (a copy: for stats and tests)."""
        return {owner: holder.bytes for owner, holder in self._holders.items()}

    def add(self, owner: Owner, seq: int, topic: str, size: int) -> None:
        """*owner* holds one more entry (the newest so far)."""
        holder = self._holders.get(owner)
        if holder is None:
            holder = self._holders[owner] = _Holder()
        holder.bytes += size
        holder.count += 1
        holder.seqs.append(seq)
        holder.topics.append(topic)
        self._push(owner, holder)
        if len(self._heap) > 2 * len(self._holders) + _SLACK:
            self._rebuild_heap()

    def drop(self, owner: Owner, size: int) -> None:
        """One of *owner*'s entries left the log (taken by :meth:`pop_oldest` or not)."""
        holder = self._holders[owner]
        holder.bytes -= size
        holder.count -= 1
        if holder.count == 0:
            del self._holders[owner]  # whatever items are left are stale
        elif len(holder.seqs) > 2 * holder.count + _SLACK:
            self._compact(holder)

    def pop_oldest(self, owner: Owner) -> tuple[int, str]:
        """Take *owner*'s oldest retained entry off its list: ``(seq, topic)``.

        The caller evicts it from the log, then calls :meth:`drop`.
        """
        holder = self._holders[owner]
        while True:
            seq, topic = holder.seqs.popleft(), holder.topics.popleft()
            if self._alive(seq, topic):
                return seq, topic

    def over_share(self, owner: Owner, budget: int) -> bool:
        """Whether *owner* holds more than ``budget / holders``."""
        return self.held(owner) * len(self._holders) > budget

    def heaviest(self) -> Owner:
        """The holder holding the most bytes (any one of them, on a tie)."""
        heap = self._heap
        while True:
            pushed, token, owner = heap[0]
            holder = self._holders.get(owner)
            if holder is not None and holder.token == token and holder.bytes == -pushed:
                return owner
            heapq.heappop(heap)
            if holder is not None and holder.token == token:
                # It shrank since: its valid item was an upper bound, now exact.
                self._push(owner, holder)

    def _push(self, owner: Owner, holder: _Holder) -> None:
        self._pushes += 1
        holder.token = self._pushes
        heapq.heappush(self._heap, (-holder.bytes, holder.token, owner))

    def _rebuild_heap(self) -> None:
        self._heap = []
        for owner, holder in self._holders.items():
            self._pushes += 1
            holder.token = self._pushes
            self._heap.append((-holder.bytes, holder.token, owner))
        heapq.heapify(self._heap)

    def _compact(self, holder: _Holder) -> None:
        live = [
            (s, t) for s, t in zip(holder.seqs, holder.topics, strict=True) if self._alive(s, t)
        ]
        holder.seqs = deque(s for s, _ in live)
        holder.topics = deque(t for _, t in live)
