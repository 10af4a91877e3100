"""A broker URL's password or token never reaches stderr or a log line.

Found from outside: ``serve --broker nats://alice:s3cretPW@host`` with no NATS
there masked the URL it named but printed the broker's own error after it,
which lists the servers it tried, password and all (one process, a token in
``MESHSUB_BROKER``, and every worker of ``--workers 2`` alike). The CLI now
scrubs every URL of whatever it prints or logs, whoever wrote the text.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from urllib.parse import urlparse

import pytest
import trio

from meshsub_trio._cli_args import parse_serve_args, print_config
from meshsub_trio._logging import JsonFormatter, TextFormatter, crash, redacted

SECRETS = ("s3cretPW", "MYTOKEN123", "hunter2pw")


def free_port() -> int:
    """A port nothing listens on: the NATS server that never answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def refused(args: list[str], env: dict[str, str], out: dict[str, tuple[int, str]]) -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "meshsub_trio", "serve", "--port", "0", *args],
        capture_stdout=True, capture_stderr=True, check=False,
        env={**os.environ, "MESHSUB_DATA_DIR": ":memory:", **env},
    )  # fmt: skip
    out[" ".join(args) or str(env)] = (result.returncode, result.stderr.decode())


async def test_no_broker_error_shows_its_credentials() -> None:
    port = free_port()
    at = f"127.0.0.1:{port}"
    runs: list[tuple[list[str], dict[str, str]]] = [
        (["--broker", f"nats://alice:s3cretPW@{at}"], {}),
        ([], {"MESHSUB_BROKER": f"nats://MYTOKEN123@{at}"}),
        (["--workers", "2", "--broker", f"nats://bob:hunter2pw@{at}"], {}),
        (["--log-level", "debug", "--log-format", "json", "--broker", f"nats://a:s3cretPW@{at}"], {}),
    ]
    out: dict[str, tuple[int, str]] = {}
    with trio.fail_after(60):  # each waits out the broker's 5 s connect timeout
        async with trio.open_nursery() as nursery:
            for args, env in runs:
                nursery.start_soon(refused, args, env, out)
    assert len(out) == len(runs)
    for what, (code, stderr) in out.items():
        assert code == 1, (what, stderr)
        assert not any(secret in stderr for secret in SECRETS), (what, stderr)
        # Still says what failed, and where.
        assert f"cannot use the NATS broker at nats://***@{at}" in stderr, (what, stderr)
        assert f"no NATS server answered at ['nats://***@{at}']" in stderr, (what, stderr)
        assert "Traceback" not in stderr, (what, stderr)


def test_config_hides_the_broker_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    _, resolved = parse_serve_args(["config", "--broker", "nats://bob:hunter2pw@h:4222"])
    print_config(resolved)
    out = capsys.readouterr().out
    assert "broker = 'nats://***@h:4222'  # flag" in out and "hunter2pw" not in out


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("nats://alice:s3cretPW@h:4222", "nats://***@h:4222"),
        ("nats://MYTOKEN123@h:4222", "nats://***@h:4222"),
        ("nats://a:b@h1:1,tls://c:d@h2:2", "nats://***@h1:1,tls://***@h2:2"),
        ("nats://h1:1,nats://c:d@h2:2", "nats://h1:1,nats://***@h2:2"),
        ("no server at ['nats://u:p@h:1', 'nats://h:2']", "no server at ['nats://***@h:1', 'nats://h:2']"),
        ("nats://u:p@ss,w:rd@h:1", "nats://***@h:1"),
        # A password with an unencoded '#', '/' or '?' (a reviewer's find: it
        # was shown); so an '@' in a query hides what precedes it too.
        ("nats://alice:pa#ss0rd@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        ("nats://alice:pa/ss?w@h:1", "nats://***@h:1"),
        ("nats://h:1/path?q=x@y", "nats://***@y"),
        (repr(urlparse("nats://alice:s3cretPW@h:1")), repr(urlparse("nats://***@h:1"))),
        ("mail ops@example.com about nats://h:4222", "mail ops@example.com about nats://h:4222"),
    ],
)
def test_every_url_in_a_text_is_scrubbed(text: str, shown: str) -> None:
    assert redacted(text) == shown


def test_log_lines_and_tracebacks_are_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    """Whoever logs a URL (a broker library's error, an ``extra=`` field)."""
    try:
        raise ConnectionError("lost nats://alice:s3cretPW@h:4222")
    except ConnectionError as error:
        caught = error
    record = logging.LogRecord(
        "meshsub_trio.brokers._nats", logging.ERROR, __file__, 1,
        "NATS error: %r", (caught,), (type(caught), caught, caught.__traceback__),
    )  # fmt: skip
    record.servers = ["nats://MYTOKEN123@h:4222"]
    text, as_json = TextFormatter().format(record), JsonFormatter().format(record)
    for line in (text, as_json):
        assert not any(secret in line for secret in SECRETS), line
    assert "lost nats://***@h:4222" in text and "servers=['nats://***@h:4222']" in text
    assert json.loads(as_json)["servers"] == ["nats://***@h:4222"]
    assert crash(caught) == 1
    err = capsys.readouterr().err
    assert "ConnectionError: lost nats://***@h:4222" in err and "s3cretPW" not in err


async def test_a_broker_url_nats_py_cannot_read_is_one_line_that_shows_nothing_of_it() -> None:
    """A reviewer's find: an unencoded '#' in a password made nats-py fail with a
    traceback (and ``config`` showed the password). Now refused up front, in
    one line that does not quote the URL, one process or several."""
    port = free_port()
    bad = [
        f"nats://alice:s3cretPW#x@127.0.0.1:{port}",
        f"nats://alice:s3cretPW/x@127.0.0.1:{port}",
        f"nats://127.0.0.1:{port},nats://bob:hunter2pw?@127.0.0.1:{port}",
        "nats://127.0.0.1:port",
    ]
    runs = [(["--broker", url], {}) for url in bad]
    runs.append((["--workers", "2", "--broker", bad[0]], {}))
    out: dict[str, tuple[int, str]] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for args, env in runs:
                nursery.start_soon(refused, args, env, out)
    assert len(out) == len(runs)
    for what, (code, stderr) in out.items():
        assert code == 1 and stderr.count("\n") == 1, (what, stderr)
        assert stderr.startswith("meshsub-trio: --broker: each URL must name one server"), stderr
        assert not any(secret in stderr for secret in SECRETS), (what, stderr)
