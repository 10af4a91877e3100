"""Letting cleanup code await while its task is being cancelled."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


@contextmanager
def shielded_cleanup(timeout: float = 5.0) -> Iterator[trio.CancelScope]:
    """Shield a ``finally`` block from the cancellation that ended its operation.

    A streamer's cleanup often has to await (release a remote resource, say).
    Inside this block it can, for at most *timeout* seconds: the shield keeps
    the operation's cancellation out, and the deadline keeps a stuck cleanup
    from holding the connection (or shutdown) forever::

        try:
            ...
        finally:
            with shielded_cleanup(2.0):
                await lease.release()
    """
    with trio.CancelScope(shield=True) as scope:
        scope.relative_deadline = timeout
        yield scope
