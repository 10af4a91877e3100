"""The ``serve`` runner: serve an app until a signal, with the memory or a NATS broker."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import trio

from ._app import App
from ._cli_app import app_from_args
from ._config import Config
from ._serve_options import redacted
from ._server import Server, serve
from ._supervisor._child import end_with_parent, worker_role
from ._supervisor._heartbeat import send_heartbeats
from ._transports._sse_relay import relay_for, relay_secret

if TYPE_CHECKING:
    from .brokers._nats_log import LogStream
    from .brokers._nats_options import NatsOptions

log = logging.getLogger("meshsub_trio")


async def run(app: App, config: Config) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully.

    A worker of ``serve --workers N`` serves on the sockets its supervisor
    passed it, and drains the same way when the supervisor is gone. Its
    heartbeat runs beside the server in this nursery, so it beats exactly
    while this loop runs, drain included, and stops when the server is done.
    """
    role = worker_role()
    listeners = role.listeners() if role is not None else None
    parent = trio.CancelScope()
    beating = trio.CancelScope()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(
                partial(_serve_then_stop, beating, listeners=listeners), app, config
            )
            if role is not None and role.heartbeat is not None:
                nursery.start_soon(_within, beating, send_heartbeats, role.heartbeat)
            print(f"meshsub-trio serving on {server.url}", flush=True)
            if role is not None:
                log.info("worker %d serving", role.index, extra={"pid": os.getpid()})
                nursery.start_soon(_within, parent, end_with_parent)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    server.reload_tls()  # new handshakes get the new pair; nobody drops
                    continue
                log.info("%s received: shutting down", signal.Signals(signum).name)
                server.shutdown()
                break
            parent.cancel()


async def _serve_then_stop(
    beating: trio.CancelScope,
    app: App,
    config: Config,
    *,
    listeners: list[trio.SocketListener] | None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`serve`, then the heartbeat stops: the nursery ends with the server."""
    try:
        await serve(app, config, listeners=listeners, task_status=task_status)
    finally:
        beating.cancel()


async def _within(
    scope: trio.CancelScope, fn: Callable[..., Awaitable[object]], *args: object
) -> None:
    """Run ``fn(*args)`` as a task that *scope* ends (the server's end, or ours)."""
    with scope:
        await fn(*args)


def log_stream() -> LogStream:
    """The JetStream stream of ``--broker nats://``: Meshery's (``MESHERY`` over
    ``meshery.>``), whichever APP is served. The broker is connected before the
    app is built, so the app cannot name it; ``--broker`` belongs to the default
    app's options, and an APP wrapping Meshery (``create_app(broker=...)``) needs
    exactly this stream and keeps the data deployments have in it."""
    from .meshery import log_stream as meshery_stream

    return meshery_stream()


def nats_options(args: argparse.Namespace) -> NatsOptions:
    """The NATS broker's options from ``serve``'s: Meshery's stream, the stale bound.

    Needs nats-py (:class:`NatsOptions` imports it), like the broker itself.
    """
    from .brokers._nats_options import NatsOptions

    return NatsOptions(log=log_stream(), stale_timeout=args.nats_stale_timeout)


async def run_on_nats(args: argparse.Namespace, config: Config, url: str) -> None:
    """Connect to NATS, build the app on it, and serve with the broker open throughout.

    The same connection carries graphql-sse single connection mode between
    the processes (``Config.sse_relay``) when they share ``MESHSUB_STREAM_SECRET``
    (a supervisor gives its workers one; separate processes need the operator's).
    """
    secret = relay_secret()  # a bad one refuses to start before anything connects
    try:
        from .brokers._nats import NatsBroker

        options = nats_options(args)
    except ImportError as error:
        raise SystemExit(
            f"--broker {redacted(url)} needs nats-py and trio-asyncio: "
            "pip install 'meshsub-trio[nats]' "
            f"({error})"
        ) from None
    servers = [part.strip() for part in url.split(",") if part.strip()]
    connected = False
    try:
        async with NatsBroker.connect(
            servers, options=options, name=f"meshsub-trio[{os.getpid()}]"
        ) as broker:
            connected = True
            log.info(
                "connected to NATS at %s",
                redacted(url),
                extra={"stale_timeout": options.stale_timeout},
            )
            config = dataclasses.replace(config, sse_relay=relay_for(broker, secret))
            await run(app_from_args(args, broker), config)
    except (ConnectionError, RuntimeError, OSError) as error:
        if connected:
            raise
        raise SystemExit(f"cannot use the NATS broker at {redacted(url)}: {error}") from None


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running server.

    graphql-core allocates many short-lived cyclic objects per execution;
    with the default thresholds the collector runs constantly and its full
    passes walk every long-lived object (schema, caches). Freezing what start-up
    built takes that out of every pass; a larger first threshold batches the
    young collections. Only the standalone server does this: an embedding
    application owns its process's collector.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)
