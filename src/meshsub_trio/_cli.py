"""``meshsub-trio serve``: run an app on the native host until SIGINT/SIGTERM.

With ``--broker nats://host:port`` (or ``MESHSUB_BROKER``) several processes
behind a load balancer serve as one: each connects to the same NATS
(JetStream enabled), replicates Meshery's model over it, and the broker stays
open for as long as the process serves.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import trio

from ._app import App
from ._config import Config
from ._server import Server, serve

log = logging.getLogger("meshsub_trio")

DEFAULT_APP = "meshsub_trio.meshery:create_app"
BROKER_ENV = "MESHSUB_BROKER"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshsub-trio", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
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
        "--port", type=int, default=9081, help="port to bind (default 9081; 0 = any)"
    )
    serve_cmd.add_argument(
        "--keepalive",
        type=float,
        default=12.0,
        metavar="SECONDS",
        help="keep-alive interval; a peer silent this long + the pong deadline is dropped (0: off)",
    )
    serve_cmd.add_argument(
        "--pong-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="pong deadline after each ping (default: the keep-alive interval)",
    )
    serve_cmd.add_argument("--init-timeout", type=float, default=3.0, metavar="SECONDS")
    serve_cmd.add_argument(
        "--cohort-linger",
        type=float,
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
    serve_cmd.add_argument("--max-operations", type=int, default=100)
    serve_cmd.add_argument("--max-message-size", type=int, default=1 << 20, metavar="BYTES")
    serve_cmd.add_argument("--write-timeout", type=float, default=10.0, metavar="SECONDS")
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
    meshery.add_argument("--rate", type=float, default=1.0, help="simulator speed factor")
    meshery.add_argument("--seed", type=int, default=None, help="simulator random seed")
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
    return parser


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
    )
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
    return load_app(DEFAULT_APP, **options)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = config_from_args(args)
    url = broker_url(args)
    if url == MEMORY:
        app = app_from_args(args)
        tune_gc()
        trio.run(run, app, config)
    else:
        check_exposure(args)
        tune_gc()
        trio.run(run_on_nats, args, config, url)
    return 0
