"""Server settings, with the safe defaults the peers learned through bug reports."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._core._keepalive import wheel_tick
from ._wire import SUPPORTED

if TYPE_CHECKING:
    from ._transports._sse_relay import StreamRelay


def _env_flag(name: str) -> bool:
    """An on-by-default switch that the environment variable *name* = 0 turns off."""
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass
class Config:
    """Everything a host needs to know; every field has a safe default.

    The paths here are the host's generic ones; an app's own endpoints
    (``App(graphql_paths=..., playground_paths=...)``) are served beside them
    (:meth:`serving`).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    #: Paths that accept WebSocket upgrades (one path may also serve HTTP),
    #: besides the app's ``graphql_paths``.
    ws_paths: tuple[str, ...] = ("/ws",)
    #: Paths that answer GraphQL over HTTP (GET and POST), besides the app's
    #: ``graphql_paths``.
    http_paths: tuple[str, ...] = ("/api",)
    #: Paths that serve the GraphiQL playground, besides the app's ``playground_paths``.
    playground_paths: tuple[str, ...] = ("/playground",)
    #: Subprotocols spoken, in the server's order of support.
    subprotocols: tuple[str, ...] = SUPPORTED
    #: Seconds between keep-alives (ping frame / ``ping`` / ``ka``); 0 turns them off.
    keepalive: float = 12.0
    #: Seconds a peer has to answer a ping; None means the keep-alive interval.
    pong_timeout: float | None = None
    #: Seconds a client has to send ``connection_init`` (4408 after).
    init_timeout: float = 3.0
    #: Largest inbound message in bytes (close 1009 above it).
    max_message_size: int = 1 << 20
    #: Live operations per connection; more get an ``error`` (None: no cap).
    max_operations: int | None = 100
    #: Browser origins allowed to upgrade and to read HTTP answers (CORS).
    #: None: same host and loopback only; ``("*",)``: any origin (never with
    #: credentials). Requests without ``Origin`` (non-browsers) pass.
    allowed_origins: tuple[str, ...] | None = None
    #: Deepest selection allowed (None: no limit).
    max_depth: int | None = 15
    #: Most lexical tokens one document may have; the parser stops there, and
    #: at 16 characters per token (None: no cap). Real documents have under 200
    #: (GraphiQL's introspection: 183); a new document costs up to ~25 us per
    #: token to parse and validate, so 2,000 bound it to ~50 ms.
    max_tokens: int | None = 2_000
    #: Most fields one operation selects, aliases counted and fragments expanded
    #: (None: no limit). Checked before execution, in time linear in the document.
    max_fields: int | None = 2_000
    #: Highest cost of one operation: each field costs 1, times the list
    #: multipliers of the fields above it (a ``first``/``limit``-like integer
    #: argument, else 10) (None: no limit). GraphiQL's introspection costs 51,853.
    max_cost: int | None = 100_000
    #: Bytes the parsed-document cache may hold, besides its 1,024 entries
    #: (estimated: ~700 per token of a parsed document; a refused one keeps its
    #: errors only; one entry over an eighth of this is not cached).
    document_cache_bytes: int = 32 * 1024 * 1024
    #: Seconds a client has to send a whole HTTP request head, however it trickles
    #: in (408 if it began; an idle keep-alive connection closes after as long).
    head_timeout: float = 10.0
    #: Seconds a client has to send a whole request body once its head has
    #: arrived (408). The body is read only after ``authenticate`` let it in.
    body_timeout: float = 30.0
    #: Largest HTTP request head in bytes, blank line included (431 above it,
    #: however it is split; also 431 past 100 header fields).
    max_head_size: int = 64 * 1024
    #: ``Host`` names served besides ``localhost`` and IP literals (which a DNS
    #: rebinding page can never send): ``name``, ``name:port``, ``*.name``.
    #: None: those and the bind host, or any host when bound to 0.0.0.0 / ::
    #: (set a list when exposing it); ``("*",)``: any host (a proxy checks).
    #: Others get 421. No ``Host`` at all (HTTP/1.0, never a browser) passes.
    allowed_hosts: tuple[str, ...] | None = None
    #: Upgrade-request headers (lower-case names) a WebSocket's context keeps
    #: besides authorization, host, origin, user-agent and forwarding headers
    #: (cookies are always kept, parsed); the rest is dropped once the socket is open.
    keep_headers: tuple[str, ...] = ()
    #: Bearer token ``/metrics`` asks for; None leaves it open (say so when exposing).
    metrics_token: str | None = None
    #: Frames queued per connection before operations wait for the socket.
    outbox_size: int = 256
    #: Bytes the kernel may leave unsent on one socket before producers queue
    #: (and shared streams fall back to their members' bounded buffers).
    write_buffer_size: int = 256 * 1024
    #: Seconds one socket write may take before the peer counts as stalled.
    write_timeout: float = 10.0
    #: Seconds for closing handshakes and cleanups at connection end and shutdown.
    close_timeout: float = 2.0
    #: Seconds a shared streamer keeps running after its last subscriber leaves,
    #: so subscribers that come back (reconnects, page changes) join it again
    #: instead of starting it anew; 0 stops it at once.
    cohort_linger: float = 1.0
    #: Listen backlog: reconnect storms need more than the usual 100.
    backlog: int = 4096
    #: Execute subscription events with compiled plans (graphql-core's results at
    #: a tenth of its cost; see ``_execution/_compiler``); off: graphql-core for
    #: every event. Default from ``MESHSUB_COMPILED`` (``0`` turns it off).
    compiled_execution: bool = field(default_factory=lambda: _env_flag("MESHSUB_COMPILED"))
    #: PEM certificate (chain) to serve TLS with: https:// and wss:// (None: plain TCP).
    certfile: str | None = None
    #: PEM private key of ``certfile`` (None: it is in ``certfile``).
    keyfile: str | None = None
    #: PEM CAs that client certificates must chain to (mutual TLS).
    ca_certs: str | None = None
    #: ``"required"``, ``"optional"`` or ``"none"`` (None: required when ``ca_certs`` is set).
    client_cert: str | None = None
    #: graphql-sse single connection mode across processes: the link to the
    #: others over their shared broker (``serve --broker nats://`` with
    #: ``MESHSUB_STREAM_SECRET`` makes it; run for as long as the server runs).
    #: None: a reservation's requests must all reach this process.
    sse_relay: StreamRelay | None = field(default=None, compare=False, repr=False)

    def serving(self, graphql: Sequence[str] = (), playground: Sequence[str] = ()) -> Config:
        """This config with an app's own paths added: *graphql* endpoints (HTTP
        and WebSocket) after :attr:`ws_paths` and :attr:`http_paths` (the
        playground page presets the last path that speaks both), *playground*
        pages before :attr:`playground_paths`. Itself when nothing is new."""
        ws = _added(self.ws_paths, graphql)
        http = _added(self.http_paths, graphql)
        pages = tuple(p for p in dict.fromkeys(playground) if p not in self.playground_paths)
        if ws == self.ws_paths and http == self.http_paths and not pages:
            return self
        return dataclasses.replace(
            self, ws_paths=ws, http_paths=http, playground_paths=(*pages, *self.playground_paths)
        )

    @property
    def pong_deadline(self) -> float:
        return self.keepalive if self.pong_timeout is None else self.pong_timeout

    @property
    def keepalive_tick(self) -> float:
        """How often the server's keep-alive wheel wakes: a tenth of the shorter period."""
        return wheel_tick(self.keepalive, self.pong_deadline)

    @property
    def dead_peer_bound(self) -> float:
        """The longest a silent peer can hold a connection: interval + deadline,
        plus two wheel ticks (a ping may go out a tick late, a check rounds up)."""
        return self.keepalive + self.pong_deadline + 2 * self.keepalive_tick


def _added(paths: tuple[str, ...], more: Sequence[str]) -> tuple[str, ...]:
    return (*paths, *(p for p in dict.fromkeys(more) if p not in paths))
