"""Stream tokens every worker can check without asking anyone (graphql-sse, SSE-20/21).

Under ``serve --workers N`` the ``PUT`` that reserves a stream, the ``GET``
that opens it and the ``POST``s that use it land on any worker. A token says
which worker issued it (its *home*, where the reservation is kept) and carries
an HMAC, under a secret all workers share, over that home, a random nonce and
the owner. So any worker can tell, locally and at once:

* a forged or mangled token (no broker hop, no wait: a plain 404);
* another user's token (reads exactly like an unknown one, as on one process);
* where to ask about a genuine one: its home, over the broker.

The MAC is what makes the home trustworthy: without it a client could make a
worker publish to (and wait on) any subject it likes. What the token does not
say (still reserved? opened? where?) only the home knows: a token is proof of
issue, not of life.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import secrets
from typing import Any

#: The shared secret's environment variable (set by the supervisor for its workers).
SECRET_ENV = "MESHSUB_STREAM_SECRET"
#: A secret shorter than this is refused: the MAC is only as strong as it.
MIN_SECRET_LENGTH = 16
#: Bytes of the HMAC-SHA256 kept in a token (128 bits).
MAC_BYTES = 16
_WORKER = re.compile(r"[0-9a-f]{16}")
_PART = re.compile(r"[A-Za-z0-9_-]{22,32}")
#: Salts the fingerprint of owners whose repr differs in every process.
_PROCESS = secrets.token_hex(8)
_DEFAULT_REPR: Any = object.__repr__


def new_worker_id() -> str:
    """A worker's name on the broker: random per process, so a restarted worker
    is a new one and never answers for tokens its predecessor issued."""
    return secrets.token_hex(8)


def owner_fingerprint(owner: Any) -> str:
    """The owner as every worker writes it, so that owners a worker tells apart
    (``==``, as one process does) are written apart.

    A dataclass is written field by field, every field its ``==`` compares,
    shown in its ``repr`` or not (a ``User`` whose ``id`` is ``repr=False``
    must not pass for another user of the same name). Anything else is its
    ``repr`` (a string, a tuple), which must then show all of its identity.
    An object with the default ``repr`` (its address) cannot be written the
    same elsewhere: it gets a per-process fingerprint, so its tokens work on
    the worker that issued them only (refused elsewhere, never misattributed).
    """
    if owner is None:
        return "-"
    if dataclasses.is_dataclass(owner) and not isinstance(owner, type):
        return f"d:{_fields(owner)}"
    if type(owner).__repr__ is _DEFAULT_REPR:
        return f"local:{_PROCESS}:{id(owner)}"
    return f"r:{owner!r}"


def _fields(value: Any) -> str:
    """A dataclass's type and compared fields, nested ones alike; anything else's repr."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return repr(value)
    kind = type(value)
    shown = ", ".join(
        f"{field.name}={_fields(getattr(value, field.name))}"
        for field in dataclasses.fields(value)
        if field.compare
    )
    return f"{kind.__module__}.{kind.__qualname__}({shown})"


class StreamTokens:
    """Mints and checks the tokens of one worker (*worker*) under *secret*."""

    def __init__(self, secret: bytes, worker: str) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"a stream secret needs at least {MIN_SECRET_LENGTH} bytes")
        if not _WORKER.fullmatch(worker):
            raise ValueError(f"bad worker id {worker!r}")
        self._secret = secret
        self.worker = worker

    def mint(self, owner: Any) -> str:
        """A new token issued here, for *owner*."""
        nonce = secrets.token_urlsafe(18)
        return f"{self.worker}.{nonce}.{self._mac(self.worker, nonce, owner)}"

    def home_of(self, token: str, owner: Any) -> str | None:
        """The worker that issued *token* to *owner*; None for anything else
        (malformed, forged, or issued to someone else)."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        worker, nonce, mac = parts
        if not (_WORKER.fullmatch(worker) and _PART.fullmatch(nonce) and _PART.fullmatch(mac)):
            return None
        if not hmac.compare_digest(mac, self._mac(worker, nonce, owner)):
            return None
        return worker

    def _mac(self, worker: str, nonce: str, owner: Any) -> str:
        message = f"{worker}.{nonce}\n{owner_fingerprint(owner)}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
