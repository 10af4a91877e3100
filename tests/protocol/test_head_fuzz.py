"""Fuzzing the native host's sans-IO readers: any bytes, any split, one answer.

The head reader, the fast upgrade parser and the frame reader each see bytes
the way TCP delivers them: in pieces cut anywhere. Each must decide the same
way however the pieces fall (a head complete, too large or not a request; the
same frames, then the same error), and the head reader and the upgrade parser
must agree with h11, which serves everything they hand on.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from meshsub_trio._transports._requests import header_map
from meshsub_trio._transports._socket import MessageTooBig
from meshsub_trio._wire._frames import FrameError, FrameReader
from meshsub_trio._wire._head import Head, HeadError, HeadReader
from meshsub_trio._wire._upgrade import HEAD_END, parse_upgrade

from .test_frames import client_frame, close_payload, describe

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- what the bytes look like -----------------------------------------------------------

REQUEST_LINES = [
    b"GET /ws HTTP/1.1",
    b"GET /api?query=%7Bhello%7D HTTP/1.1",
    b"POST /api HTTP/1.1",
    b"GET /ws HTTP/1.0",
    b"GET http://evil.example/ws HTTP/1.1",
    b"GET  /ws HTTP/1.1",
    b"get /ws HTTP/1.1",
    b"GET /ws",
    b"\x16\x03\x01\x02\x00",  # TLS on the plain port
    b"",
]
FIELD_LINES = [
    b"Host: localhost",
    b"Host: evil.example:80",
    b"HOST:h",
    b"Upgrade: websocket",
    b"upgrade:  WebSocket, h2c ",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
    b"Sec-WebSocket-Protocol: graphql-transport-ws, graphql-ws",
    b"Content-Length: 0",
    b"Transfer-Encoding: chunked",
    b"Cookie: token=abc; theme=dark",
    b"X-Empty:",
    b"X-Tab:\tvalue\t",
    b"X-Obs: caf\xe9",
    b"X-Ctl: a\x01b",
    b"X-Nul: a\x00b",
    b"X-Bad : value",
    b" folded",
    b"\tfolded",
    b"NoColon",
    b": no-name",
    b"X(y): z",
    b"X-CR: a\rb",
]
ENDS = [b"\r\n\r\n", b"\n\n", b"\r\n\n", b"\n\r\n", b"\r\n", b""]


UPGRADE_FIELDS = [
    b"Host: localhost:9081",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
]
#: Bytes that make field lines interesting: delimiters, whitespace, controls, obs-text.
TRICKY = st.lists(st.sampled_from(list(b"aZ9-_:;,=/ \t\r\n\x00\x01\x7f\xe9\xff")), max_size=12)


@st.composite
def field_line(draw: st.DrawFn) -> bytes:
    """A known tricky field line, or one made of tricky bytes."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.sampled_from(FIELD_LINES))
    if kind == 1:  # a well-formed name, a value of any allowed bytes: the values must agree
        value = draw(
            st.binary(max_size=12).filter(lambda v: not re.search(rb"[\0-\x08\n-\x1f\x7f]", v))
        )
        return draw(st.sampled_from([b"X-A", b"Cookie", b"Origin", b"Upgrade"])) + b":" + value
    return b"X-" + bytes(draw(TRICKY)) + b": " + bytes(draw(TRICKY))


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Request-like bytes: a request line, field lines, some line end, maybe more after.

    Half of them start from a valid upgrade (so the fast path has something to
    take) and add or damage a little.
    """
    if draw(st.booleans()):
        lines = [draw(st.sampled_from([b"GET /ws HTTP/1.1"] * 16 + REQUEST_LINES))]
        fields = draw(st.permutations(UPGRADE_FIELDS))
        for extra in draw(st.lists(field_line(), max_size=3)):
            fields.insert(draw(st.integers(0, len(fields))), extra)
        lines += fields
        separator = draw(st.sampled_from([b"\r\n"] * 16 + [b"\n"]))
        end = draw(st.sampled_from([HEAD_END] * 16 + ENDS))
    else:
        lines = [draw(st.sampled_from(REQUEST_LINES))]
        lines += draw(st.lists(field_line(), max_size=12))
        separator = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
        end = draw(st.sampled_from(ENDS))
    pipelined = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"  # a second request
    tail = draw(st.sampled_from([b"", pipelined]) | st.binary(max_size=40))
    return separator.join(lines) + end + tail


anything = st.one_of(heads(), st.binary(max_size=300))


def cut(data: bytes, draw: st.DataObject) -> list[bytes]:
    """*data* in pieces cut at arbitrary points (empty pieces included), often right
    inside a line end, where a reader that searches piece by piece goes wrong."""
    anywhere = st.integers(0, len(data))
    line_ends = [i + d for i, byte in enumerate(data) if byte in b"\r\n" for d in (0, 1)]
    point = st.one_of(anywhere, st.sampled_from(line_ends)) if line_ends else anywhere
    points = sorted(draw.draw(st.lists(point, max_size=30), label="cuts"))
    return [data[a:b] for a, b in itertools.pairwise([0, *points, len(data)])]


# ---- the head reader --------------------------------------------------------------------

Outcome = tuple[Any, ...]


def feed(pieces: list[bytes], max_size: int, max_fields: int = 100) -> Outcome:
    """What a reader makes of *pieces*: ("head", head, everything after it), ("refused",
    status) or ("more",). Bytes after a complete head are not the reader's."""
    reader = HeadReader(max_size, max_fields)
    for index, piece in enumerate(pieces):
        try:
            result = reader.receive_data(piece)
        except HeadError as error:
            return ("refused", error.status)
        if result is not None:
            assert isinstance(result, Head)
            return ("head", result.head, result.rest + b"".join(pieces[index + 1 :]))
    return ("more",)


def specified(data: bytes, max_size: int, max_fields: int = 100) -> Outcome:
    """The same decision, written from the rule rather than the code."""
    if not data:
        return ("more",)
    if data[0] < 0x21:
        return ("refused", 400)
    blank = re.search(rb"\n\r?\n", data)
    if blank is None:
        return ("refused", 431) if len(data) >= max_size else ("more",)
    head = data[: blank.end()]
    if len(head) > max_size or head.count(b"\n") - 2 > max_fields:
        return ("refused", 431)
    return ("head", head, data[blank.end() :])


@FUZZ
@given(data=anything, max_size=st.integers(1, 400), max_fields=st.integers(0, 12), split=st.data())
@example(data=b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", max_size=27, max_fields=1, split=None)
def test_head_reader_decides_the_same_whatever_the_split(
    data: bytes, max_size: int, max_fields: int, split: st.DataObject | None
) -> None:
    """One read or many, the reader completes, refuses or waits exactly as the rule says."""
    expected = specified(data, max_size, max_fields)
    assert feed([data], max_size, max_fields) == expected
    if split is not None:
        assert feed(cut(data, split), max_size, max_fields) == expected


@FUZZ
@given(size=st.integers(1, 3000), limit=st.integers(1, 3000), split=st.data())
def test_head_size_limit_is_exact(size: int, limit: int, split: st.DataObject) -> None:
    """A head of *size* bytes (blank line included) passes iff size <= limit, any split."""
    base = b"GET /ws HTTP/1.1\r\nX: "
    assume(size >= len(base) + 4)
    head = base + b"p" * (size - len(base) - 4) + b"\r\n\r\n"
    assert len(head) == size
    outcome = feed(cut(head + b"next", split), limit)
    assert outcome == (("head", head, b"next") if size <= limit else ("refused", 431))


@FUZZ
@given(data=heads(), split=st.data())
def test_head_ends_where_h11_says(data: bytes, split: st.DataObject) -> None:
    """A complete head is a whole event for h11 (a request or an error, never "need
    more"); one byte short, h11 never sees a request in it."""
    outcome = feed(cut(data, split), 1 << 16)
    if outcome[0] != "head":
        return
    head = outcome[1]
    assert h11_event(head) != "need-data"
    assert h11_event(head[:-1]) != "request"


def h11_event(data: bytes) -> Any:
    """h11's first event for *data*: "request" (and the event), "need-data" or "error"."""
    http = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    http.receive_data(data)
    try:
        event = http.next_event()
    except h11.RemoteProtocolError:
        return "error"
    if event is h11.NEED_DATA:
        return "need-data"
    assert isinstance(event, h11.Request), event
    return "request"


# ---- the fast upgrade parser ---------------------------------------------------------------


@FUZZ
@given(data=heads())
def test_upgrade_parser_only_accepts_what_h11_accepts_the_same_way(data: bytes) -> None:
    """Whatever the fast path takes, h11 reads as the same GET: target and every field.

    The fast path may decline anything (h11 then serves it); it must never take
    a head h11 would refuse, nor read one differently.
    """
    outcome = feed([data], 1 << 16)
    if outcome[0] != "head" or not outcome[1].endswith(HEAD_END):
        return
    head = outcome[1]
    request = parse_upgrade(head[: -len(HEAD_END)])
    if request is None:
        return
    http = h11.Connection(h11.SERVER)
    http.receive_data(head)
    event = http.next_event()  # raises if h11 would refuse it: a finding
    assert isinstance(event, h11.Request)
    assert event.method == b"GET" and event.http_version == b"1.1"
    assert event.target.decode("latin-1") == request.target
    assert header_map(event.headers) == request.headers


@FUZZ
@given(data=st.binary(max_size=400))
def test_upgrade_parser_never_raises(data: bytes) -> None:
    """Arbitrary bytes are parsed or declined, never an exception."""
    request = parse_upgrade(data)
    assert request is None or request.target.startswith("/")


# ---- the frame reader ----------------------------------------------------------------------


def frames_outcome(pieces: list[bytes], limit: int) -> tuple[list[tuple[Any, ...]], Any]:
    """Events, then how reading ended: ("wait",), ("error", code) or ("too-big",)."""
    reader = FrameReader(limit)
    events: list[tuple[Any, ...]] = []
    try:
        for piece in pieces:
            reader.receive_data(piece)
            while (event := reader.next_event()) is not None:
                events.append(describe(event))
    except FrameError as error:
        return events, ("error", error.code)
    except MessageTooBig:
        return events, ("too-big",)
    return events, ("wait",)


@st.composite
def frame_bytes(draw: st.DrawFn) -> bytes:
    """Mostly valid client frames, some of them damaged, then maybe junk."""
    wire = bytearray()
    for _ in range(draw(st.integers(0, 5))):
        opcode = draw(st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB]))
        payload = (
            close_payload(draw(st.integers(0, 5000)), draw(st.binary(max_size=8)))
            if opcode == 0x8 and draw(st.booleans())
            else draw(st.binary(max_size=140))
        )
        frame = bytearray(
            client_frame(
                opcode,
                payload,
                fin=draw(st.booleans()),
                masked=draw(st.integers(0, 9)) > 0,
                key=draw(st.binary(min_size=4, max_size=4)),
            )
        )
        if frame and draw(st.integers(0, 5)) == 0:  # flip one byte anywhere
            at = draw(st.integers(0, len(frame) - 1))
            frame[at] ^= draw(st.integers(1, 255))
        wire += frame
    return bytes(wire + draw(st.binary(max_size=20)))


@FUZZ
@given(
    data=st.one_of(frame_bytes(), st.binary(max_size=300)),
    limit=st.sampled_from([0, 10, 125, 1 << 20]),
    split=st.data(),
)
def test_frame_reader_any_bytes_any_split(data: bytes, limit: int, split: st.DataObject) -> None:
    """Any bytes, cut anywhere: the same events and the same ending as in one read,
    and no exception but the two a connection answers (FrameError, MessageTooBig)."""
    whole = frames_outcome([data], limit)
    assert frames_outcome(cut(data, split), limit) == whole
    assert frames_outcome([bytes((b,)) for b in data], limit) == whole


def test_client_frame_helper_masks_by_default() -> None:
    """The helper the fuzzer builds on (guards the strategy itself)."""
    assert client_frame(0x1, b"", key=b"\0\0\0\0")[1] & 0x80


@pytest.mark.parametrize("junk", [b"\x81", b"\x81\xfe", b"\x81\xff\0\0\0\0"])
def test_partial_headers_wait(junk: bytes) -> None:
    assert frames_outcome([junk], 1 << 20) == ([], ("wait",))
