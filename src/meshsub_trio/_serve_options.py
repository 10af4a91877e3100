"""The options of ``meshsub-trio serve`` (and ``config``), each with its help and default.

Every option can also come from an environment variable (``MESHSUB_`` and the
option's name, e.g. ``MESHSUB_MAX_COST``) or a TOML file (``--config FILE``);
see :mod:`._settings` for the precedence.
"""

from __future__ import annotations

import argparse
import os

from ._cli_types import (
    count,
    host_entry,
    integer,
    port,
    positive,
    positive_count,
    positive_seconds,
    seconds,
)
from ._config import Config
from ._logging import redacted as redacted  # the CLI's URLs are scrubbed where logs are

DEFAULT_APP = "meshsub_trio.meshery:create_app"
MEMORY = "memory"
ENV_PREFIX = "MESHSUB_"
BROKER_ENV = "MESHSUB_BROKER"
DATA_DIR_ENV = "MESHSUB_DATA_DIR"
DURABILITY_ENV = "MESHSUB_DURABILITY"
METRICS_TOKEN_ENV = "MESHSUB_METRICS_TOKEN"
#: ``NatsOptions.stale_timeout``'s default, repeated rather than imported:
#: importing it imports nats-py, which a server on the memory broker never needs.
NATS_STALE_TIMEOUT = 10.0


#: More workers than this is a typo, not a machine.
MAX_WORKERS = 512
#: ``--worker-timeout``'s default, gunicorn's: far above any legitimate hold of
#: a worker's event loop (a large fan-out holds it for about a second).
DEFAULT_WORKER_TIMEOUT = 30.0


def worker_count(text: str) -> int:
    """``auto`` (the cores this process may run on) or a whole number from 1."""
    if text.strip().lower() == "auto":
        return available_cores()
    value = positive_count(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{text!r} workers is more than {MAX_WORKERS}")
    return value


def available_cores() -> int:
    """Cores this process may use (its CPU affinity, so a container's limit counts)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def add_serve_options(serve_cmd: argparse.ArgumentParser) -> None:
    """Everything ``serve`` accepts."""
    serve_cmd.add_argument(
        "app",
        nargs="?",
        default=None,
        help=f"import path module:attr of an App or App factory (default {DEFAULT_APP})",
    )
    serve_cmd.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
    )
    serve_cmd.add_argument(
        "--port",
        type=port,
        default=None,
        help=(
            "port to bind (0 = any; default: Meshery's 9081 when serving Meshery's app, "
            f"else {Config.port})"
        ),
    )
    serve_cmd.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        metavar="N|auto",
        help=(
            "worker processes sharing the port (SO_REUSEPORT) and serving as one over NATS; "
            "'auto' is one per core. Without --broker an embedded nats-server is started "
            "(pip install 'meshsub-trio[workers]'); a worker that dies is restarted "
            "(default 1: this process serves)"
        ),
    )
    serve_cmd.add_argument(
        "--worker-timeout",
        type=seconds,
        default=DEFAULT_WORKER_TIMEOUT,
        metavar="SECONDS",
        help=(
            "with --workers: a worker whose event loop sends no heartbeat this long (stuck, "
            "spinning, stopped) is killed and restarted (0: never; default %(default)s)"
        ),
    )
    serve_cmd.add_argument(
        "--keepalive",
        type=seconds,
        default=12.0,
        metavar="SECONDS",
        help=(
            "keep-alive interval; a peer silent this long + the pong deadline is dropped "
            "(0: off; default %(default)s)"
        ),
    )
    serve_cmd.add_argument(
        "--pong-timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="pong deadline after each ping (default: the keep-alive interval)",
    )
    serve_cmd.add_argument(
        "--init-timeout",
        type=positive_seconds,
        default=Config.init_timeout,
        metavar="SECONDS",
        help="time a client has to send connection_init (4408 after; default %(default)s)",
    )
    serve_cmd.add_argument(
        "--cohort-linger",
        type=seconds,
        default=Config.cohort_linger,
        metavar="SECONDS",
        help=(
            "keep a shared streamer running this long after its last subscriber leaves "
            "(0: stop it at once; default %(default)s)"
        ),
    )
    serve_cmd.add_argument(
        "--ws-path",
        action="append",
        dest="ws_paths",
        metavar="PATH",
        help=(
            "a WebSocket path besides the app's own endpoint (repeatable; "
            f"default {', '.join(Config.ws_paths)})"
        ),
    )
    serve_cmd.add_argument(
        "--http-path",
        action="append",
        dest="http_paths",
        metavar="PATH",
        help=(
            "a GraphQL-over-HTTP path besides the app's own endpoint (repeatable; "
            f"default {', '.join(Config.http_paths)})"
        ),
    )
    serve_cmd.add_argument(
        "--allow-origin",
        action="append",
        dest="origins",
        metavar="ORIGIN",
        help="browser Origin allowed to open sockets ('*' for any); default same host + loopback",
    )
    serve_cmd.add_argument(
        "--max-operations",
        type=count,
        default=100,
        help="live operations per connection (0: no cap; default %(default)s)",
    )
    serve_cmd.add_argument(
        "--max-message-size",
        type=positive_count,
        default=Config.max_message_size,
        metavar="BYTES",
        help="largest inbound WebSocket message or HTTP body (default %(default)s)",
    )
    serve_cmd.add_argument(
        "--write-timeout",
        type=positive_seconds,
        default=Config.write_timeout,
        metavar="SECONDS",
        help="a socket write stalled this long drops the peer (default %(default)s)",
    )
    serve_cmd.add_argument(
        "--no-compiled-execution",
        dest="compiled_execution",
        action="store_false",
        default=True,
        help=(
            "execute subscription events with graphql-core instead of compiled plans "
            "(identical results, about a tenth of the speed; default: compiled)"
        ),
    )
    _add_security_options(serve_cmd)
    _add_tls_options(serve_cmd)
    serve_cmd.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help=(
            "info: HTTP access lines, refused upgrades and auth, slow consumers; debug adds "
            "a line per connection and per operation (default %(default)s)"
        ),
    )
    serve_cmd.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="log lines as readable text or one JSON object per line (default %(default)s)",
    )
    meshery = serve_cmd.add_argument_group("the default Meshery application")
    meshery.add_argument(
        "--broker",
        metavar="URL",
        default=None,
        help=(
            f"'{MEMORY}' (one process; the default) or nats://HOST:PORT[,nats://...]: every "
            "process on that NATS (JetStream on) serves the same state and events, and "
            f"clients resume on any of them (default: ${BROKER_ENV}, else {MEMORY})"
        ),
    )
    meshery.add_argument(
        "--nats-stale-timeout",
        type=seconds,
        default=NATS_STALE_TIMEOUT,
        metavar="SECONDS",
        help=(
            "with a NATS broker (--broker nats://, --workers): a server connected but silent "
            "this long (hung, stopped, cut off without a reset) counts as down: changes are "
            "refused (503) and the connection is dropped and retried (0: no such probe, only "
            "nats-py's own pings; default %(default)s)"
        ),
    )
    meshery.add_argument(
        "--simulator",
        dest="simulator",
        action="store_const",
        const=True,
        default=None,
        help=(
            "run the simulated cluster (the default with the memory broker; with NATS it "
            "is off unless given: pass it to exactly ONE of the processes)"
        ),
    )
    meshery.add_argument(
        "--no-simulator",
        dest="simulator",
        action="store_const",
        const=False,
        help="start with an idle cluster",
    )
    meshery.add_argument(
        "--rate", type=positive, default=1.0, help="simulator speed factor (default 1.0)"
    )
    meshery.add_argument(
        "--seed", type=integer, default=None, help="simulator random seed (default: a new one)"
    )
    meshery.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help=(
            "where designs, filters, contexts, profiles, results and events are kept "
            f"(':memory:' keeps nothing; default: ${DATA_DIR_ENV}, else the user's data "
            "directory, $XDG_DATA_HOME/meshsub-trio or ~/.local/share/meshsub-trio)"
        ),
    )
    meshery.add_argument(
        "--durability",
        choices=["full", "normal"],
        default=None,
        help=(
            "when an acknowledged change is safe: 'full' syncs every commit to disk (survives "
            "power loss; the default), 'normal' survives a crash of the process but maybe not "
            f"of the machine (default: ${DURABILITY_ENV}, else full)"
        ),
    )
    storage = serve_cmd.add_argument_group(
        "storage limits of the Meshery application", "0: no limit (README: Security)"
    )
    storage.add_argument(
        "--max-object-bytes", type=count, default=1 << 20, metavar="BYTES",
        help=(
            "largest stored design, filter, profile, context, result or event, as JSON bytes "
            "(413 above; default %(default)s)"
        ),
    )
    storage.add_argument(
        "--max-user-bytes", type=count, default=64 << 20, metavar="BYTES",
        help=(
            "bytes of designs, filters, profiles, results and contexts each user may store "
            "(default %(default)s)"
        ),
    )
    storage.add_argument(
        "--max-records", type=count, default=1000, metavar="N",
        help="designs, filters, profiles and K8s contexts each user may keep, per kind "
        "(default %(default)s)",
    )
    storage.add_argument(
        "--max-event-bytes", type=count, default=8 << 20, metavar="BYTES",
        help="each user's event history in bytes; the oldest are dropped (default %(default)s)",
    )
    storage.add_argument(
        "--resume-log-bytes", type=count, default=64 << 20, metavar="BYTES",
        help=(
            "recent changes kept for clients resuming from a cursor; older cursors expire "
            "(default %(default)s)"
        ),
    )
    meshery.add_argument(
        "--tokens",
        metavar="FILE",
        help=(
            "token mode: a JSON file mapping bearer tokens to user ids (default: local mode, "
            "everyone is the local user)"
        ),
    )
    meshery.add_argument(
        "--allow-remote-local-mode",
        action="store_true",
        help="allow binding a non-loopback address without token mode (everyone is the local user)",
    )


def _add_tls_options(serve_cmd: argparse.ArgumentParser) -> None:
    """https:// and wss:// from the server itself (README: Security); SIGHUP reloads the files."""
    tls = serve_cmd.add_argument_group(
        "TLS", "serve https:// and wss:// (TLS 1.2+); SIGHUP loads the files again"
    )
    tls.add_argument(
        "--certfile", metavar="FILE", default=None,
        help="PEM certificate chain; turns TLS on (default: plain TCP)",
    )
    tls.add_argument(
        "--keyfile", metavar="FILE", default=None,
        help="PEM private key of --certfile (default: in --certfile)",
    )
    tls.add_argument(
        "--ca-certs", metavar="FILE", default=None,
        help="PEM CAs client certificates must chain to (mutual TLS; default: none asked for)",
    )
    tls.add_argument(
        "--client-cert", choices=["required", "optional", "none"], default=None,
        help="ask clients for a certificate (default: required with --ca-certs, else none)",
    )


def _add_security_options(serve_cmd: argparse.ArgumentParser) -> None:
    """The limits that keep one client from harming others (README: Security)."""
    limits = serve_cmd.add_argument_group(
        "limits", "what one request may cost before it is refused (0: no limit)"
    )
    limits.add_argument(
        "--max-depth", type=count, default=Config.max_depth, metavar="N",
        help="deepest selection set (default %(default)s)",
    )
    limits.add_argument(
        "--max-tokens", type=count, default=Config.max_tokens, metavar="N",
        help=(
            "lexical tokens in one document (and 16 characters per token); the parser stops "
            "there (default %(default)s)"
        ),
    )
    limits.add_argument(
        "--max-fields", type=count, default=Config.max_fields, metavar="N",
        help="fields one operation selects, aliases and fragments counted (default %(default)s)",
    )
    limits.add_argument(
        "--max-cost", type=count, default=Config.max_cost, metavar="N",
        help="cost of one operation, list fields multiplying what they hold (default %(default)s)",
    )
    limits.add_argument(
        "--document-cache-bytes", type=positive_count, default=Config.document_cache_bytes,
        metavar="BYTES",
        help=(
            "bytes the parsed-document cache may hold, estimated at ~700 per token "
            "(default %(default)s)"
        ),
    )
    limits.add_argument(
        "--head-timeout", type=positive_seconds, default=Config.head_timeout,
        metavar="SECONDS", help="time to send a whole HTTP request head (default %(default)s)",
    )
    limits.add_argument(
        "--body-timeout", type=positive_seconds, default=Config.body_timeout,
        metavar="SECONDS", help="time to send a whole request body (default %(default)s)",
    )
    limits.add_argument(
        "--max-head-size", type=positive_count, default=Config.max_head_size,
        metavar="BYTES", help="largest HTTP request head, 431 above (default %(default)s)",
    )
    exposure = serve_cmd.add_argument_group("exposure")
    exposure.add_argument(
        "--allow-host",
        action="append",
        type=host_entry,
        dest="hosts",
        metavar="HOST",
        help=(
            "Host header value served (repeatable; '*' for any). Default: loopback names and "
            "the bound address; other hosts get 421, which stops DNS rebinding"
        ),
    )
    exposure.add_argument(
        "--keep-header",
        action="append",
        dest="keep_headers",
        metavar="NAME",
        help=(
            "an upgrade-request header a WebSocket's context keeps for auth hooks and "
            "resolvers (repeatable; default: only authorization, cookies, origin, user-agent "
            "and forwarding headers, which are always kept)"
        ),
    )
    exposure.add_argument(
        "--metrics-token",
        metavar="TOKEN",
        default=None,
        help=(
            f"bearer token /metrics asks for (default: ${METRICS_TOKEN_ENV}, else /metrics "
            "is open to anyone who can reach the port)"
        ),
    )
