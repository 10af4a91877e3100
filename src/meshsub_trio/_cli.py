"""``meshsub-trio``'s entry point: run the command asked for, start-up failures as one line.

The command line is read in ``_cli_args``, what ``serve`` runs is built from it
in ``_cli_app``, and ``_cli_run`` serves it until a signal. Every refusal
(``SystemExit("...")`` from anywhere below) and any crash leave through
:func:`main`, which writes them with credentials hidden (``_logging.refuse``).
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from collections.abc import Sequence

import trio

from ._cli_app import (
    app_from_args,
    broker_url,
    check_exposure,
    config_from_args,
    data_dir,
    read_tokens,
    tls_problem,
)
from ._cli_args import build_parser, parse_serve_args, print_config
from ._cli_run import run, run_on_nats, tune_gc
from ._exception_groups import leaves, only_leaf
from ._logging import configure_logging, crash, refuse
from ._serve_options import MEMORY
from ._supervisor._child import SUPERVISOR, tag_log_lines, worker_role
from .client._command import run_subscribe

log = logging.getLogger("meshsub_trio")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("serve", "config"):
        args = build_parser().parse_args(argv)
        return run_subscribe(args)  # the only other command
    try:
        return _serve(argv)
    except SystemExit as stop:
        if isinstance(stop.code, str):
            return refuse(stop.code)
        raise
    except BaseExceptionGroup as group:
        message = _lone_refusal(group)
        return crash(group) if message is None else refuse(message)
    except Exception as error:
        return crash(error)


def _lone_refusal(group: BaseExceptionGroup[BaseException]) -> str | None:
    """The message of a group holding nothing but one ``SystemExit("...")``."""
    leaf = only_leaf(group)
    if isinstance(leaf, SystemExit) and isinstance(leaf.code, str):
        return leaf.code
    return None


def _serve(argv: list[str]) -> int:
    """``serve`` or ``config``; a refusal is a ``SystemExit`` with its message."""
    args, resolved = parse_serve_args(argv)
    if args.command == "config":
        print_config(resolved)
        return 0
    configure_logging(args.log_level, args.log_format)
    role = worker_role()
    if role is not None:
        tag_log_lines(role.index)
    elif args.workers > 1:
        tag_log_lines(SUPERVISOR)  # its lines beside its workers' (worker=I)
    config = config_from_args(args)
    tls_error = tls_problem(config)
    if tls_error is not None:
        return refuse(tls_error)
    if args.app is None and args.tokens:
        read_tokens(args.tokens)  # refused before a broker, a supervisor or workers start
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
        return refuse(str(error))
    except (OSError, BaseExceptionGroup) as error:
        # A busy port, a missing permission, an address not on this machine:
        # one line an operator can act on, not a traceback.
        problem = _first_os_error(error)
        if problem is None or not _is_listen_error(problem):
            raise
        reason = problem.strerror or str(problem)
        return refuse(f"cannot listen on {config.host}:{config.port}: {reason}")
    return 0


def _first_os_error(error: BaseException) -> OSError | None:
    """The OSError inside *error*, however deep in exception groups."""
    return next((leaf for leaf in leaves(error) if isinstance(leaf, OSError)), None)


def _store_error() -> type[Exception]:
    """Meshery's database start error, imported only once something failed."""
    from .meshery import StoreError

    return StoreError


def _is_listen_error(error: OSError) -> bool:
    """Errors binding the listening socket (raised before anything is served)."""
    return error.errno in {errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL} or isinstance(
        error, socket.gaierror
    )
