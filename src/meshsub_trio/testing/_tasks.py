"""Counting live Trio tasks: the leak check behind "zero tasks afterwards"."""

from __future__ import annotations

import trio


def live_tasks(root: trio.lowlevel.Task | None = None) -> list[trio.lowlevel.Task]:
    """Every task below *root* (default: the whole run), found by walking nurseries."""
    start = root or trio.lowlevel.current_root_task()
    assert start is not None
    found: list[trio.lowlevel.Task] = []
    pending = [start]
    while pending:
        task = pending.pop()
        found.append(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found


def task_names(root: trio.lowlevel.Task | None = None) -> list[str]:
    """Names of the live tasks, for assertion messages."""
    return sorted(task.name for task in live_tasks(root))
