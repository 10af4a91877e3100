"""``meshsub-trio serve``: run an app on the native host until SIGINT/SIGTERM.

With ``--broker nats://host:port`` (or ``MESHSUB_BROKER``) several processes
behind a load balancer serve as one: each connects to the same NATS
(JetStream enabled), replicates Meshery's model over it, and the broker stays
open for as long as the process serves.

What is Meshery's comes from :mod:`meshsub_trio.meshery`: its port
(``DEFAULT_PORT``) when it is the app served (no APP given; any other APP gets
``Config.port``), and the JetStream stream of ``--broker`` (``log_stream()``),
which every APP gets, as before: the broker exists before the app, so the app
cannot be asked, and an APP wrapping Meshery keeps its data. Endpoint paths
come with the App itself.
"""

from __future__ import annotations

import argparse
import errno
import gc
import importlib
import importlib.metadata
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ._app import App
from ._cli_types import Parser
from ._config import Config
from ._logging import configure_logging
from ._serve_options import (
    DEFAULT_APP,
    MEMORY,
    add_serve_options,
)
from ._server import Server, serve
from ._settings import (
    CONFIG_ENV,
    Resolved,
    SettingError,
    collect_options,
    parse_flags,
    resolve,
)
from ._supervisor._child import end_with_parent, tag_log_lines, worker_role
from .client._command import add_subscribe_command, run_subscribe

if TYPE_CHECKING:
    from .brokers._nats_log import LogStream

log = logging.getLogger("meshsub_trio")



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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="meshsub-trio", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    parser.add_argument("--version", action="version", version=f"meshsub-trio {_version()}")
    serve_cmd = commands.add_parser("serve", help="serve a GraphQL app (default: Meshery's API)")
    add_serve_options(serve_cmd)
    _add_config_file_option(serve_cmd)
    config_cmd = commands.add_parser(
        "config",
        help="print the effective serve configuration and where each value came from",
        description=(
            "Takes the same options as serve (flags, MESHSUB_* environment variables, "
            "--config FILE) and prints each setting with its source; serves nothing."
        ),
    )
    add_serve_options(config_cmd)
    _add_config_file_option(config_cmd)
    add_subscribe_command(commands)
    return parser


def _add_config_file_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=(
            f"a TOML file of options (keys as the long option names, top level or under "
            f"[serve]); precedence: flag > MESHSUB_* environment > file > default "
            f"(default: ${CONFIG_ENV})"
        ),
    )


def _version() -> str:
    try:
        return importlib.metadata.version("meshsub-trio")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def parse_serve_args(argv: Sequence[str]) -> tuple[argparse.Namespace, Resolved]:
    """``serve``/``config`` arguments with every option filled from its source."""
    parser = build_parser()
    parser.parse_args(argv)  # errors and --help, exactly as the user typed them
    command, rest = argv[0], list(argv[1:])
    sub = Parser(prog=f"meshsub-trio {command}")
    add_serve_options(sub)
    _add_config_file_option(sub)
    options = collect_options(sub)
    args = parse_flags(sub, rest, options)
    args.command = command
    try:
        resolved = resolve(args, options)
    except SettingError as error:
        raise SystemExit(f"meshsub-trio: {error}") from None
    if args.port is None:  # nowhere gave one: the served app's
        args.port = resolved.values["port"] = default_port(args)
    return args, resolved


def default_port(args: argparse.Namespace) -> int:
    """Meshery's port when serving the default app, else :attr:`Config.port`."""
    if args.app is not None:
        return Config.port
    from .meshery import DEFAULT_PORT

    return DEFAULT_PORT


def log_stream() -> LogStream:
    """The JetStream stream of ``--broker nats://``: Meshery's (``MESHERY`` over
    ``meshery.>``), whichever APP is served. The broker is connected before the
    app is built, so the app cannot name it; ``--broker`` belongs to the default
    app's options, and an APP wrapping Meshery (``create_app(broker=...)``) needs
    exactly this stream and keeps the data deployments have in it."""
    from .meshery import log_stream as meshery_stream

    return meshery_stream()


def print_config(resolved: Resolved) -> None:
    """One line per setting: ``name = value  # source`` (secrets shown as ***)."""
    for name, value, source in resolved:
        shown = "***" if name in _SECRETS and value else value
        print(f"{name} = {shown!r}  # {source}")


#: Settings whose values ``config`` does not print.
_SECRETS = frozenset({"metrics-token"})


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
        document_cache_bytes=args.document_cache_bytes,
        compiled_execution=args.compiled_execution,
        head_timeout=args.head_timeout,
        body_timeout=args.body_timeout,
        max_head_size=args.max_head_size,
        metrics_token=args.metrics_token or None,
        certfile=args.certfile or None,
        keyfile=args.keyfile or None,
        ca_certs=args.ca_certs or None,
        client_cert=args.client_cert or None,
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
    url = (args.broker or MEMORY).strip()
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
    return str(args.durability or "full")


def data_dir(args: argparse.Namespace) -> str:
    """``--data-dir``, else ``$MESHSUB_DATA_DIR``, else the user's data directory."""
    chosen = args.data_dir
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
    """Serve until SIGINT or SIGTERM, then shut down gracefully.

    A worker of ``serve --workers N`` serves on the sockets its supervisor
    passed it, and drains the same way when the supervisor is gone.
    """
    role = worker_role()
    listeners = role.listeners() if role is not None else None
    parent = trio.CancelScope()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(partial(serve, listeners=listeners), app, config)
            print(f"meshsub-trio serving on {server.url}", flush=True)
            if role is not None:
                log.info("worker %d serving", role.index, extra={"pid": os.getpid()})
                nursery.start_soon(_end_with_parent, parent)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    server.reload_tls()  # new handshakes get the new pair; nobody drops
                    continue
                log.info("%s received: shutting down", signal.Signals(signum).name)
                server.shutdown()
                break
            parent.cancel()


async def _end_with_parent(scope: trio.CancelScope) -> None:
    with scope:
        await end_with_parent()


async def run_on_nats(args: argparse.Namespace, config: Config, url: str) -> None:
    """Connect to NATS, build the app on it, and serve with the broker open throughout."""
    try:
        from .brokers._nats import NatsBroker
    except ImportError as error:
        raise SystemExit(
            f"--broker {url} needs nats-py and trio-asyncio: pip install 'meshsub-trio[nats]' "
            f"({error})"
        ) from None
    servers = [part.strip() for part in url.split(",") if part.strip()]
    connected = False
    try:
        async with NatsBroker.connect(
            servers, name=f"meshsub-trio[{os.getpid()}]", log=log_stream()
        ) as broker:
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("serve", "config"):
        args = build_parser().parse_args(argv)
        return run_subscribe(args)  # the only other command
    args, resolved = parse_serve_args(argv)
    if args.command == "config":
        print_config(resolved)
        return 0
    configure_logging(args.log_level, args.log_format)
    role = worker_role()
    if role is not None:
        tag_log_lines(role.index)
    config = config_from_args(args)
    tls_error = tls_problem(config)
    if tls_error is not None:
        print(f"meshsub-trio: {tls_error}", file=sys.stderr)
        return 1
    url = broker_url(args)
    if args.workers > 1 and role is None:
        from ._supervisor import plan_for, run_supervisor

        check_exposure(args)
        return run_supervisor(plan_for(argv, args, config, data_dir(args)))
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


def tls_problem(config: Config) -> str | None:
    """Why the TLS options cannot be served (one line), checked before anything starts."""
    if config.certfile is None:
        if config.keyfile or config.ca_certs or config.client_cert:
            return "--keyfile, --ca-certs and --client-cert need --certfile FILE"
        return None
    from ._transports._tls import TlsConfigError, build_context

    try:
        build_context(config.certfile, config.keyfile, config.ca_certs, config.client_cert)
    except TlsConfigError as error:
        return str(error)
    return None


def _store_error() -> type[Exception]:
    """Meshery's database start error, imported only once something failed."""
    from .meshery import StoreError

    return StoreError


def _is_listen_error(error: OSError) -> bool:
    """Errors binding the listening socket (raised before anything is served)."""
    return error.errno in {errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL} or isinstance(
        error, socket.gaierror
    )
