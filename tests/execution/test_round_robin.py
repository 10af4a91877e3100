"""The lock costly documents take goes round the owners waiting for it."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from meshsub_trio._execution._round_robin import RoundRobinLock


async def _holder(lock: RoundRobinLock, release: trio.Event) -> None:
    async with lock.hold("holder"):
        await release.wait()


async def _waiter(lock: RoundRobinLock, owner: str, order: list[str]) -> None:
    async with lock.hold(owner):
        order.append(owner)


async def _queue_up(lock: RoundRobinLock, owners: list[str], order: list[str]) -> None:
    """Hold the lock, queue one waiter per entry of *owners* (in that order), release."""
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_holder, lock, release)
        await trio.testing.wait_all_tasks_blocked()
        for owner in owners:
            nursery.start_soon(_waiter, lock, owner, order)
            await trio.testing.wait_all_tasks_blocked()  # queued in this order
        release.set()


async def test_owners_are_served_in_turn() -> None:
    order: list[str] = []
    await _queue_up(RoundRobinLock(), ["a", "a", "a", "a", "b", "c", "b"], order)
    assert order == ["a", "b", "c", "a", "b", "a", "a"]


async def test_one_owner_alone_is_first_come_first_served() -> None:
    order: list[str] = []
    lock = RoundRobinLock()
    await _queue_up(lock, ["x"] * 5, order)
    assert order == ["x"] * 5
    assert not lock.locked() and lock.waiting() == 0


async def test_a_cancelled_waiter_leaves_its_place() -> None:
    lock = RoundRobinLock()
    order: list[str] = []
    release = trio.Event()
    doomed = trio.CancelScope()

    async def cancelled() -> None:
        with doomed:
            await _waiter(lock, "b", order)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_holder, lock, release)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_waiter, lock, "a", order)
        nursery.start_soon(cancelled)
        await trio.testing.wait_all_tasks_blocked()
        assert lock.waiting() == 2
        doomed.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert lock.waiting() == 1
        release.set()
    assert order == ["a"]
    assert not lock.locked()


async def test_a_waiter_cancelled_as_it_is_granted_passes_the_lock_on() -> None:
    """The cancelled waiter is still queued until it runs again: the lock may be
    handed to it in between, and must go on to the next."""
    lock = RoundRobinLock()
    order: list[str] = []
    release = trio.Event()
    doomed = trio.CancelScope()

    async def holder() -> None:
        async with lock.hold("holder"):
            await release.wait()
            doomed.cancel()  # "a" is woken with Cancelled, then handed the lock

    async def first() -> None:
        with doomed:
            await _waiter(lock, "a", order)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_waiter, lock, "b", order)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert order == ["b"]
    assert not lock.locked() and lock.waiting() == 0


async def test_a_cancelled_acquire_of_a_free_lock_leaves_it_free() -> None:
    lock = RoundRobinLock()
    with trio.CancelScope() as scope:
        scope.cancel()
        async with lock.hold("a"):
            pytest.fail("a cancelled acquire took the lock")
    assert not lock.locked()
