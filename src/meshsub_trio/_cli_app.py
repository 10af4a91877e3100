"""What ``serve`` runs, built from its arguments: the Config, the App and the broker URL."""

from __future__ import annotations

import argparse
import importlib
import ipaddress
from typing import Any
from urllib.parse import urlsplit

from ._app import App
from ._config import Config
from ._serve_options import DEFAULT_APP, MEMORY, redacted


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


def broker_url(args: argparse.Namespace) -> str:
    """``--broker``, else ``$MESHSUB_BROKER``, else ``memory``."""
    url = (args.broker or MEMORY).strip()
    if url != MEMORY and not all(
        part.strip().startswith(("nats://", "tls://")) for part in url.split(",")
    ):
        raise SystemExit(
            f"--broker must be {MEMORY!r} or nats://HOST:PORT[,...], got {redacted(url)!r}"
        )
    if url != MEMORY and not all(_plain_nats_url(part.strip()) for part in url.split(",")):
        # Not echoed: what did not parse may be a password.
        raise SystemExit(
            "--broker: each URL must name one server, HOST[:PORT] after nats:// or tls:// "
            "(USER:PASSWORD and an @ before it if needed), with any '/', '?', '#' or '@' "
            "in the user or password percent-encoded (%2F, %3F, %23, %40)"
        )
    return url


def _plain_nats_url(url: str) -> bool:
    """Whether nats-py will read *url* as one server and nothing else (a password
    with an unencoded '#' or '/' splits it, and nats-py then fails with a traceback)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        return False
    return bool(parts.hostname) and parts.path in ("", "/") and not parts.query + parts.fragment


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
        options["tokens"] = read_tokens(args.tokens)
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


def read_tokens(path: str) -> dict[str, str]:
    """``--tokens FILE``, checked as the app will check it: a bad file is one line
    naming it (the app's own ``ValueError`` would be a traceback)."""
    import json

    from .meshery._auth import load_tokens

    try:
        with open(path, encoding="utf-8") as file:
            tokens = json.load(file)
    except OSError as error:
        raise SystemExit(f"--tokens {path}: {error.strerror or error}") from None
    except ValueError as error:  # not JSON, or not UTF-8
        raise SystemExit(f"--tokens {path} is not valid JSON: {error}") from None
    if not isinstance(tokens, dict) or not all(isinstance(v, str) for v in tokens.values()):
        raise SystemExit(f"--tokens {path} must hold a JSON object of token -> user id")
    try:
        load_tokens(tokens)
    except ValueError as error:  # never quotes a token: the file is full of secrets
        raise SystemExit(f"--tokens {path}: {error}") from None
    return tokens
