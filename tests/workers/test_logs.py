"""``serve --workers``: every log line says whose it is, the supervisor's included.

Found from outside: the README said each line carries ``worker=I``, but the
supervisor's own (``embedded nats-server ready``, ``SIGTERM received: draining
every worker``) carried nothing, so a grep for one process's lines could not
tell the supervisor's from a lone server's. They now carry ``worker=supervisor``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ._kit import open_supervisor

#: The start of a text log line (tracebacks' lines do not have it).
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


async def run_and_stop(tmp_path: Path, *args: str) -> str:
    """The whole stderr of a supervisor started, serving, then SIGTERMed."""
    async with open_supervisor(tmp_path, *args) as supervisor:
        pass
    assert supervisor.process.returncode == 0, supervisor.stderr()
    return supervisor.log.read_text(errors="replace")


async def test_every_text_line_says_whose_it_is(tmp_path: Path) -> None:
    log = await run_and_stop(tmp_path)
    lines = [line for line in log.splitlines() if _STAMP.match(line)]
    assert lines and all(re.search(r" worker=(\d+|supervisor)\b", line) for line in lines), log
    for said in (
        "embedded nats-server ready",
        "2 workers serving",
        "SIGTERM received: draining every worker",
    ):
        [line] = [line for line in lines if said in line]
        assert line.endswith(" worker=supervisor") or " worker=supervisor " in line, line
    for index in (0, 1):
        assert any(
            "SIGTERM received: shutting down" in line and line.endswith(f" worker={index}")
            for line in lines
        ), log


async def test_every_json_line_says_whose_it_is(tmp_path: Path) -> None:
    log = await run_and_stop(tmp_path, "--log-format", "json")
    entries = [json.loads(line) for line in log.splitlines()]
    # One type for the field (a log index would refuse a string after integers).
    assert {entry["worker"] for entry in entries} == {"supervisor", "0", "1"}, log
    by_message = {entry["message"]: entry["worker"] for entry in entries}
    assert by_message["embedded nats-server ready"] == "supervisor"
    assert by_message["SIGTERM received: draining every worker"] == "supervisor"
