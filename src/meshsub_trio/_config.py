"""Server settings, with the safe defaults the peers learned through bug reports."""

from __future__ import annotations

from dataclasses import dataclass

from ._protocol import SUPPORTED

MESHERY_ENDPOINT = "/api/system/graphql/query"


@dataclass
class Config:
    """Everything a host needs to know; every field has a safe default."""

    host: str = "127.0.0.1"
    port: int = 9081
    #: Paths that accept WebSocket upgrades (one path may also serve HTTP).
    ws_paths: tuple[str, ...] = ("/ws", MESHERY_ENDPOINT)
    #: Paths that answer GraphQL over HTTP (GET and POST).
    http_paths: tuple[str, ...] = ("/api", MESHERY_ENDPOINT)
    #: Paths that serve the GraphiQL playground.
    playground_paths: tuple[str, ...] = ("/api/system/graphql/playground", "/playground")
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
    #: Browser origins allowed to upgrade. None: same host and loopback only;
    #: ``("*",)``: any origin. Requests without ``Origin`` (non-browsers) pass.
    allowed_origins: tuple[str, ...] | None = None
    #: Deepest selection allowed (None: no limit).
    max_depth: int | None = 15
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

    @property
    def pong_deadline(self) -> float:
        return self.keepalive if self.pong_timeout is None else self.pong_timeout

    @property
    def dead_peer_bound(self) -> float:
        """The longest a silent peer can hold a connection: interval + deadline."""
        return self.keepalive + self.pong_deadline
