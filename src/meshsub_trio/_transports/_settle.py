"""Run the scheduler until one operation's tasks all wait: what a long-poll's ``wait=0`` means.

A subscription that has just started has not produced anything yet: it
has to be subscribed, and its streamer (or its cohort's) has to run up to
its first ``emit``. (Its document is prepared before the watch begins: a
new document's turn for preparation is the server's queue, not the
operation waiting; and a query or mutation never settles early, it is
answered with its result: see ``_poll``.) "Answer with what is there now" therefore means
"let it do everything it can do without waiting, then answer". This module
tells when that point is reached, for one operation, while the rest of the
server runs as usual.

The operation's tasks are its own task and every task started while one of
them was running (a streamer's pump, a cohort's tasks that it started),
followed by a Trio :class:`~trio.abc.Instrument` (public API: spawn,
schedule, step and exit hooks). The operation has *settled* when none of
those tasks is runnable: each is waiting on something not ready yet (I/O,
a timer, a thread, another task's event, room in the outbox) or has ended.
A plain checkpoint (``await trio.sleep(0)``) is not waiting: the task is
runnable again at once. :func:`settle` gives the scheduler passes until
then, at most ``passes`` of them, so an operation that never waits is
answered all the same.

``trio.testing.wait_all_tasks_blocked`` has the same idea for the whole
program, which is why it is not used: on a busy server some task is always
runnable, so a poll would wait for the whole server to go idle. This looks
at one operation's tasks only. One instrument is installed while any
``wait=0`` poll is settling, shared by all of them (a dictionary look-up
per task step), and removed when the last one is done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import trio
from trio.lowlevel import Task

#: Scheduler passes a settling operation gets at most: each is one turn of
#: every runnable task in the program (a few microseconds on an idle server).
MAX_PASSES = 100


class Watch:
    """One operation's tasks, and which of them can run now."""

    __slots__ = ("runnable", "tasks")

    def __init__(self) -> None:
        self.tasks: set[Task] = set()
        self.runnable: set[Task] = set()

    @property
    def settled(self) -> bool:
        """Whether every task of the operation waits (or has ended)."""
        return not self.runnable


class _Tracker(trio.abc.Instrument):
    """The one instrument behind every :class:`Watch` of a run."""

    def __init__(self) -> None:
        #: Task → the watch it belongs to.
        self.owners: dict[Task, Watch] = {}
        self.watches = 0
        #: The watch of the task being stepped (its spawns are the watch's too).
        self.running: Watch | None = None
        #: The watch whose first task is being spawned (``adopting``).
        self.adopting: Watch | None = None

    def task_spawned(self, task: Task) -> None:
        watch = self.adopting or self.running
        if watch is not None:
            self.owners[task] = watch
            watch.tasks.add(task)

    def task_scheduled(self, task: Task) -> None:
        watch = self.owners.get(task)
        if watch is not None:
            watch.runnable.add(task)

    def before_task_step(self, task: Task) -> None:
        watch = self.running = self.owners.get(task)
        if watch is not None:
            watch.runnable.discard(task)

    def after_task_step(self, task: Task) -> None:
        self.running = None

    def task_exited(self, task: Task) -> None:
        watch = self.owners.pop(task, None)
        if watch is not None:
            watch.tasks.discard(task)
            watch.runnable.discard(task)

    def forget(self, watch: Watch) -> None:
        for task in watch.tasks:
            self.owners.pop(task, None)
        watch.tasks.clear()
        watch.runnable.clear()


_tracker: trio.lowlevel.RunVar[_Tracker | None] = trio.lowlevel.RunVar("settle", default=None)


def watching_now() -> bool:
    """Whether the instrument is installed (a ``wait=0`` poll is settling)."""
    return _tracker.get() is not None


@contextmanager
def watching() -> Iterator[Watch]:
    """A watch for one operation, for the duration of the ``with``."""
    tracker = _tracker.get()
    if tracker is None:
        tracker = _Tracker()
        trio.lowlevel.add_instrument(tracker)
        _tracker.set(tracker)
    tracker.watches += 1
    watch = Watch()
    try:
        yield watch
    finally:
        tracker.forget(watch)
        tracker.watches -= 1
        if tracker.watches == 0:
            _tracker.set(None)
            with suppress(KeyError):  # Trio drops an instrument that raised
                trio.lowlevel.remove_instrument(tracker)


@contextmanager
def adopting(watch: Watch) -> Iterator[None]:
    """Tasks spawned inside the ``with`` (synchronously, as ``start_soon`` does) are *watch*'s."""
    tracker = _tracker.get()
    assert tracker is not None, "adopting() inside watching() only"
    tracker.adopting = watch
    try:
        yield
    finally:
        tracker.adopting = None


async def settle(watch: Watch, done: Callable[[], bool], passes: int = MAX_PASSES) -> None:
    """Give the scheduler passes until *watch*'s tasks all wait, *done()* is true,
    or *passes* ran out."""
    for _ in range(passes):
        if watch.settled or done():
            return
        await trio.lowlevel.checkpoint()
