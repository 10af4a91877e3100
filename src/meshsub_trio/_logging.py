"""Log output for ``meshsub-trio serve``: readable text, or one JSON object per line.

The server's log lines carry their facts as structured fields (``extra=``:
peer, protocol, close code, durations, operation ids...). The text format
appends them as ``key=value``; the JSON format writes them as keys beside
``time``, ``level``, ``logger`` and ``message``, for a log pipeline to index.
Hot paths check ``isEnabledFor`` before building any field, so a level that
is off costs one cached check.

Every line, whichever format, has the credentials of any URL in it hidden
(:func:`redacted`): a broker URL may carry a password or a token, and an error
from a library may quote it where no caller can scrub it first. A start-up
refusal (:func:`refuse`) and a crash (:func:`crash`) are scrubbed alike, and
written in the log format once one is set up: a collector that parses stderr as
JSON gets them as JSON too. Refusals of the options themselves come before
that, as plain lines.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = [
    "FORMATS",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "crash",
    "redacted",
    "refuse",
]

FORMATS = ("text", "json")
#: What a start-up refusal starts with as plain text (and a JSON one leaves out).
PREFIX = "meshsub-trio: "

#: The user information of a URL anywhere in a text: from ``://`` to the last
#: ``@`` before whitespace, a quote or the next URL of a comma-separated list.
#: A password may hold ``@``, ``,`` or ``:``, and a mistyped one an unencoded
#: ``/``, ``?`` or ``#`` that URL parsers would read as the path: so an ``@``
#: further on (``?q=x@y``) hides the whole of what precedes it, since hiding
#: too much of a log line is better than showing a password. ``netloc='...@``
#: is the same part in the repr of a parsed URL (``urllib.parse.ParseResult``,
#: which nats-py keeps).
_USERINFO = re.compile(
    r"(?<=://)(?:(?!,[A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"])*@|(?<=netloc=')[^'\s]*@"
)


def redacted(text: str) -> str:
    """*text* with every URL's credentials (``user:password@``, ``token@``) as ``***@``."""
    if "@" not in text:
        return text  # the common case, and every log line passes here
    return _USERINFO.sub("***@", text)

#: What every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields passed to the log call with ``extra=``, in order."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``, one line (tracebacks follow)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = record_fields(record)
        if not fields:
            return redacted(line)
        head, newline, rest = line.partition("\n")  # fields before any traceback
        pairs = " ".join(f"{key}={_text(value)}" for key, value in fields.items())
        return redacted(f"{head} {pairs}{newline}{rest}")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            entry.setdefault(key, value)  # a field never hides the four above
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return redacted(json.dumps(entry, default=str, ensure_ascii=False))


def _text(value: Any) -> str:
    """A field's value in a text line: quoted when it has spaces, so lines stay parseable."""
    text = "-" if value is None else str(value)
    if not text or any(c.isspace() or c in "\"=" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """Send every log line (the root logger's) to *stream* (stderr) at *level*, as *fmt*.

    *level* is a name (``debug``, ``info``, ``warning``, ``error``); *fmt*
    ``text`` or ``json``. Replaces the root logger's handlers, so calling it
    again reconfigures rather than doubling lines. Returns the handler.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler


def _json_handler() -> logging.Handler | None:
    """The root logger's handler writing JSON, once ``--log-format json`` set one up."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return handler
    return None


def refuse(message: str) -> int:
    """Say on stderr why the server does not start (or stopped); the exit status, 1.

    Plain ``meshsub-trio: MESSAGE``; once ``--log-format json`` is set up, one
    JSON object (level ERROR, the message without the prefix) like every other
    line, for collectors that parse stderr as JSON. Credentials in URLs hidden.
    """
    text = redacted(message.removeprefix(PREFIX))
    if _json_handler() is not None:
        logging.getLogger("meshsub_trio").error(text)
    else:
        print(PREFIX + text, file=sys.stderr, flush=True)
    return 1


def crash(error: BaseException) -> int:
    """Report an unexpected *error* with its traceback, credentials hidden; exit status 1.

    Python's own report would print the exception's text as it is, and an
    error from a broker library may quote the broker URL with its password.
    As JSON (``exception`` holds the traceback) once that format is set up.
    """
    if _json_handler() is not None:
        logging.getLogger("meshsub_trio").critical("unexpected error", exc_info=error)
    else:
        text = "".join(traceback.format_exception(error))
        print(redacted(text), end="", file=sys.stderr, flush=True)
    return 1
