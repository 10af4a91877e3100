"""``serve --workers N``: bind the port, start NATS if needed, run N workers as one server.

One Trio nursery owns everything: the embedded nats-server's task and one
task per worker slot. The workers share state, events, cohorts and cursors
through NATS only (each is a scale-out process of its own). SIGINT/SIGTERM
close the supervisor's copies of the sockets, drain every worker at once
(each as a lone server drains), then stop nats-server after them, so their
last publishes reach it. SIGHUP is passed on (TLS files reloaded). The exit
status is 0 after a clean drain and :data:`EXIT_WORKER_KILLED` when a worker
did not drain within its bound and had to be killed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator

import trio

from .._exception_groups import leaves, only_leaf
from .._logging import redacted, refuse
from ._embedded_nats import EmbeddedNats, EmbeddedNatsError, find_nats_server, store_directory
from ._nats_watch import DEFAULT_WATCHDOG, Watchdog, watchdog_from
from ._plan import Plan, stream_secret, worker_command, worker_environment
from ._sockets import SharedSockets, bind_shared
from ._worker import WorkerFailed, WorkerSlot, announce

log = logging.getLogger("meshsub_trio.workers")

NATS_EXTRA = "pip install 'meshsub-trio[workers]'"
#: Beyond the workers' own drain bound: their NATS broker's close and the app's lifespan.
STOP_MARGIN = 10.0
NATS_STOP_TIMEOUT = 10.0
#: The exit status of a shutdown that had to SIGKILL a worker: not 0, since its
#: drain (1001 to its clients, cleanups, the last publishes) did not finish; not
#: 1 (a refusal to start) or 2 (a bad option), so a service manager or a
#: script can tell "stopped, but not cleanly" from "never ran".
EXIT_WORKER_KILLED = 3


def missing_dependency(plan: Plan) -> str | None:
    """One line naming what to install, or None when the workers can run."""
    if any(importlib.util.find_spec(name) is None for name in ("nats", "trio_asyncio")):
        return f"--workers {plan.workers} needs nats-py and trio-asyncio: {NATS_EXTRA}"
    if plan.broker is None:
        try:
            find_nats_server()
        except EmbeddedNatsError:
            return (
                f"--workers {plan.workers} without --broker runs an embedded nats-server: "
                f"{NATS_EXTRA}"
            )
    return None


def run_supervisor(plan: Plan) -> int:
    """Serve with *plan*'s workers until SIGINT/SIGTERM; the exit status."""
    problem = missing_dependency(plan)
    if problem is not None:
        return refuse(problem)
    try:  # read only for the embedded server, the one it watches
        watchdog = watchdog_from(os.environ) if plan.broker is None else None
    except ValueError as error:
        return refuse(str(error))
    try:
        shared = bind_shared(plan.host, plan.port, plan.workers, plan.backlog)
    except OSError as error:
        reason = error.strerror or str(error)
        return refuse(f"cannot listen on {plan.host}:{plan.port}: {reason}")
    try:
        with _store(plan) as store:
            return trio.run(supervise, plan, shared, store, watchdog)
    except (EmbeddedNatsError, WorkerFailed) as error:
        return refuse(str(error))
    finally:
        shared.close()


@contextlib.contextmanager
def _store(plan: Plan) -> Iterator[str | None]:
    if plan.broker is not None:
        yield None
        return
    with store_directory(plan.data_dir) as store:
        yield store


async def supervise(
    plan: Plan,
    shared: SharedSockets,
    store: str | None,
    watchdog: Watchdog | None = DEFAULT_WATCHDOG,
) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        try:
            async with trio.open_nursery() as nursery:
                status = await _serve(plan, shared, store, watchdog, nursery, signals)
        except BaseExceptionGroup as group:
            leaf = only_leaf(group) or _first_failed(group)
            if leaf is None:
                raise
            raise leaf from None
    return status


def _first_failed(group: BaseExceptionGroup[BaseException]) -> WorkerFailed | None:
    """The lowest worker's failure when failures are all *group* holds: workers
    that hang or fail alike (one bad app) may do so in the same instant."""
    failed, rest = group.split(WorkerFailed)
    if failed is None or rest is not None:
        return None
    workers = [leaf for leaf in leaves(failed) if isinstance(leaf, WorkerFailed)]
    return min(workers, key=lambda error: error.index, default=None)


async def _serve(
    plan: Plan,
    shared: SharedSockets,
    store: str | None,
    watchdog: Watchdog | None,
    nursery: trio.Nursery,
    signals: AsyncIterator[int],
) -> int:
    """Serve until a signal, drain; the exit status."""
    nats: EmbeddedNats | None = None
    if store is not None:
        nats = await nursery.start(EmbeddedNats(find_nats_server(), store, watchdog).run)
    broker = nats.client_url if nats is not None else str(plan.broker)
    environment = worker_environment(broker, stream_secret(os.environ))
    slots = [
        WorkerSlot(
            index, worker_command(plan, index), shared.fds(index), environment, plan.worker_timeout
        )
        for index in range(plan.workers)
    ]
    async with trio.open_nursery() as starting:
        for slot in slots:
            starting.start_soon(nursery.start, slot.run)
    print(f"meshsub-trio serving on {_url(plan, shared)}", flush=True)
    for slot in slots:
        announce(slot)
    log.info(
        "%d workers serving",
        plan.workers,
        extra={"broker": redacted(broker), "worker_timeout": plan.worker_timeout},
    )
    async for signum in signals:
        if signum == signal.SIGHUP:
            for slot in slots:
                slot.signal(signal.SIGHUP)
            continue
        log.info("%s received: draining every worker", signal.Signals(signum).name)
        break
    # No worker starts from here on (a restart under way is called off or
    # waited for), so none is spawned with the sockets closed under it.
    async with trio.open_nursery() as halting:
        for slot in slots:
            halting.start_soon(slot.halt)
    # New connections go nowhere once each worker closes its listener.
    shared.close()
    killed: list[WorkerSlot] = []

    async def stop(slot: WorkerSlot) -> None:
        if not await slot.stop(plan.drain_timeout + STOP_MARGIN):
            killed.append(slot)

    async with trio.open_nursery() as stopping:
        for slot in slots:
            stopping.start_soon(stop, slot)
    if nats is not None:
        await nats.stop(NATS_STOP_TIMEOUT)
    nursery.cancel_scope.cancel()
    if not killed:
        return 0
    indexes = sorted(slot.index for slot in killed)
    log.error(
        "%s %s had to be killed instead of draining: exit status %d",
        "worker" if len(indexes) == 1 else "workers",
        ", ".join(map(str, indexes)),
        EXIT_WORKER_KILLED,
    )
    return EXIT_WORKER_KILLED


def _url(plan: Plan, shared: SharedSockets) -> str:
    sock = shared.per_worker[0][0]
    host = sock.getsockname()[0]
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if plan.tls else "http"
    return f"{scheme}://{host}:{shared.port}"
