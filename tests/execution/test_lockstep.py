"""Lockstep: a function in a thread, run one step at a time by its caller."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from meshsub_trio._execution._lockstep import Abandoned, Lockstep


def test_steps_run_the_work_between_its_pauses_and_never_beside_the_caller() -> None:
    trace: list[str] = []

    def work(pause: Callable[[], None]) -> int:
        for step in range(3):
            trace.append(f"work {step}")
            pause()
        return 42

    run = Lockstep(work)
    steps = 0
    while not run.step():
        steps += 1
        trace.append(f"caller {steps}")
    run.close()
    assert trace == ["work 0", "caller 1", "work 1", "caller 2", "work 2", "caller 3"]
    assert run.result() == 42


def test_the_works_exception_is_raised_in_the_caller() -> None:
    def work(pause: Callable[[], None]) -> None:
        pause()
        raise ValueError("bad document")

    run = Lockstep(work)
    while not run.step():
        pass
    run.close()
    with pytest.raises(ValueError, match="bad document"):
        run.result()


@pytest.mark.parametrize("steps_before", [0, 1])
def test_closing_early_ends_the_thread_at_its_next_pause(steps_before: int) -> None:
    reached: list[str] = []

    def work(pause: Callable[[], None]) -> None:
        try:
            pause()
            reached.append("after the pause")
        finally:
            reached.append("finally")

    threads = threading.active_count()
    run = Lockstep(work)
    for _ in range(steps_before):
        assert not run.step()
    run.close()
    assert threading.active_count() == threads
    assert "after the pause" not in reached
    assert reached == (["finally"] if steps_before else [])
    with pytest.raises(Abandoned):
        run.result()


def test_the_collectors_time_is_not_the_documents() -> None:
    """A full collection over a large heap, started by whatever allocated last,
    ran in a validation's thread and used up its whole limit."""
    import gc
    import time

    from meshsub_trio._execution._cpu_bound import Clock

    heap = [[index] for index in range(1_000_000)]
    clock = Clock(limit=0.02)
    started = time.thread_time()
    gc.collect()
    assert time.thread_time() - started > 0.02  # the collection alone passed the limit
    assert not clock.spent() and not clock.expired
    del heap
