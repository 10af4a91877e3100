"""The WebSocket upgrade fast path: parse a plain upgrade head, decline the rest."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from meshsub_trio._wire._upgrade import (
    HEAD_END,
    UpgradeRequest,
    accept_token,
    parse_upgrade,
    refusal,
    switching_protocols,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
#: The minimal head the fast path takes.
MINIMAL = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket"


def head(*fields: str, request_line: str = "GET /graphql HTTP/1.1") -> bytes:
    """A request head (without the blank line) from a request line and field lines."""
    return "\r\n".join([request_line, *fields]).encode("latin-1")


def upgrade_head(*extra: str, request_line: str = "GET /graphql HTTP/1.1") -> bytes:
    """A complete, valid upgrade head plus *extra* field lines."""
    return head(
        "Host: example.com:8000",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *extra,
        request_line=request_line,
    )


# ---- accepted heads -------------------------------------------------------
def test_minimal_upgrade() -> None:
    """Request line, Host and Upgrade are all the fast path needs."""
    assert parse_upgrade(MINIMAL) == UpgradeRequest(
        "/ws", {"host": "localhost", "upgrade": "websocket"}
    )


def test_browser_head() -> None:
    """A typical browser upgrade parses: target with query, every field, names lower-cased."""
    browser = (
        b"GET /graphql?token=abc&x=%20y HTTP/1.1\r\n"
        b"Host: app.example.com\r\n"
        b"Connection: Upgrade\r\n"
        b"Pragma: no-cache\r\n"
        b"Cache-Control: no-cache\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n"
        b"Upgrade: websocket\r\n"
        b"Origin: https://app.example.com\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Accept-Encoding: gzip, deflate, br\r\n"
        b"Accept-Language: en-US,en;q=0.9\r\n"
        b"Cookie: token=secret; theme=dark\r\n"
        b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        b"Sec-WebSocket-Protocol: graphql-transport-ws"
    )
    request = parse_upgrade(browser)
    assert request is not None
    assert request.target == "/graphql?token=abc&x=%20y"
    assert request.headers == {
        "host": "app.example.com",
        "connection": "Upgrade",
        "pragma": "no-cache",
        "cache-control": "no-cache",
        "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
        "upgrade": "websocket",
        "origin": "https://app.example.com",
        "sec-websocket-version": "13",
        "accept-encoding": "gzip, deflate, br",
        "accept-language": "en-US,en;q=0.9",
        "cookie": "token=secret; theme=dark",
        "sec-websocket-key": "x3JJHMbDL1EzLkh9GBhXDw==",
        "sec-websocket-extensions": "permessage-deflate; client_max_window_bits",
        "sec-websocket-protocol": "graphql-transport-ws",
    }


@pytest.mark.parametrize(
    "offer", ["graphql-ws", "graphql-transport-ws", "graphql-transport-ws, graphql-ws"]
)
def test_graphql_client_heads(offer: str) -> None:
    """gql / graphql-ws style heads (lower-case names, a subprotocol offer) parse."""
    raw = (
        b"GET /graphql HTTP/1.1\r\n"
        b"host: localhost:8000\r\n"
        b"upgrade: websocket\r\n"
        b"connection: Upgrade\r\n"
        b"sec-websocket-key: " + KEY.encode() + b"\r\n"
        b"sec-websocket-version: 13\r\n"
        b"sec-websocket-protocol: " + offer.encode() + b"\r\n"
        b"user-agent: Python/3.12 websockets/12.0"
    )
    request = parse_upgrade(raw)
    assert request is not None
    assert request.target == "/graphql"
    assert request.headers["sec-websocket-protocol"] == offer
    assert request.headers["sec-websocket-key"] == KEY
    assert request.headers["host"] == "localhost:8000"


def test_header_names_are_case_insensitive() -> None:
    """Field names in any case are lower-cased; values keep their case."""
    request = parse_upgrade(
        head(
            "hOsT: Example.COM", "UPGRADE: WebSocket", "SEC-WEBSOCKET-KEY: AbC=", "X-Custom: MiXeD"
        )
    )
    assert request is not None
    assert request.headers == {
        "host": "Example.COM",
        "upgrade": "WebSocket",
        "sec-websocket-key": "AbC=",
        "x-custom": "MiXeD",
    }


@pytest.mark.parametrize("value", ["WEBSOCKET", "WebSocket", "websocket, h2c", "h2c, websocket"])
def test_upgrade_value_is_case_insensitive_and_may_list_others(value: str) -> None:
    """Upgrade names websocket in any case, alone or in a list."""
    request = parse_upgrade(head("Host: h", f"Upgrade: {value}"))
    assert request is not None
    assert request.headers["upgrade"] == value


@pytest.mark.parametrize(
    "line",
    [
        "Host:h",
        "Host: h",
        "Host:   h",
        "Host:\th",
        "Host: h ",
        "Host: h\t",
        "Host: \t h \t ",
    ],
)
def test_optional_whitespace_is_trimmed(line: str) -> None:
    """OWS (spaces and tabs) around a field value is not part of it."""
    request = parse_upgrade(head(line, "Upgrade: websocket"))
    assert request is not None
    assert request.headers["host"] == "h"


def test_inner_whitespace_and_tabs_are_kept() -> None:
    """Spaces and tabs inside a value stay."""
    request = parse_upgrade(head("Host: h", "Upgrade: websocket", "X-A:  a  b\tc  "))
    assert request is not None
    assert request.headers["x-a"] == "a  b\tc"


def test_empty_field_value() -> None:
    """An empty value is a value (here an empty Sec-WebSocket-Protocol)."""
    request = parse_upgrade(head("Host: h", "Upgrade: websocket", "Sec-WebSocket-Protocol:"))
    assert request is not None
    assert request.headers["sec-websocket-protocol"] == ""


def test_repeated_fields_are_joined() -> None:
    """Repeated fields join with ", " in order, whatever the names' case."""
    request = parse_upgrade(
        upgrade_head(
            "Sec-WebSocket-Protocol: graphql-ws",
            "sec-websocket-protocol: graphql-transport-ws",
            "SEC-WEBSOCKET-PROTOCOL:  three ",
        )
    )
    assert request is not None
    assert request.headers["sec-websocket-protocol"] == "graphql-ws, graphql-transport-ws, three"
    joined = parse_upgrade(head("Host: h", "Upgrade: h2c", "Upgrade: websocket"))
    assert joined is not None
    assert joined.headers["upgrade"] == "h2c, websocket"


def test_obs_text_in_values_is_latin1() -> None:
    """Bytes 0x80-0xFF (obs-text) are allowed in values and read as Latin-1."""
    request = parse_upgrade(MINIMAL + b"\r\nX-Name: caf\xe9")
    assert request is not None
    assert request.headers["x-name"] == "café"


@pytest.mark.parametrize(
    "target",
    ["/", "/ws", "/graphql?a=1&b=2", "/a/b/c;p?q=%2F#frag", "/~user/!$&'()*+,;=:@"],
)
def test_origin_form_targets(target: str) -> None:
    """Any origin-form target of visible ASCII is taken as is."""
    request = parse_upgrade(
        head("Host: h", "Upgrade: websocket", request_line=f"GET {target} HTTP/1.1")
    )
    assert request is not None
    assert request.target == target


def test_all_token_characters_in_field_names() -> None:
    """Field names may use every tchar (RFC 9110 §5.6.2)."""
    name = "!#$%&'*+-.^_`|~09azAZ"
    request = parse_upgrade(head("Host: h", "Upgrade: websocket", f"{name}: v"))
    assert request is not None
    assert request.headers[name.lower()] == "v"


# ---- declined heads --------------------------------------------------------
@pytest.mark.parametrize(
    "request_line",
    [
        "POST /graphql HTTP/1.1",
        "HEAD /graphql HTTP/1.1",
        "PUT /graphql HTTP/1.1",
        "OPTIONS * HTTP/1.1",
        "get /graphql HTTP/1.1",  # methods are case-sensitive
        "GET http://example.com/graphql HTTP/1.1",  # absolute form
        "GET example.com:80 HTTP/1.1",  # authority form
        "GET * HTTP/1.1",
        "GET graphql HTTP/1.1",
        "GET /graphql HTTP/1.0",
        "GET /graphql HTTP/2.0",
        "GET /graphql HTTP/1.10",
        "GET /graphql http/1.1",
        "GET /graphql",
        "GET /graphql HTTP/1.1 ",
        " GET /graphql HTTP/1.1",
        "GET  /graphql HTTP/1.1",
        "GET /graphql  HTTP/1.1",
        "GET\t/graphql HTTP/1.1",
        "GET /gra phql HTTP/1.1",
        "GET /caf\xe9 HTTP/1.1",  # non-ASCII target
        "GET /a\x7fb HTTP/1.1",
        "",
    ],
)
def test_other_request_lines_are_declined(request_line: str) -> None:
    """Anything but ``GET <origin-form> HTTP/1.1`` goes to h11."""
    assert parse_upgrade(upgrade_head(request_line=request_line)) is None


def test_empty_head_is_declined() -> None:
    """No bytes, no upgrade."""
    assert parse_upgrade(b"") is None


@pytest.mark.parametrize(
    "lines",
    [
        ("Host: h", "Upgrade: websocket", " folded"),  # obs-fold (space)
        ("Host: h", "Upgrade: websocket", "\tfolded"),  # obs-fold (tab)
        ("Host: h", " Upgrade: websocket"),  # leading whitespace on a field
        ("Host: h", "Upgrade : websocket"),  # whitespace before the colon
        ("Host: h", "Upgrade\t: websocket"),
        ("Host: h", "Upgrade websocket"),  # no colon
        ("Host: h", ": websocket"),  # no name
        ("Host: h", "Upg(rade): websocket"),  # a delimiter in the name
        ("Host: h", "Upgr@de: websocket"),
        ("Host: h", "Ümlaut: x", "Upgrade: websocket"),  # non-ASCII name
        ("Host: h", "", "Upgrade: websocket"),  # an empty line inside the head
        ("Host: h", "Upgrade: websocket", ""),  # a trailing empty line
    ],
)
def test_malformed_field_lines_are_declined(lines: tuple[str, ...]) -> None:
    """Folded, misnamed or colon-less field lines go to h11."""
    assert parse_upgrade(head(*lines)) is None


@pytest.mark.parametrize("char", [*(chr(c) for c in range(0x20) if c != 0x09), "\x7f"])
def test_control_characters_in_values_are_declined(char: str) -> None:
    """Control characters (all but HTAB) in a value decline, CR and bare LF included."""
    assert parse_upgrade(head("Host: h", "Upgrade: websocket", f"X-A: a{char}b")) is None
    assert parse_upgrade(head(f"Host: h{char}", "Upgrade: websocket")) is None


def test_bare_lf_line_ends_are_declined() -> None:
    """Fields separated by bare LF are not split as lines: the head is declined."""
    assert parse_upgrade(b"GET /ws HTTP/1.1\nHost: h\nUpgrade: websocket") is None
    assert parse_upgrade(b"GET /ws HTTP/1.1\r\nHost: h\nUpgrade: websocket") is None
    assert parse_upgrade(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\n") is None
    assert parse_upgrade(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r") is None


@pytest.mark.parametrize("second", ["Host: h", "Host: other", "HOST: h", "host:"])
def test_repeated_host_is_declined(second: str) -> None:
    """Two Host fields, even identical ones, are for h11 to refuse."""
    assert parse_upgrade(head("Host: h", "Upgrade: websocket", second)) is None


def test_missing_host_is_declined() -> None:
    """Without Host (RFC 9112 §3.2 requires it) the head is declined."""
    assert parse_upgrade(head("Upgrade: websocket", "Connection: Upgrade")) is None
    assert parse_upgrade(head("X-Host: h", "Upgrade: websocket")) is None


@pytest.mark.parametrize(
    "upgrade",
    [None, "Upgrade: h2c", "Upgrade:", "Upgrade: web socket", "X-Upgrade: websocket"],
)
def test_missing_or_other_upgrade_is_declined(upgrade: str | None) -> None:
    """Without ``Upgrade: websocket`` this is plain HTTP: h11's business."""
    fields = ["Host: h", "Connection: Upgrade"]
    if upgrade is not None:
        fields.append(upgrade)
    assert parse_upgrade(head(*fields)) is None


@pytest.mark.parametrize(
    "field",
    [
        "Content-Length: 0",
        "Content-Length: 5",
        "content-length: 0",
        "Transfer-Encoding: chunked",
        "TRANSFER-ENCODING: identity",
        "Transfer-Encoding:",
    ],
)
def test_body_framing_fields_are_declined(field: str) -> None:
    """Any Content-Length or Transfer-Encoding, even zero or empty, declines."""
    assert parse_upgrade(upgrade_head(field)) is None
    assert parse_upgrade(upgrade_head(field, field)) is None


# ---- responses ---------------------------------------------------------------
def test_accept_token_rfc_example() -> None:
    """RFC 6455 §1.3's example key gives its example accept value."""
    assert accept_token(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("key", ["x3JJHMbDL1EzLkh9GBhXDw==", "AQIDBAUGBwgJCgsMDQ4PEC==", ""])
def test_accept_token_is_sha1_of_key_and_guid(key: str) -> None:
    """The token is base64(SHA-1(key + the RFC 6455 GUID)), for any key."""
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    assert accept_token(key) == base64.b64encode(digest)


def parse_response(response: bytes) -> tuple[str, dict[str, str], bytes]:
    """Status line, lower-cased fields and body of a response, checking CRLF framing."""
    assert HEAD_END in response
    raw_head, body = response.split(HEAD_END, 1)
    status, *lines = raw_head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines:
        assert "\n" not in line
        assert "\r" not in line
        name, value = line.split(":", 1)
        assert name.lower() not in fields, "repeated response field"
        fields[name.lower()] = value.strip()
    return status, fields, body


def test_switching_protocols_without_subprotocol() -> None:
    """The 101 carries upgrade, connection and the accept token, and no protocol."""
    response = switching_protocols(KEY, None)
    status, fields, body = parse_response(response)
    assert status == "HTTP/1.1 101 Switching Protocols"
    assert fields == {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-accept": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
    }
    assert body == b""
    assert response.endswith(b"\r\n\r\n")
    assert b"sec-websocket-protocol" not in response.lower()


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
def test_switching_protocols_echoes_subprotocol(subprotocol: str) -> None:
    """A chosen subprotocol is echoed in Sec-WebSocket-Protocol, exactly once."""
    response = switching_protocols(KEY, subprotocol)
    status, fields, body = parse_response(response)
    assert status == "HTTP/1.1 101 Switching Protocols"
    assert fields["sec-websocket-protocol"] == subprotocol
    assert fields["sec-websocket-accept"] == accept_token(KEY).decode()
    assert fields["upgrade"] == "websocket"
    assert "upgrade" in fields["connection"].lower()
    assert body == b""
    assert response.lower().count(b"sec-websocket-protocol") == 1


@pytest.mark.parametrize(
    ("status", "phrase"),
    [(400, "Bad Request"), (403, "Forbidden"), (404, "Not Found"), (426, "Upgrade Required")],
)
def test_refusal_response(status: int, phrase: str) -> None:
    """A refusal is a complete response: status line, exact length, close, text body."""
    response = refusal(status, "Not a valid WebSocket upgrade request")
    line, fields, body = parse_response(response)
    assert line == f"HTTP/1.1 {status} {phrase}"
    assert re.fullmatch(r"HTTP/1\.1 \d{3} [A-Za-z ]+", line)
    assert fields["connection"] == "close"
    assert fields["content-type"].startswith("text/plain")
    assert "charset=utf-8" in fields["content-type"]
    assert fields["content-length"] == str(len(body))
    assert body == b"Not a valid WebSocket upgrade request"


def test_refusal_content_length_counts_utf8_bytes() -> None:
    """Content-Length is the UTF-8 byte count, not the character count."""
    message = "Origin not allowed: café ✓"
    _, fields, body = parse_response(refusal(403, message))
    assert body == message.encode()
    assert fields["content-length"] == str(len(message.encode()))
    assert int(fields["content-length"]) > len(message)


def test_refusal_with_empty_message() -> None:
    """An empty message still makes a well-formed, zero-length response."""
    _, fields, body = parse_response(refusal(404, ""))
    assert body == b""
    assert fields["content-length"] == "0"
    assert fields["connection"] == "close"
