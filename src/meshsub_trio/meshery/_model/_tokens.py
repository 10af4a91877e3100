"""One id as one topic token: a reversible escape for user and profile ids.

Why: topic names are NATS subjects, dot-separated tokens, and the ids in
them are not ours to choose (a profile id is the client's, a user id the
token file's). An id with a dot in it spans two tokens, so two owners' names
could be the same string (user "a.b" with profile "c", user "a" with profile
"b.c"). An id with a space, ``*`` or ``>`` is refused by the NATS broker
outright. So each id is escaped into exactly one token: ``%XX`` (the UTF-8
bytes, upper-case hex) for a dot, ``%`` itself, the NATS wildcards, any
whitespace and anything unprintable; the empty id is a lone ``%``. Every
other character is kept, so the ids Meshery uses (UUIDs, plain names) keep
the names earlier versions stored their data under; data stored under the
old name of an id that changed is filed under the new one as it is read
back (:func:`._topics.resumed_topic`).

An escaped token longer than :data:`MAX_TOKEN` becomes ``%H`` and a digest
of the id instead: a NATS server refuses a command line over 4 KiB, and
nats-py answers that refusal by closing the connection for good, so one
client's 2,000-character profile id would otherwise cut a whole process off
its broker. No escape produces ``%H`` (``%`` is always followed by two hex
digits), so the two kinds of token never meet; a digest cannot be read back.
"""

from __future__ import annotations

import hashlib

#: The one token the empty id becomes (no escape produces a bare ``%``).
EMPTY = "%"
#: The longest token an escape may be; a longer one is digested instead.
MAX_TOKEN = 128
#: What a digested token starts with (``H`` is no hex digit: no escape makes it).
DIGESTED = "%H"
_ESCAPED = frozenset(".%*>")
_HEX = frozenset("0123456789ABCDEF")


def _kept(char: str) -> bool:
    return char not in _ESCAPED and char.isprintable() and not char.isspace()


def _percent(char: str) -> str:
    # surrogatepass: a lone surrogate (valid in a JSON string) still round-trips.
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def escape(value: str) -> str:
    """*value* as one topic token: no dot, wildcard or whitespace; never empty."""
    if not value:
        return EMPTY
    if all(map(_kept, value)):
        token = value
    else:
        token = "".join(char if _kept(char) else _percent(char) for char in value)
    if len(token) <= MAX_TOKEN:
        return token
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return DIGESTED + digest[:40]


def is_token(token: str) -> bool:
    """Whether some id's escape is *token* (a digest included, though it
    cannot be read back)."""
    if token.startswith(DIGESTED):
        digest = token[len(DIGESTED) :]
        return len(digest) == 40 and all(c in "0123456789abcdef" for c in digest)
    return unescape(token) is not None


def unescape(token: str) -> str | None:
    """The id *token* is the escape of, or None if it is no id's (a name an
    earlier version wrote, say: a token is read back only if ``escape`` made it)."""
    if token == EMPTY:
        return ""
    head, *escapes = token.split("%")
    raw = bytearray(head.encode("utf-8", "surrogatepass"))
    for part in escapes:
        if len(part) < 2 or not _HEX.issuperset(part[:2]):
            return None
        raw.append(int(part[:2], 16))
        raw += part[2:].encode("utf-8", "surrogatepass")
    try:
        value = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None
    return value if escape(value) == token else None
