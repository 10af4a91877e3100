"""Serving an app on the native host: listeners, connection tasks, graceful shutdown.

Shutdown (``Server.shutdown()`` or cancelling ``serve``) stops accepting,
closes every WebSocket with 1001, lets every operation's cleanup run, and
returns within ``close_timeout`` plus a short grace, however frozen a client.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket

import trio

from ._app import App
from ._config import Config
from ._core._state import ServerState
from ._fdlimit import SpareDescriptor, raise_fd_limit
from ._metrics import Metrics
from ._transports._native import NativeHost
from ._transports._tls import TlsContexts

log = logging.getLogger("meshsub_trio.server")

_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
#: Connections accepted per wake-up before letting other tasks run.
_ACCEPT_BATCH = 64
#: Seconds between two "out of descriptors" log lines (each says how many went).
_SHED_LOG_EVERY = 10.0


class Server:
    """A running server: where it listens, its counters, and its off switch."""

    def __init__(self, state: ServerState, listeners: list[trio.SocketListener]) -> None:
        self.state = state
        self.listeners = listeners
        self._stop = trio.Event()
        self._accepting = trio.CancelScope()
        self._streams = 0
        self._idle = trio.Event()
        self._idle.set()
        #: The TLS context holder (None: plain TCP); see :meth:`reload_tls`.
        self.tls: TlsContexts | None = None

    @property
    def config(self) -> Config:
        return self.state.config

    @property
    def metrics(self) -> Metrics:
        return self.state.metrics

    @property
    def port(self) -> int:
        """The first bound port (useful with ``port=0``)."""
        return int(self.listeners[0].socket.getsockname()[1])

    @property
    def open_sockets(self) -> int:
        """TCP connections being served right now (HTTP or WebSocket, any stage)."""
        return self._streams

    @property
    def url(self) -> str:
        host = self.listeners[0].socket.getsockname()[0]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def reload_tls(self) -> bool:
        """Load the certificate and key files again (SIGHUP): new handshakes use
        them, open connections keep theirs. False (logged) if they cannot be used."""
        return self.tls.reload() if self.tls is not None else False

    def shutdown(self) -> None:
        """Begin a graceful shutdown; ``serve`` returns when it is done."""
        self._stop.set()

    async def _accept_loop(
        self, listener: trio.SocketListener, nursery: trio.Nursery, host: NativeHost
    ) -> None:
        """Accept every pending connection per wake-up, each into its own task.

        Works on a duplicate of the listening socket's descriptor: one
        readiness wait per batch and a plain ``accept`` per connection, where
        ``SocketListener.accept`` costs two scheduler passes each.
        """
        raw = socket.socket(fileno=os.dup(listener.socket.fileno()))
        spare = SpareDescriptor()
        shed = 0
        logged_at = -_SHED_LOG_EVERY
        try:
            raw.setblocking(False)
            # Set once here, inherited by every accepted socket (Linux), instead
            # of two system calls per connection in SocketStream.
            _inheritable_options(raw)
            while True:
                await trio.lowlevel.wait_readable(raw)
                for _ in range(_ACCEPT_BATCH):
                    try:
                        accepted, _ = raw.accept()
                    except BlockingIOError:
                        break
                    except OSError as error:
                        if error.errno not in _ACCEPT_ERRORS:
                            raise
                        # Out of descriptors: answer the waiting clients 503 now
                        # rather than leave them queued with no answer.
                        shed += spare.shed(raw, _ACCEPT_BATCH)
                        now = trio.current_time()
                        if now - logged_at >= _SHED_LOG_EVERY:
                            log.error(
                                "accept failed (%s): %d connection(s) turned away with 503",
                                error,
                                shed,
                            )
                            logged_at, shed = now, 0
                        await trio.sleep(0.1)
                        break
                    nursery.start_soon(self._handle, host, trio.socket.from_stdlib_socket(accepted))
        finally:
            spare.close()
            trio.lowlevel.notify_closing(raw)
            raw.close()

    async def _handle(self, host: NativeHost, sock: trio.socket.SocketType) -> None:
        self._streams += 1
        self._idle = trio.Event() if self._streams == 1 else self._idle
        try:
            await host.handle_socket(sock)
        except Exception:
            log.exception("connection failed")  # one connection, never the server
        finally:
            self._streams -= 1
            if self._streams == 0:
                self._idle.set()

    async def _close_gracefully(self, nursery: trio.Nursery) -> None:
        self._accepting.cancel()
        for listener in self.listeners:
            await listener.aclose()
        self.state.shutdown()
        # Each connection bounds its own close handshake by close_timeout;
        # plain HTTP requests in flight get the same time, then everything goes.
        with trio.move_on_after(self.config.close_timeout + 0.5):
            await self._idle.wait()
        nursery.cancel_scope.cancel()


def _inheritable_options(listening: socket.socket) -> None:
    """What ``trio.SocketStream`` would set on each connection: no Nagle delay
    for small frames, and writability only while little is unsent."""
    with contextlib.suppress(OSError):
        listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_NOTSENT_LOWAT"):
        with contextlib.suppress(OSError):
            listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 2**14)


async def serve(
    app: App,
    config: Config | None = None,
    *,
    metrics: Metrics | None = None,
    listeners: list[trio.SocketListener] | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *app* until shut down.

    ``await nursery.start(serve, app, config)`` returns the running :class:`Server`.
    Pass ready *listeners* (e.g. sockets made in another network namespace, or
    inherited from a supervisor) instead of binding ``config.host:config.port``.
    """
    config = config or Config()
    ceiling = raise_fd_limit()
    log.debug("descriptor limit %d: at most about that many connections", ceiling)
    state = ServerState(app, config, metrics)
    host = NativeHost(state)
    async with app.lifespan(), state.running():
        if listeners is None:
            listeners = await trio.open_tcp_listeners(
                config.port, host=config.host, backlog=config.backlog
            )
        host.serving(listener.socket.getsockname()[0] for listener in listeners)
        server = Server(state, listeners)
        server.tls = host.tls
        # The outer nursery holds one task per TCP connection; the inner one
        # the accept loops, which shutdown cancels first.
        async with trio.open_nursery() as nursery, trio.open_nursery() as accepting:
            server._accepting = accepting.cancel_scope
            for listener in listeners:
                accepting.start_soon(server._accept_loop, listener, nursery, host)
            log.info("serving on %s", server.url)
            task_status.started(server)
            try:
                await server._stop.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await server._close_gracefully(nursery)
