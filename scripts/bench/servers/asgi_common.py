"""uvicorn settings shared by every uvicorn-hosted peer, so they differ only in the app."""

from __future__ import annotations

import signal
import sys
from typing import Any

import uvicorn

UVICORN_OPTIONS: dict[str, Any] = {
    # The websockets library's Sans-I/O implementation: uvicorn's coming default
    # (the legacy "websockets" one is deprecated in 0.54).
    "ws": "websockets-sansio",
    # No transport pings during the runs (meshsub-trio runs with --keepalive 0).
    "ws_ping_interval": None,
    "ws_per_message_deflate": False,
    # What uvicorn picks by itself when uvloop is installed (it is, in the bench venv).
    "loop": "uvloop",
    "http": "h11",
    "backlog": 4096,
    "log_level": "warning",
    "access_log": False,
    "lifespan": "off",
}


def serve(app: Any, port: int) -> None:
    """Run *app* on uvicorn until SIGTERM/SIGINT, then exit normally (atexit hooks run).

    uvicorn re-raises the signal it caught once it has shut down; a handler
    that exits turns that into a normal exit instead of death by signal.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    uvicorn.run(app, host="127.0.0.1", port=port, **UVICORN_OPTIONS)
