"""Run a synchronous function in slices, in lockstep with the event loop.

graphql-core's validation is one synchronous call that cannot be split from
outside: a generator cannot yield from deep inside it. A thread can pause
anywhere, so the call runs in a thread of its own, but never *beside* the
loop: :meth:`Lockstep.step` hands the thread its turn and waits until it
pauses again (at a :func:`pause` the function calls) or ends. Exactly one of
the two threads runs at any time, so the loop's own system calls never queue
behind the worker for the GIL, and nothing the worker touches is touched
concurrently; between two steps the loop serves everyone else.

A step that is never taken again (the caller was cancelled) is ended with
:meth:`Lockstep.close`: the worker's next pause raises :class:`Abandoned`, a
``BaseException`` so that no ``except Exception`` on the way swallows it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Abandoned(BaseException):
    """Raised at the worker's pause when the caller will take no more steps."""


class Lockstep(Generic[T]):
    """``work(pause)`` in a thread, run one step at a time by :meth:`step`."""

    def __init__(self, work: Callable[[Callable[[], None]], T]) -> None:
        self._work = work
        self._turn = threading.Semaphore(0)  # the worker may run
        self._back = threading.Semaphore(0)  # the worker paused or ended
        self._abandoned = False
        self.done = False
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="meshsub-prepare", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        self._turn.acquire()
        try:
            if self._abandoned:
                raise Abandoned
            self._result = self._work(self._pause)
        except BaseException as error:  # handed to the caller's thread, raised there
            self._error = error
        finally:
            self.done = True
            self._back.release()

    def _pause(self) -> None:
        """In the worker: give the turn back, and wait for the next step."""
        self._back.release()
        self._turn.acquire()
        if self._abandoned:
            raise Abandoned

    def step(self) -> bool:
        """Let the worker run until it pauses or ends (blocking this thread
        meanwhile, as a plain call would); True once it has ended."""
        if not self.done:
            self._turn.release()
            self._back.acquire()
        return self.done

    def result(self) -> T:
        """What the work returned, or its exception raised here."""
        assert self.done, "result() before the work ended"
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._result  # type: ignore[return-value]

    def close(self) -> None:
        """End the worker at its next pause if it is not done; then join it."""
        if not self.done:
            self._abandoned = True
            self._turn.release()
            self._back.acquire()
        self._thread.join()
