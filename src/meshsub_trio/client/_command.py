"""``meshsub-trio subscribe``: one JSON object per payload per line, through any outage.

Payloads go to stdout exactly as the server sent them (``data``, ``errors``,
``extensions`` with the cursor); connection notices (lost, reconnecting,
restarted) go to stderr. Exit status: 0 when the server completed the
operation or ``--count`` payloads arrived; otherwise the failure's own code
(see :data:`EXIT_CODES`), 2 for a usage error, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

import trio

from .._cli_types import positive_count, seconds
from .._encoding import dumps
from .._logging import redacted
from ._client import open_client
from ._errors import (
    AuthRefused,
    ClientError,
    CursorLost,
    NetworkGone,
    OperationError,
)
from ._notices import (
    Connected,
    Connecting,
    Disconnected,
    GaveUp,
    Notice,
    TransportChanged,
    describe,
)
from ._retry import RetryPolicy

PROG = "meshsub-trio subscribe"
TOKEN_ENV = "MESHSUB_TOKEN"

#: Exit status per failure, most specific first (any other ClientError: 1).
EXIT_CODES: tuple[tuple[type[ClientError], int], ...] = (
    (AuthRefused, 3),
    (CursorLost, 6),
    (OperationError, 4),
    (NetworkGone, 5),
)

_EPILOG = """exit status: 0 completed (or --count reached), 1 other failure, 2 usage,
3 auth refused, 4 operation invalid or failed, 5 network gone past the retry
policy, 6 resume cursor lost, 130 interrupted"""


# The server's own option types: one wording for a bad number everywhere.
_positive_int = positive_count
_seconds = seconds


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_subscribe_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``subscribe`` to a parser's subcommands (``parser.add_subparsers()``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "subscribe",
        help="subscribe over WebSocket, SSE or long-poll and print one JSON object per payload",
        description=(
            "Subscribe (or run a query) and print each payload as one JSON line on stdout, "
            "exactly as the server sent it; reconnect and resume through outages, saying so "
            "on stderr."
        ),
        epilog=_EPILOG,
    )
    parser.add_argument(
        "query", help="the GraphQL document; @FILE reads it from a file, - from stdin"
    )
    parser.add_argument(
        "--url",
        dest="urls",
        action="append",
        required=True,
        metavar="URL",
        help="ws(s):// or http(s):// endpoint; repeat to fail over between servers",
    )
    parser.add_argument("--variables", type=_json_object, metavar="JSON", help="a JSON object")
    parser.add_argument("--operation-name", metavar="NAME")
    parser.add_argument(
        "--token", help=f"bearer token, sent as Authorization (default: ${TOKEN_ENV})"
    )
    parser.add_argument(
        "--transport",
        choices=["auto", "ws", "legacy", "sse", "poll"],
        default="auto",
        help=(
            "auto: WebSocket, down to SSE where the upgrade is refused, down to long-poll "
            "where a proxy holds the stream (default)"
        ),
    )
    parser.add_argument(
        "--poll-wait", type=_seconds, default=25.0, metavar="SECONDS",
        help="long-poll: how long the server may hold each poll, at most 60 (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--count", type=_positive_int, metavar="N", help="stop after N payloads (exit 0)"
    )
    parser.add_argument("--cursor", help="resume after this cursor (from a payload's extensions)")
    parser.add_argument(
        "--on-cursor-lost",
        choices=["raise", "restart"],
        default="raise",
        help="when the server cannot resume after the cursor: fail (exit 6) or start over",
    )
    parser.add_argument(
        "--ping-interval", type=_seconds, default=10.0, metavar="SECONDS",
        help="heartbeat interval (0: off; default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--pong-timeout", type=_seconds, default=5.0, metavar="SECONDS",
        help="a server silent this long after a ping is dead (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--give-up-after", type=_seconds, default=300.0, metavar="SECONDS",
        help="stop reconnecting after failing this long (0: never; default %(default)s)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no connection notices on stderr")
    parser.set_defaults(handler=run_subscribe)
    return parser


def _read_query(text: str, stdin: TextIO) -> str:
    if text == "-":
        return stdin.read()
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as file:
            return file.read()
    return text


def exit_code(error: ClientError) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return 1


async def subscribe_command(
    args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO | None = None
) -> int:
    """The command's body: print payloads until done; return the exit status."""

    def say(line: str) -> None:
        # A --url may carry credentials, and notices and errors name the URL.
        print(f"{PROG}: {redacted(line)}", file=err, flush=True)

    troubled = False  # a healthy run prints nothing on stderr

    def on_notice(notice: Notice) -> None:
        nonlocal troubled
        if args.quiet or isinstance(notice, Connecting | GaveUp):
            return  # GaveUp: the error itself is printed on the way out
        if isinstance(notice, TransportChanged):
            say(describe(notice))  # always: the user should know the wire changed
            return
        if isinstance(notice, Disconnected):
            if notice.disconnect.by_client:
                return
            troubled = True
        elif isinstance(notice, Connected) and not troubled:
            return
        say(describe(notice))

    try:
        query = _read_query(args.query, stdin or sys.stdin)
    except OSError as error:
        say(f"error: cannot read the query: {error}")
        return 2
    if args.pong_timeout <= 0:
        say("error: --pong-timeout must be above 0")
        return 2
    retry = RetryPolicy(max_elapsed=args.give_up_after or None)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    printed = 0
    try:
        async with (
            open_client(
                args.urls,
                transport=args.transport,
                token=token,
                retry=retry,
                ping_interval=args.ping_interval,
                pong_timeout=args.pong_timeout,
                on_cursor_lost=args.on_cursor_lost,
                on_notice=on_notice,
                poll_wait=args.poll_wait,
            ) as client,
            client.subscribe(
                query, args.variables, args.operation_name, cursor=args.cursor
            ) as stream,
        ):
            async for payload in stream:
                out.write(dumps(payload).decode() + "\n")
                out.flush()
                printed += 1
                if args.count is not None and printed >= args.count:
                    break
    except ClientError as error:
        say(f"error: {type(error).__name__}: {error}")
        if isinstance(error, OperationError):
            say(f"errors: {dumps(error.errors).decode()}")
        return exit_code(error)
    except ValueError as error:  # a bad URL or option the client refused
        say(f"error: {error}")
        return 2
    except ImportError as error:  # a base install: the client extra is missing
        say(f"error: {error}")
        return 1
    return 0


def run_subscribe(args: argparse.Namespace) -> int:
    """Run ``meshsub-trio subscribe`` (what ``_cli.main`` calls)."""
    try:
        return trio.run(subscribe_command, args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (``| head``): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m meshsub_trio.client._command ...`` (until the main CLI has it)."""
    parser = argparse.ArgumentParser(prog="meshsub-trio")
    commands = parser.add_subparsers(dest="command", required=True)
    add_subscribe_command(commands)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
