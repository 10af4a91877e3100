"""``meshsub-trio serve``: run an app on the native host until SIGINT/SIGTERM.

With ``--broker nats://host:port`` (or ``MESHSUB_BROKER``) several processes
behind a load balancer serve as one: each connects to the same NATS
(JetStream enabled), replicates Meshery's model over it, and the broker stays
open for as long as the process serves.
"""

from __future__ import annotations

import argparse
import errno
import gc
import importlib
import ipaddress
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import trio

from ._app import App
from ._config import Config
from ._server import Server, serve
from .client._command import add_subscribe_command, run_subscribe

log = logging.getLogger("meshsub_trio")

DEFAULT_APP = "meshsub_trio.meshery:create_app"
BROKER_ENV = "MESHSUB_BROKER"
DATA_DIR_ENV = "MESHSUB_DATA_DIR"
DURABILITY_ENV = "MESHSUB_DURABILITY"
METRICS_TOKEN_ENV = "MESHSUB_METRICS_TOKEN"
MEMORY = "memory"


def load_app(path: str, **factory_options: Any) -> App:
    """Import ``module:attr``; *attr* is an :class:`App` or a factory returning one."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"APP must look like 'module:attribute', got {path!r}")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise SystemExit(f"cannot load {path!r}: {error}") from None
    if isinstance(target, App):
        return target
    if callable(target):
        app = target(**factory_options)
        if isinstance(app, App):
            return app
    raise SystemExit(f"{path!r} is neither an App nor a factory returning one")


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (and exit 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _port(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535; 0 = any free port)")
    return value


def _integer(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _count(text: str) -> int:
    """A whole number >= 0 (0 where a limit may be switched off)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _positive_count(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _seconds(text: str) -> float:
    """A duration >= 0 (0 where it switches something off)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is a negative duration")
    return value


def _positive_seconds(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a duration above 0")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def _host_entry(text: str) -> str:
    """An ``--allow-host`` entry: ``*``, ``name``, ``name:port`` or ``*.name``."""
    from ._transports._hosts import split_host

    if text.strip() != "*" and split_host(text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name or name:port")
    return text.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meshsub-trio", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve_cmd = commands.add_parser("serve", help="serve a GraphQL app (default: Meshery's API)")
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
        "--port", type=_port, default=9081, help="port to bind (default 9081; 0 = any)"
    )
    serve_cmd.add_argument(
        "--keepalive",
        type=_seconds,
        default=12.0,
        metavar="SECONDS",
        help="keep-alive interval; a peer silent this long + the pong deadline is dropped (0: off)",
    )
    serve_cmd.add_argument(
        "--pong-timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="pong deadline after each ping (default: the keep-alive interval)",
    )
    serve_cmd.add_argument(
        "--init-timeout",
        type=_positive_seconds,
        default=Config.init_timeout,
        metavar="SECONDS",
        help="time a client has to send connection_init (4408 after; default %(default)s)",
    )
    serve_cmd.add_argument(
        "--cohort-linger",
        type=_seconds,
        default=Config.cohort_linger,
        metavar="SECONDS",
        help="keep a shared streamer running this long after its last subscriber leaves",
    )
    serve_cmd.add_argument("--ws-path", action="append", dest="ws_paths", metavar="PATH")
    serve_cmd.add_argument("--http-path", action="append", dest="http_paths", metavar="PATH")
    serve_cmd.add_argument(
        "--allow-origin",
        action="append",
        dest="origins",
        metavar="ORIGIN",
        help="browser Origin allowed to open sockets ('*' for any); default same host + loopback",
    )
    serve_cmd.add_argument(
        "--max-operations",
        type=_count,
        default=100,
        help="live operations per connection (0: no cap; default %(default)s)",
    )
    serve_cmd.add_argument(
        "--max-message-size",
        type=_positive_count,
        default=Config.max_message_size,
        metavar="BYTES",
        help="largest inbound WebSocket message or HTTP body (default %(default)s)",
    )
    serve_cmd.add_argument(
        "--write-timeout",
        type=_positive_seconds,
        default=Config.write_timeout,
        metavar="SECONDS",
        help="a socket write stalled this long drops the peer (default %(default)s)",
    )
    _add_security_options(serve_cmd)
    serve_cmd.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
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
        "--rate", type=_positive, default=1.0, help="simulator speed factor (default 1.0)"
    )
    meshery.add_argument("--seed", type=_integer, default=None, help="simulator random seed")
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
        "--max-object-bytes", type=_count, default=1 << 20, metavar="BYTES",
        help=(
            "largest stored design, filter, profile, context, result or event, as JSON bytes "
            "(413 above; default %(default)s)"
        ),
    )
    storage.add_argument(
        "--max-user-bytes", type=_count, default=64 << 20, metavar="BYTES",
        help=(
            "bytes of designs, filters, profiles, results and contexts each user may store "
            "(default %(default)s)"
        ),
    )
    storage.add_argument(
        "--max-records", type=_count, default=1000, metavar="N",
        help="designs, filters, profiles and K8s contexts each user may keep, per kind "
        "(default %(default)s)",
    )
    storage.add_argument(
        "--max-event-bytes", type=_count, default=8 << 20, metavar="BYTES",
        help="each user's event history in bytes; the oldest are dropped (default %(default)s)",
    )
    storage.add_argument(
        "--resume-log-bytes", type=_count, default=64 << 20, metavar="BYTES",
        help=(
            "recent changes kept for clients resuming from a cursor; older cursors expire "
            "(default %(default)s)"
        ),
    )
    meshery.add_argument(
        "--tokens",
        metavar="FILE",
        help="token mode: a JSON file mapping bearer tokens to user ids",
    )
    meshery.add_argument(
        "--allow-remote-local-mode",
        action="store_true",
        help="allow binding a non-loopback address without token mode (everyone is the local user)",
    )
    add_subscribe_command(commands)
    return parser


def _add_security_options(serve_cmd: argparse.ArgumentParser) -> None:
    """The limits that keep one client from harming others (README: Security)."""
    limits = serve_cmd.add_argument_group(
        "limits", "what one request may cost before it is refused (0: no limit)"
    )
    limits.add_argument(
        "--max-depth", type=_count, default=Config.max_depth, metavar="N",
        help="deepest selection set (default %(default)s)",
    )
    limits.add_argument(
        "--max-tokens", type=_count, default=Config.max_tokens, metavar="N",
        help="lexical tokens in one document; the parser stops there (default %(default)s)",
    )
    limits.add_argument(
        "--max-fields", type=_count, default=Config.max_fields, metavar="N",
        help="fields one operation selects, aliases and fragments counted (default %(default)s)",
    )
    limits.add_argument(
        "--max-cost", type=_count, default=Config.max_cost, metavar="N",
        help="cost of one operation, list fields multiplying what they hold (default %(default)s)",
    )
    limits.add_argument(
        "--head-timeout", type=_positive_seconds, default=Config.head_timeout,
        metavar="SECONDS", help="time to send a whole HTTP request head (default %(default)s)",
    )
    limits.add_argument(
        "--body-timeout", type=_positive_seconds, default=Config.body_timeout,
        metavar="SECONDS", help="time to send a whole request body (default %(default)s)",
    )
    limits.add_argument(
        "--max-head-size", type=_positive_count, default=Config.max_head_size,
        metavar="BYTES", help="largest HTTP request head, 431 above (default %(default)s)",
    )
    exposure = serve_cmd.add_argument_group("exposure")
    exposure.add_argument(
        "--allow-host",
        action="append",
        type=_host_entry,
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
            "resolvers (repeatable; authorization, cookies, origin, user-agent and "
            "forwarding headers are always kept)"
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


def config_from_args(args: argparse.Namespace) -> Config:
    config = Config(
        host=args.host,
        port=args.port,
        keepalive=args.keepalive,
        pong_timeout=args.pong_timeout,
        init_timeout=args.init_timeout,
        cohort_linger=args.cohort_linger,
        max_operations=args.max_operations if args.max_operations > 0 else None,
        max_message_size=args.max_message_size,
        write_timeout=args.write_timeout,
        max_depth=args.max_depth or None,
        max_tokens=args.max_tokens or None,
        max_fields=args.max_fields or None,
        max_cost=args.max_cost or None,
        head_timeout=args.head_timeout,
        body_timeout=args.body_timeout,
        max_head_size=args.max_head_size,
        metrics_token=args.metrics_token or os.environ.get(METRICS_TOKEN_ENV) or None,
    )
    if args.hosts:
        config.allowed_hosts = tuple(args.hosts)
    if args.keep_headers:
        config.keep_headers = tuple(name.strip().lower() for name in args.keep_headers)
    if args.ws_paths:
        config.ws_paths = tuple(args.ws_paths)
    if args.http_paths:
        config.http_paths = tuple(args.http_paths)
    if args.origins:
        config.allowed_origins = tuple(args.origins)
    return config


def broker_url(args: argparse.Namespace) -> str:
    """``--broker``, else ``$MESHSUB_BROKER``, else ``memory``."""
    url = (args.broker or os.environ.get(BROKER_ENV) or MEMORY).strip()
    if url != MEMORY and not all(
        part.strip().startswith(("nats://", "tls://")) for part in url.split(",")
    ):
        raise SystemExit(f"--broker must be {MEMORY!r} or nats://HOST:PORT[,...], got {url!r}")
    return url


def check_exposure(args: argparse.Namespace) -> None:
    if args.app is not None:
        return
    if not _is_loopback(args.host) and not args.tokens and not args.allow_remote_local_mode:
        raise SystemExit(
            f"refusing to serve the local user on non-loopback {args.host!r}: "
            "pass --tokens FILE (token mode) or --allow-remote-local-mode"
        )


def app_from_args(args: argparse.Namespace, broker: Any = None) -> App:
    """The app to serve; *broker* (a connected shared broker) goes to the factory."""
    if args.app is not None:
        if broker is None:
            return load_app(args.app)
        return load_app(args.app, broker=broker)
    check_exposure(args)
    simulator = args.simulator if args.simulator is not None else broker is None
    options: dict[str, Any] = {"simulator": simulator, "rate": args.rate}
    if broker is not None:
        options["broker"] = broker
    if args.seed is not None:
        options["seed"] = args.seed
    if args.tokens:
        options["tokens"] = _read_tokens(args.tokens)
    options["data_dir"] = data_dir(args)
    options["durability"] = durability(args)
    options["limits"] = storage_limits(args)
    return load_app(DEFAULT_APP, **options)


def storage_limits(args: argparse.Namespace) -> Any:
    """The Meshery model's :class:`StorageLimits` from the flags (0: no limit)."""
    from .meshery import StorageLimits

    return StorageLimits(
        object_bytes=args.max_object_bytes or None,
        user_bytes=args.max_user_bytes or None,
        records=args.max_records or None,
        event_bytes=args.max_event_bytes or None,
        resume_log_bytes=args.resume_log_bytes or None,
    )


def durability(args: argparse.Namespace) -> str:
    """``--durability``, else ``$MESHSUB_DURABILITY``, else ``full``."""
    chosen = args.durability or os.environ.get(DURABILITY_ENV) or "full"
    if chosen not in ("full", "normal"):
        raise SystemExit(f"meshsub-trio: ${DURABILITY_ENV} must be full or normal, got {chosen!r}")
    return chosen


def data_dir(args: argparse.Namespace) -> str:
    """``--data-dir``, else ``$MESHSUB_DATA_DIR``, else the user's data directory."""
    chosen = args.data_dir or os.environ.get(DATA_DIR_ENV)
    if chosen:
        return str(chosen)
    from .meshery import default_data_dir

    return str(default_data_dir())


def _read_tokens(path: str) -> dict[str, str]:
    import json

    try:
        with open(path, encoding="utf-8") as file:
            tokens = json.load(file)
    except (OSError, ValueError) as error:
        raise SystemExit(f"cannot read tokens from {path}: {error}") from None
    if not isinstance(tokens, dict) or not all(isinstance(v, str) for v in tokens.values()):
        raise SystemExit(f"{path} must hold a JSON object of token -> user id")
    return tokens


async def run(app: App, config: Config) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(serve, app, config)
            print(f"meshsub-trio serving on {server.url}", flush=True)
            async for signum in signals:
                log.info("%s received: shutting down", signal.Signals(signum).name)
                server.shutdown()
                break


async def run_on_nats(args: argparse.Namespace, config: Config, url: str) -> None:
    """Connect to NATS, build the app on it, and serve with the broker open throughout."""
    try:
        from ._nats import NatsBroker
    except ImportError as error:
        raise SystemExit(
            f"--broker {url} needs nats-py and trio-asyncio: pip install 'meshsub-trio[nats]' "
            f"({error})"
        ) from None
    servers = [part.strip() for part in url.split(",") if part.strip()]
    connected = False
    try:
        async with NatsBroker.connect(servers, name=f"meshsub-trio[{os.getpid()}]") as broker:
            connected = True
            log.info("connected to NATS at %s", url)
            await run(app_from_args(args, broker), config)
    except (ConnectionError, RuntimeError, OSError) as error:
        if connected:
            raise
        raise SystemExit(f"cannot use the NATS broker at {url}: {error}") from None


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


def _first_os_error(error: BaseException) -> OSError | None:
    """The OSError inside *error*, however deep in exception groups."""
    if isinstance(error, OSError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first_os_error(inner)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "subscribe":
        return run_subscribe(args)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = config_from_args(args)
    url = broker_url(args)
    if config.host in ("0.0.0.0", "::", "") and config.allowed_hosts is None:
        log.warning(
            "bound to every address with no --allow-host: any Host header is served "
            "(name the hosts clients use to stop DNS rebinding)"
        )
    try:
        if url == MEMORY:
            app = app_from_args(args)
            tune_gc()
            trio.run(run, app, config)
        else:
            check_exposure(args)
            tune_gc()
            trio.run(run_on_nats, args, config, url)
    except _store_error() as error:
        # The data directory's database cannot be used (damaged, locked by
        # another server, newer schema): one line, never an empty state served.
        print(f"meshsub-trio: {error}", file=sys.stderr)
        return 1
    except (OSError, BaseExceptionGroup) as error:
        # A busy port, a missing permission, an address not on this machine:
        # one line an operator can act on, not a traceback.
        problem = _first_os_error(error)
        if problem is None or not _is_listen_error(problem):
            raise
        reason = problem.strerror or str(problem)
        print(
            f"meshsub-trio: cannot listen on {config.host}:{config.port}: {reason}",
            file=sys.stderr,
        )
        return 1
    return 0


def _store_error() -> type[Exception]:
    """Meshery's database start error, imported only once something failed."""
    from .meshery import StoreError

    return StoreError


def _is_listen_error(error: OSError) -> bool:
    """Errors binding the listening socket (raised before anything is served)."""
    return error.errno in {errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL} or isinstance(
        error, socket.gaierror
    )
