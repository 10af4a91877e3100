"""What ``serve --workers N`` runs, decided from the resolved options before anything starts."""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from .._config import Config
from .._serve_options import BROKER_ENV, DEFAULT_WORKER_TIMEOUT, MEMORY
from .._transports._sse_tokens import MIN_SECRET_LENGTH, SECRET_ENV


@dataclass(frozen=True)
class Plan:
    """What the supervisor runs, decided from the resolved options before anything starts."""

    workers: int
    argv: tuple[str, ...]
    host: str
    port: int
    backlog: int
    drain_timeout: float
    #: None: start an embedded nats-server; else the user's ``--broker`` URL.
    broker: str | None
    simulator: bool
    data_dir: str
    tls: bool = False
    #: ``--worker-timeout``: a worker whose loop sends no heartbeat this long is
    #: killed and restarted (0: never).
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT


def worker_command(plan: Plan, index: int) -> list[str]:
    """The user's own ``serve`` options, plus this worker's share of the job.

    The broker is not among them: the embedded one's URL carries its token,
    and a command line is visible to every local user, so every worker gets
    its broker from :func:`worker_environment`. The user's own ``--broker``
    is left out too, since a flag wins over the environment (an empty one
    would put each worker on a memory broker of its own).
    """
    extra = ["--workers", "1"]
    extra.append("--simulator" if plan.simulator and index == 0 else "--no-simulator")
    argv = list(plan.argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    return [sys.executable, "-m", "meshsub_trio", *_without_broker(argv[:cut]), *extra, *argv[cut:]]


def _without_broker(options: list[str]) -> list[str]:
    """*options* less ``--broker URL`` and ``--broker=URL``."""
    kept: list[str] = []
    skip = False
    for option in options:
        if skip:
            skip = False
        elif option == "--broker":
            skip = True
        elif not option.startswith("--broker="):
            kept.append(option)
    return kept


def worker_environment(broker: str, stream_secret: str | None = None) -> dict[str, str]:
    """What a worker gets on top of the supervisor's environment: its broker and
    the secret its graphql-sse stream tokens are signed with (both kept off
    the command line, which every local user can read)."""
    environment = {BROKER_ENV: broker}
    if stream_secret is not None:
        environment[SECRET_ENV] = stream_secret
    return environment


def stream_secret(environ: Mapping[str, str]) -> str:
    """The workers' shared token secret: the user's (so that several supervisors
    behind one balancer accept each other's tokens), else a new one per run."""
    given = environ.get(SECRET_ENV)
    if given is None:
        return secrets.token_urlsafe(32)
    if len(given) < MIN_SECRET_LENGTH:
        raise SystemExit(
            f"meshsub-trio: {SECRET_ENV} must be at least {MIN_SECRET_LENGTH} characters"
        )
    return given


def plan_for(argv: list[str], args: argparse.Namespace, config: Config, data_dir: str) -> Plan:
    """The plan for *args* (resolved from every source), or a one-line refusal."""
    broker = (args.broker or "").strip() or None
    if broker == MEMORY:
        raise SystemExit(
            f"meshsub-trio: --workers {args.workers} shares state through NATS, not "
            f"--broker {MEMORY}: leave --broker out (an embedded nats-server starts) "
            "or give nats://HOST:PORT"
        )
    simulator = args.simulator if args.simulator is not None else broker is None
    return Plan(
        workers=args.workers,
        argv=tuple(argv),
        host=config.host,
        port=config.port,
        backlog=config.backlog,
        drain_timeout=config.close_timeout + 0.5,
        broker=broker,
        simulator=bool(simulator),
        data_dir=data_dir,
        tls=config.certfile is not None,
        worker_timeout=args.worker_timeout,
    )
