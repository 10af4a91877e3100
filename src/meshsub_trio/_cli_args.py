"""The command line: its parser, ``serve``/``config`` arguments resolved, ``config``'s output."""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Sequence

from ._cli_types import Parser
from ._config import Config
from ._logging import redacted
from ._serve_options import add_serve_options
from ._settings import (
    CONFIG_ENV,
    Resolved,
    SettingError,
    collect_options,
    parse_flags,
    resolve,
)
from .client._command import add_subscribe_command

#: What ``meshsub-trio --help`` says the command does.
DESCRIPTION = """``meshsub-trio serve``: run an app on the native host until SIGINT/SIGTERM.

With ``--broker nats://host:port`` (or ``MESHSUB_BROKER``) several processes
behind a load balancer serve as one: each connects to the same NATS
(JetStream enabled), replicates Meshery's model over it, and the broker stays
open for as long as the process serves. Give them all the same
``MESHSUB_STREAM_SECRET`` (16+ characters, environment only) and graphql-sse
single connection mode needs no session affinity either.

What is Meshery's comes from :mod:`meshsub_trio.meshery`: its port
(``DEFAULT_PORT``) when it is the app served (no APP given, or one of that
package's named; any other APP gets ``Config.port``), and the JetStream
stream of ``--broker`` (``log_stream()``), which every APP gets, as before:
the broker exists before the app, so the app cannot be asked, and an APP
wrapping Meshery keeps its data. Endpoint paths come with the App itself.
"""

#: Settings whose values ``config`` does not print.
_SECRETS = frozenset({"metrics-token"})


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="meshsub-trio", description=DESCRIPTION)
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
    """Meshery's port when serving Meshery (no APP, or one of
    :mod:`meshsub_trio.meshery`'s by name), else :attr:`Config.port`.

    Decided from the name, before the app is built: the port is part of the
    configuration printed and validated before anything is imported.
    """
    if args.app is not None and not _is_meshery(args.app):
        return Config.port
    from .meshery import DEFAULT_PORT

    return DEFAULT_PORT


def _is_meshery(spec: str) -> bool:
    module = spec.partition(":")[0]
    return module == "meshsub_trio.meshery" or module.startswith("meshsub_trio.meshery.")


def print_config(resolved: Resolved) -> None:
    """One line per setting: ``name = value  # source`` (secrets shown as ***, and
    so are the credentials of a URL: ``--broker nats://user:password@host``)."""
    for name, value, source in resolved:
        shown = "***" if name in _SECRETS and value else value
        if isinstance(shown, str):
            shown = redacted(shown)
        print(f"{name} = {shown!r}  # {source}")
