"""The sans-IO frame reader and server frame builders (RFC 6455 §5), without sockets."""

from __future__ import annotations

import itertools
import os
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsub_trio._transports._socket import Message, MessageTooBig
from meshsub_trio._wire._frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Close,
    FrameError,
    FrameReader,
    Ping,
    Pong,
    close_frame,
    frame,
)

LIMIT = 1 << 20
#: RFC 6455 §5.7's example masking key.
RFC_KEY = bytes((0x37, 0xFA, 0x21, 0x3D))
VALID_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


# ---- helpers ------------------------------------------------------------
def mask(payload: bytes, key: bytes) -> bytes:
    """XOR *payload* with the 4-byte *key*, byte by byte (RFC 6455 §5.3)."""
    return bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))


def random_key() -> bytes:
    """A real random masking key, never all zeros (which would mask nothing)."""
    while True:
        key = os.urandom(4)
        if any(key):
            return key


def header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    key: bytes | None = None,
    encoding: int | None = None,
) -> bytes:
    """A client frame header; *encoding* forces the 7-bit, 126 or 127 length form."""
    if encoding is None:
        encoding = length if length < 126 else 126 if length < 65536 else 127
    first = (0x80 if fin else 0) | rsv | opcode
    second = (0x80 if masked else 0) | encoding
    extended = b""
    if encoding == 126:
        extended = length.to_bytes(2, "big")
    elif encoding == 127:
        extended = length.to_bytes(8, "big")
    masking = (key if key is not None else random_key()) if masked else b""
    return bytes((first, second)) + extended + masking


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    key: bytes | None = None,
) -> bytes:
    """One whole client frame, masked with *key* (random unless given)."""
    key = key if key is not None else random_key()
    head = header(opcode, len(payload), fin=fin, rsv=rsv, masked=masked, key=key)
    return head + (mask(payload, key) if masked else payload)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


def as_client(server_frame: bytes, key: bytes | None = None) -> bytes:
    """Re-encode an unmasked server frame as the masked frame a client would send."""
    length = server_frame[1] & 0x7F
    start = 2 + {126: 2, 127: 8}.get(length, 0)
    key = key if key is not None else random_key()
    return (
        bytes((server_frame[0], server_frame[1] | 0x80))
        + server_frame[2:start]
        + key
        + mask(server_frame[start:], key)
    )


def describe(event: Any) -> tuple[Any, ...]:
    """An event as a comparable tuple (only Message has value equality)."""
    if isinstance(event, Message):
        return ("message", event.data, event.binary)
    if isinstance(event, Ping):
        return ("ping", event.payload)
    if isinstance(event, Pong):
        return ("pong", event.payload)
    assert isinstance(event, Close), event
    return ("close", event.code, event.reason)


def drain(reader: FrameReader, into: list[tuple[Any, ...]] | None = None) -> list[tuple[Any, ...]]:
    """Every event the reader can produce now, described (appended to *into* as they come)."""
    events = [] if into is None else into
    while (event := reader.next_event()) is not None:
        events.append(describe(event))
    return events


def read(data: bytes, limit: int = LIMIT) -> list[tuple[Any, ...]]:
    """The events *data* yields when it arrives in one piece."""
    reader = FrameReader(limit)
    reader.receive_data(data)
    return drain(reader)


def read_error(data: bytes, limit: int = LIMIT) -> FrameError:
    """The FrameError *data* raises (arriving in one piece)."""
    reader = FrameReader(limit)
    reader.receive_data(data)
    with pytest.raises(FrameError) as caught:
        drain(reader)
    return caught.value


# ---- data messages --------------------------------------------------------
def test_rfc_example_masked_hello() -> None:
    """RFC 6455 §5.7's masked "Hello" is a text message; its masked pong, a pong."""
    hello = bytes((0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58))
    pong = bytes((0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58))
    assert read(hello) == [("message", "Hello", False)]
    assert read(pong) == [("pong", b"Hello")]
    assert client_frame(TEXT, b"Hello", key=RFC_KEY) == hello


def test_masked_text_message_is_unmasked_and_decoded() -> None:
    """A masked text frame yields its payload decoded as UTF-8, not the masked bytes."""
    text = "héllo, wörld ✓ 😀"
    wire = client_frame(TEXT, text.encode(), key=random_key())
    assert text.encode() not in wire
    assert read(wire) == [("message", text, False)]
    reader = FrameReader(LIMIT)
    reader.receive_data(wire)
    event = reader.next_event()
    assert isinstance(event, Message)
    assert isinstance(event.data, str)


def test_masked_binary_message_is_bytes() -> None:
    """A masked binary frame yields its exact bytes, flagged binary."""
    payload = bytes(range(256)) * 3
    event = FrameReader(LIMIT)
    event.receive_data(client_frame(BINARY, payload))
    message = event.next_event()
    assert message == Message(payload, binary=True)
    assert isinstance(message, Message)
    assert isinstance(message.data, bytes)


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_empty_data_messages(opcode: int) -> None:
    """Empty text and binary frames are empty messages of the right kind."""
    expected = ("message", "", False) if opcode == TEXT else ("message", b"", True)
    assert read(client_frame(opcode, b"")) == [expected]


def test_empty_and_full_control_frames() -> None:
    """Pings and pongs carry their payload back out, from empty up to 125 bytes."""
    full = bytes(range(125))
    wire = client_frame(PING) + client_frame(PONG) + client_frame(PING, full)
    wire += client_frame(PONG, full)
    assert read(wire) == [("ping", b""), ("pong", b""), ("ping", full), ("pong", full)]


@pytest.mark.parametrize(
    ("size", "encoding"),
    [(0, 0), (1, 1), (125, 125), (126, 126), (1000, 126), (65535, 126), (65536, 127), (70001, 127)],
)
@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_length_encodings(size: int, encoding: int, opcode: int) -> None:
    """7-bit, 16-bit (126) and 64-bit (127) lengths all read back exactly, at their edges."""
    rng = random.Random(size)
    if opcode == TEXT:
        data: str | bytes = "".join(rng.choice("abcxyz0189 {}") for _ in range(size))
        payload = data.encode()
    else:
        data = payload = rng.randbytes(size)
    wire = client_frame(opcode, payload)
    assert wire[1] & 0x7F == encoding
    assert read(wire) == [("message", data, opcode == BINARY)]


def test_rfc_example_length_headers() -> None:
    """RFC 6455 §5.7's 256-byte and 64 KiB binary headers (masked here) read back."""
    small = bytes(range(256))
    big = bytes(65536)
    key = random_key()
    small_wire = bytes((0x82, 0xFE, 0x01, 0x00)) + key + mask(small, key)
    big_wire = bytes((0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0)) + key + mask(big, key)
    assert read(small_wire) == [("message", small, True)]
    assert read(big_wire) == [("message", big, True)]


def test_non_minimal_length_encoding_is_read() -> None:
    """A short payload sent with a 16- or 64-bit length is still read by its value."""
    key = random_key()
    for encoding in (126, 127):
        wire = header(TEXT, 3, key=key, encoding=encoding) + mask(b"abc", key)
        assert read(wire) == [("message", "abc", False)]


def test_several_frames_in_one_chunk() -> None:
    """One chunk holding several frames yields each, in order."""
    wire = (
        client_frame(TEXT, b"one")
        + client_frame(PING, b"p")
        + client_frame(BINARY, b"\x00two")
        + client_frame(TEXT, b"three")
    )
    assert read(wire) == [
        ("message", "one", False),
        ("ping", b"p"),
        ("message", b"\x00two", True),
        ("message", "three", False),
    ]


def test_partial_frames_wait_for_more_bytes() -> None:
    """None until the whole frame is in; then the event, then None again."""
    wire = client_frame(TEXT, b"x" * 300)
    reader = FrameReader(LIMIT)
    assert reader.next_event() is None
    reader.receive_data(b"")
    assert reader.next_event() is None
    reader.receive_data(wire[:1])
    assert reader.next_event() is None
    reader.receive_data(wire[1:4])
    assert reader.next_event() is None
    reader.receive_data(wire[4:8])  # the whole header: the payload is still missing
    assert reader.next_event() is None
    reader.receive_data(wire[8:-1])
    assert reader.next_event() is None
    reader.receive_data(wire[-1:])
    assert describe(reader.next_event()) == ("message", "x" * 300, False)
    assert reader.next_event() is None


def test_byte_at_a_time() -> None:
    """Every frame kind and length form survives arriving one byte per read."""
    wire = (
        client_frame(TEXT, "ünïcode".encode(), fin=False)
        + client_frame(PING, b"ping")
        + client_frame(CONTINUATION, b"!")
        + client_frame(BINARY, bytes(300))
        + client_frame(BINARY, bytes(range(256)) * 257)
        + client_frame(CLOSE, close_payload(1000, b"bye"))
    )
    reader = FrameReader(LIMIT)
    events = []
    for i in range(len(wire)):
        reader.receive_data(wire[i : i + 1])
        events += drain(reader)
    assert events == [
        ("ping", b"ping"),
        ("message", "ünïcode!", False),
        ("message", bytes(300), True),
        ("message", bytes(range(256)) * 257, True),
        ("close", 1000, "bye"),
    ]


# ---- fragmentation --------------------------------------------------------
def test_fragmented_text_with_control_frames_interleaved() -> None:
    """Control frames between fragments come out at once; the message once it is whole."""
    wire = (
        client_frame(TEXT, b"Hel", fin=False)
        + client_frame(PING, b"1")
        + client_frame(CONTINUATION, b"", fin=False)
        + client_frame(PONG, b"2")
        + client_frame(CONTINUATION, b"lo", fin=False)
        + client_frame(PING, b"")
        + client_frame(CONTINUATION, b" there")
    )
    assert read(wire) == [
        ("ping", b"1"),
        ("pong", b"2"),
        ("ping", b""),
        ("message", "Hello there", False),
    ]


def test_fragmented_binary_message() -> None:
    """Binary fragments join into one binary message, lengths of every form included."""
    parts = [b"\x00", bytes(200), bytes(range(256)) * 300, b"", b"\xff"]
    wire = client_frame(BINARY, parts[0], fin=False)
    for i, part in enumerate(parts[1:], 1):
        wire += client_frame(CONTINUATION, part, fin=i == len(parts) - 1)
    assert read(wire) == [("message", b"".join(parts), True)]


def test_utf8_character_split_across_fragments_is_fine() -> None:
    """UTF-8 is checked on the whole message: a character split by fragments is valid."""
    encoded = "€😀".encode()  # 3 + 4 bytes
    wire = client_frame(TEXT, encoded[:1], fin=False)
    wire += client_frame(CONTINUATION, encoded[1:5], fin=False)
    wire += client_frame(CONTINUATION, encoded[5:])
    assert read(wire) == [("message", "€😀", False)]


def test_fragmented_message_of_empty_fragments() -> None:
    """A message made only of empty fragments is an empty message."""
    wire = client_frame(TEXT, fin=False) + client_frame(CONTINUATION, fin=False)
    wire += client_frame(CONTINUATION)
    assert read(wire) == [("message", "", False)]


def test_state_resets_after_a_fragmented_message() -> None:
    """After a fragmented message ends, new messages (fragmented or not) start cleanly."""
    wire = (
        client_frame(BINARY, b"a", fin=False)
        + client_frame(CONTINUATION, b"b")
        + client_frame(TEXT, b"c")
        + client_frame(TEXT, b"d", fin=False)
        + client_frame(CONTINUATION, b"e")
    )
    assert read(wire) == [
        ("message", b"ab", True),
        ("message", "c", False),
        ("message", "de", False),
    ]


def test_continuation_without_a_message_is_1002() -> None:
    """A continuation frame with no fragmented message in progress is a protocol error."""
    assert read_error(client_frame(CONTINUATION, b"x")).code == 1002
    assert read_error(client_frame(CONTINUATION, b"x", fin=False)).code == 1002
    finished = client_frame(TEXT, b"a", fin=False) + client_frame(CONTINUATION, b"b")
    reader = FrameReader(LIMIT)
    reader.receive_data(finished + client_frame(CONTINUATION, b"c"))
    assert describe(reader.next_event()) == ("message", "ab", False)
    with pytest.raises(FrameError) as caught:
        reader.next_event()
    assert caught.value.code == 1002


@pytest.mark.parametrize("first", [TEXT, BINARY])
@pytest.mark.parametrize("second", [TEXT, BINARY])
@pytest.mark.parametrize("second_fin", [True, False])
def test_new_data_frame_during_fragmented_message_is_1002(
    first: int, second: int, second_fin: bool
) -> None:
    """A text or binary frame before the fragmented message finished is a protocol error."""
    wire = client_frame(first, b"a", fin=False) + client_frame(second, b"b", fin=second_fin)
    error = read_error(wire)
    assert error.code == 1002
    assert error.reason


# ---- framing errors -------------------------------------------------------
@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
@pytest.mark.parametrize("opcode", [TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE])
def test_reserved_bits_are_1002(rsv: int, opcode: int) -> None:
    """Any RSV bit is an error: no extension is ever negotiated."""
    assert read_error(client_frame(opcode, b"", rsv=rsv)).code == 1002


def test_unmasked_frames_are_1002() -> None:
    """Client frames must be masked (RFC 6455 §5.1), data and control alike."""
    unmasked_hello = bytes((0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F))  # RFC 6455 §5.7
    assert read_error(unmasked_hello).code == 1002
    for opcode in (BINARY, PING, PONG, CLOSE):
        assert read_error(client_frame(opcode, b"", masked=False)).code == 1002


def test_unmasked_frame_after_a_good_one() -> None:
    """A good frame still comes out before the unmasked frame after it fails."""
    reader = FrameReader(LIMIT)
    reader.receive_data(client_frame(TEXT, b"ok") + client_frame(TEXT, b"no", masked=False))
    assert describe(reader.next_event()) == ("message", "ok", False)
    with pytest.raises(FrameError) as caught:
        reader.next_event()
    assert caught.value.code == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcodes_are_1002(opcode: int) -> None:
    """Reserved data (3-7) and control (0xB-0xF) opcodes are errors, from the header alone."""
    assert read_error(client_frame(opcode, b"payload")).code == 1002
    assert read_error(header(opcode, 5)).code == 1002  # the payload never arrives


@pytest.mark.parametrize("opcode", [3, 7, 0xB, 0xF])
def test_unknown_opcode_during_fragmented_message_is_1002(opcode: int) -> None:
    """An unknown opcode between fragments is still an error."""
    wire = client_frame(TEXT, b"a", fin=False) + client_frame(opcode, b"b")
    assert read_error(wire).code == 1002


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_fragmented_control_frame_is_1002(opcode: int) -> None:
    """Control frames may not be fragmented (FIN clear)."""
    assert read_error(client_frame(opcode, b"", fin=False)).code == 1002
    assert read_error(header(opcode, 2, fin=False)).code == 1002


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_control_frame_over_125_bytes_is_1002(opcode: int) -> None:
    """A control payload over 125 bytes is refused from its header; 125 is fine."""
    payload = close_payload(1000, b"r" * 124) if opcode == CLOSE else bytes(126)
    assert len(payload) == 126
    assert read_error(client_frame(opcode, payload)).code == 1002
    assert read_error(header(opcode, 126)).code == 1002  # header alone
    assert read_error(header(opcode, 65536)).code == 1002
    assert read(client_frame(opcode, payload[:125]))  # exactly 125: accepted


def test_control_frame_with_long_length_form_but_short_payload() -> None:
    """A control frame whose small length uses the 126 form is judged by its value."""
    key = random_key()
    wire = header(PING, 3, key=key, encoding=126) + mask(b"abc", key)
    assert read(wire) == [("ping", b"abc")]


def test_64_bit_length_with_most_significant_bit_is_1002() -> None:
    """A 64-bit length with its top bit set is an error, from the header alone."""
    key = random_key()
    bad = bytes((0x82, 0xFF)) + (1 << 63).to_bytes(8, "big") + key
    assert read_error(bad, limit=1 << 64).code == 1002
    worst = bytes((0x82, 0xFF)) + b"\xff" * 8 + key
    assert read_error(worst, limit=1 << 64).code == 1002


def test_error_carries_code_and_reason() -> None:
    """FrameError exposes the close code and a human-readable reason."""
    error = read_error(client_frame(TEXT, b"", masked=False))
    assert error.code == 1002
    assert isinstance(error.reason, str)
    assert error.reason
    assert error.args == (1002, error.reason)


# ---- close frames ---------------------------------------------------------
def test_empty_close_is_1005() -> None:
    """A close frame without a payload reports code 1005 (no status received)."""
    assert read(client_frame(CLOSE)) == [("close", 1005, "")]


def test_one_byte_close_is_1002() -> None:
    """A one-byte close payload cannot hold a code: protocol error."""
    assert read_error(client_frame(CLOSE, b"\x03")).code == 1002


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_codes_are_1002(code: int) -> None:
    """Codes that may not be sent (reserved, unassigned, out of range) are refused."""
    assert read_error(client_frame(CLOSE, close_payload(code))).code == 1002
    assert read_error(client_frame(CLOSE, close_payload(code, b"why"))).code == 1002


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_codes(code: int) -> None:
    """Assigned sendable codes and the 3000-4999 range come through, with the reason."""
    assert read(client_frame(CLOSE, close_payload(code))) == [("close", code, "")]
    reason = "bye ✓"
    wire = client_frame(CLOSE, close_payload(code, reason.encode()))
    assert read(wire) == [("close", code, reason)]


@pytest.mark.parametrize("reason", [b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"a\x80b"])
def test_close_reason_not_utf8_is_1007(reason: bytes) -> None:
    """A close reason that is not valid UTF-8 is 1007."""
    assert read_error(client_frame(CLOSE, close_payload(1000, reason))).code == 1007


def test_bytes_after_close_are_ignored() -> None:
    """After a Close, nothing more comes out, even frames that would be errors."""
    garbage = (
        client_frame(TEXT, b"late")
        + client_frame(TEXT, b"x", masked=False)
        + client_frame(TEXT, b"", rsv=0x40)
        + client_frame(CONTINUATION, b"x")
        + client_frame(CLOSE, b"\x01")
    )
    reader = FrameReader(LIMIT)
    reader.receive_data(client_frame(CLOSE, close_payload(1001)) + garbage)
    assert describe(reader.next_event()) == ("close", 1001, "")
    assert reader.next_event() is None
    reader.receive_data(garbage + b"\xff" * 50)
    assert reader.next_event() is None
    assert reader.next_event() is None


def test_close_during_fragmented_message() -> None:
    """A close between fragments is reported; the unfinished message never is."""
    wire = client_frame(TEXT, b"half", fin=False) + client_frame(CLOSE, close_payload(1000))
    wire += client_frame(CONTINUATION, b"rest")
    assert read(wire) == [("close", 1000, "")]


# ---- UTF-8 ----------------------------------------------------------------
@pytest.mark.parametrize(
    "payload",
    [
        b"\xff",
        b"\x80",
        b"abc\xc3",  # truncated two-byte character at the end
        b"\xe2\x82",  # truncated three-byte character
        b"\xed\xa0\x80",  # an encoded surrogate
        b"\xc0\xaf",  # an overlong encoding
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        b"ok\xe2\x28\xa1ok",
    ],
)
def test_invalid_utf8_text_is_1007(payload: bytes) -> None:
    """A text message that is not valid UTF-8 is 1007; the same bytes as binary are fine."""
    assert read_error(client_frame(TEXT, payload)).code == 1007
    assert read(client_frame(BINARY, payload)) == [("message", payload, True)]


def test_invalid_utf8_across_fragments_is_1007() -> None:
    """UTF-8 broken across fragments, or a message ending mid-character, is 1007."""
    broken = client_frame(TEXT, b"\xe2\x82", fin=False) + client_frame(CONTINUATION, b"(")
    assert read_error(broken).code == 1007
    unfinished = client_frame(TEXT, "€".encode()[:1], fin=False)
    unfinished += client_frame(CONTINUATION, "€".encode()[1:2])
    assert read_error(unfinished).code == 1007
    binary = client_frame(BINARY, b"\xe2\x82", fin=False) + client_frame(CONTINUATION, b"(")
    assert read(binary) == [("message", b"\xe2\x82(", True)]


# ---- the size limit -------------------------------------------------------
@pytest.mark.parametrize("opcode", [TEXT, BINARY])
@pytest.mark.parametrize(
    ("limit", "length"),
    [(10, 11), (10, 125), (200, 201), (200, 65535), (70000, 70001), (1000, 1 << 40), (0, 1)],
)
def test_message_too_big_from_header_alone(opcode: int, limit: int, length: int) -> None:
    """An oversized frame is refused when only its header has arrived, in every length form."""
    reader = FrameReader(limit)
    reader.receive_data(header(opcode, length))
    with pytest.raises(MessageTooBig):
        reader.next_event()


@pytest.mark.parametrize("length", [11, 1000, 70000])
def test_message_too_big_byte_by_byte_header(length: int) -> None:
    """Fed one byte at a time, an oversized frame fails by its last header byte at the latest."""
    head = header(BINARY, length)
    reader = FrameReader(10)
    for i in range(len(head)):
        reader.receive_data(head[i : i + 1])
        try:
            assert reader.next_event() is None
        except MessageTooBig:
            break
    else:
        pytest.fail("the complete header was not refused")
    with pytest.raises(MessageTooBig):  # and it keeps failing, payload or not
        reader.next_event()


def test_message_too_big_across_fragments() -> None:
    """All fragments count: the one that pushes the total over is refused by its header."""
    reader = FrameReader(10)
    reader.receive_data(client_frame(TEXT, b"123456", fin=False))
    assert reader.next_event() is None
    reader.receive_data(client_frame(PING, bytes(100)))  # control frames do not count
    assert describe(reader.next_event()) == ("ping", bytes(100))
    reader.receive_data(client_frame(CONTINUATION, b"78", fin=False))
    assert reader.next_event() is None
    reader.receive_data(header(CONTINUATION, 3, fin=True))  # 6 + 2 + 3 = 11 > 10
    with pytest.raises(MessageTooBig):
        reader.next_event()


def test_message_too_big_across_fragments_in_one_chunk() -> None:
    """The same limit holds when every fragment arrives in one read."""
    wire = client_frame(BINARY, bytes(5), fin=False) + client_frame(CONTINUATION, bytes(6))
    with pytest.raises(MessageTooBig):
        read(wire, limit=10)


def test_message_exactly_at_limit_is_accepted() -> None:
    """A message of exactly the limit, whole or fragmented, is accepted; the next ones too."""
    assert read(client_frame(TEXT, b"x" * 10), limit=10) == [("message", "x" * 10, False)]
    assert read(client_frame(BINARY, bytes(300)), limit=300) == [("message", bytes(300), True)]
    fragmented = (
        client_frame(BINARY, bytes(4), fin=False)
        + client_frame(PING, bytes(50))
        + client_frame(CONTINUATION, bytes(6))
        + client_frame(TEXT, b"0123456789")  # the limit is per message, not cumulative
        + client_frame(TEXT, b"01234", fin=False)
        + client_frame(CONTINUATION, b"56789")
    )
    assert read(fragmented, limit=10) == [
        ("ping", bytes(50)),
        ("message", bytes(10), True),
        ("message", "0123456789", False),
        ("message", "0123456789", False),
    ]


def test_zero_limit_allows_empty_messages_only() -> None:
    """With a zero limit, empty messages and control frames still pass."""
    wire = (
        client_frame(TEXT) + client_frame(PING, b"abc") + client_frame(CLOSE, close_payload(1000))
    )
    assert read(wire, limit=0) == [("message", "", False), ("ping", b"abc"), ("close", 1000, "")]


# ---- arbitrary splits (property) ------------------------------------------
keys = st.binary(min_size=4, max_size=4)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[bytes, list[tuple[Any, ...]]]:
    """Valid client frames (any length form, fragmented or not) and the events they mean."""
    wire = bytearray()
    expected: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "binary", "big", "ping", "pong"]))
        if kind in ("ping", "pong"):
            payload = draw(st.binary(max_size=125))
            wire += client_frame(PING if kind == "ping" else PONG, payload, key=draw(keys))
            expected.append((kind, payload))
            continue
        if kind == "text":
            data: str | bytes = draw(st.text(max_size=200))
            payload = data.encode()
        elif kind == "binary":
            data = payload = draw(st.binary(max_size=300))
        else:  # past 65535 bytes: the 64-bit length form
            size = draw(st.integers(65536, 66000))
            data = payload = random.Random(draw(st.integers(0, 1000))).randbytes(size)
        opcode = TEXT if kind == "text" else BINARY
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
        bounds = [0, *cuts, len(payload)]
        pieces = [payload[a:b] for a, b in itertools.pairwise(bounds)]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            wire += client_frame(
                opcode if i == 0 else CONTINUATION, piece, fin=last, key=draw(keys)
            )
            if not last and draw(st.booleans()):
                ping = draw(st.binary(max_size=10))
                wire += client_frame(PING, ping, key=draw(keys))
                expected.append(("ping", ping))
        expected.append(("message", data, kind != "text"))
    if draw(st.booleans()):
        code = draw(st.sampled_from(VALID_CODES))
        reason = draw(st.text(max_size=30))
        wire += client_frame(CLOSE, close_payload(code, reason.encode()), key=draw(keys))
        expected.append(("close", code, reason))
        wire += draw(st.binary(max_size=20))  # ignored: it follows the close
    return bytes(wire), expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversation=conversations(), data=st.data())
def test_any_split_yields_the_same_events(
    conversation: tuple[bytes, list[tuple[Any, ...]]], data: st.DataObject
) -> None:
    """Valid frames cut at arbitrary byte boundaries yield exactly the events of one read."""
    wire, expected = conversation
    whole = read(wire)
    assert whole == expected
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=40), label="cuts"))
    bounds = [0, *cuts, len(wire)]
    reader = FrameReader(LIMIT)
    events = []
    for start, end in itertools.pairwise(bounds):
        reader.receive_data(wire[start:end])  # empty chunks included
        events += drain(reader)
    assert events == whole


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    conversation=conversations(),
    bad=st.sampled_from(
        [
            (client_frame(TEXT, b"x", masked=False), 1002),
            (client_frame(TEXT, b"x", rsv=0x40), 1002),
            (client_frame(CONTINUATION, b"x"), 1002),
            (client_frame(0xB, b"x"), 1002),
            (client_frame(PING, b"x", fin=False), 1002),
            (client_frame(CLOSE, b"\x03"), 1002),
            (client_frame(CLOSE, close_payload(1005)), 1002),
            (client_frame(CLOSE, close_payload(1000, b"\xff")), 1007),
            (client_frame(TEXT, b"\xff"), 1007),
        ]
    ),
    data=st.data(),
)
def test_any_split_fails_the_same_way(
    conversation: tuple[bytes, list[tuple[Any, ...]]],
    bad: tuple[bytes, int],
    data: st.DataObject,
) -> None:
    """A bad frame after valid ones fails with the same code however the bytes are cut."""
    wire, expected = conversation
    if expected and expected[-1][0] == "close":
        return  # after a close nothing is read, bad or not
    wire += bad[0]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=40), label="cuts"))
    bounds = [0, *cuts, len(wire)]
    reader = FrameReader(LIMIT)
    events = []
    with pytest.raises(FrameError) as caught:
        for start, end in itertools.pairwise(bounds):
            reader.receive_data(wire[start:end])
            drain(reader, events)  # events before the failure are kept
    assert caught.value.code == bad[1]
    assert events == expected


# ---- server frames ---------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "encoding", "header_size"),
    [(0, 0, 2), (125, 125, 2), (126, 126, 4), (65535, 126, 4), (65536, 127, 10), (70000, 127, 10)],
)
@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_server_frame_round_trip(size: int, encoding: int, header_size: int, opcode: int) -> None:
    """frame() writes a final, unmasked frame with the shortest length form; it parses back."""
    payload = b"z" * size
    built = frame(opcode, payload)
    assert built[0] == 0x80 | opcode
    assert built[1] & 0x80 == 0  # servers never mask
    assert built[1] & 0x7F == encoding
    assert len(built) == header_size + size
    assert built[header_size:] == payload
    expected = payload if opcode == BINARY else payload.decode()
    assert read(as_client(built)) == [("message", expected, opcode == BINARY)]


def test_server_control_frames_round_trip() -> None:
    """Pings and pongs built by frame() parse back with their payloads."""
    assert frame(PING, b"") == b"\x89\x00"
    assert frame(PONG, b"abc") == b"\x8a\x03abc"
    wire = as_client(frame(PING, b"hi")) + as_client(frame(PONG, bytes(125)))
    assert read(wire) == [("ping", b"hi"), ("pong", bytes(125))]


def test_server_frame_is_rejected_unmasked() -> None:
    """A server frame fed back as is (unmasked) is not a valid client frame."""
    assert read_error(frame(TEXT, b"hi")).code == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1007, 1011, 3000, 4999])
def test_close_frame_round_trip(code: int) -> None:
    """close_frame() writes the code big-endian, then the reason; both parse back."""
    assert close_frame(code) == bytes((0x88, 2)) + code.to_bytes(2, "big")
    assert read(as_client(close_frame(code))) == [("close", code, "")]
    built = close_frame(code, "going away ✓")
    assert built[2:4] == code.to_bytes(2, "big")
    assert built[4:] == "going away ✓".encode()
    assert read(as_client(built)) == [("close", code, "going away ✓")]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("a" * 123, "a" * 123),  # fits exactly
        ("a" * 124, "a" * 123),
        ("a" * 1000, "a" * 123),
        ("é" * 100, "é" * 61),  # 2-byte characters: 122 bytes, not half of one
        ("a" + "é" * 100, "a" + "é" * 61),  # 123 bytes exactly
        ("€" * 50, "€" * 41),  # 3-byte characters: 123 bytes exactly
        ("a" + "€" * 50, "a" + "€" * 40),  # 121 bytes: the 41st would split
        ("ab" + "€" * 50, "ab" + "€" * 40),
        ("😀" * 40, "😀" * 30),  # 4-byte characters: 120 bytes
        ("abc" + "😀" * 40, "abc" + "😀" * 30),  # 123 bytes exactly
        ("abcd" + "😀" * 40, "abcd" + "😀" * 29),  # 120 bytes
    ],
)
def test_close_frame_reason_is_cut_to_123_bytes_on_a_character(reason: str, expected: str) -> None:
    """Long reasons are cut to at most 123 UTF-8 bytes, never inside a character."""
    built = close_frame(1000, reason)
    body = built[2:]
    assert built[1] == len(body) <= 125
    assert body[2:] == expected.encode()
    assert len(expected.encode()) <= 123
    assert read(as_client(built)) == [("close", 1000, expected)]


@settings(max_examples=200, deadline=None)
@given(reason=st.text(max_size=200), code=st.sampled_from(VALID_CODES))
def test_close_frame_always_parses_back(reason: str, code: int) -> None:
    """Any reason yields a valid control frame whose reason is the longest fitting prefix."""
    built = close_frame(code, reason)
    assert len(built) <= 127
    assert built[1] <= 125
    events = read(as_client(built))
    assert len(events) == 1
    kind, got_code, got_reason = events[0]
    assert (kind, got_code) == ("close", code)
    assert reason.startswith(got_reason)
    assert len(got_reason.encode()) <= 123
    if got_reason != reason:
        assert len(reason[: len(got_reason) + 1].encode()) > 123
