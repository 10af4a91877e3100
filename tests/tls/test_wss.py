"""The server itself on TLS: real clients (trio-websocket, httpx, curl, a raw TLS
socket) against a certificate made at test time, mutual TLS, and plain HTTP refused."""

from __future__ import annotations

import json
import logging
import shutil
import ssl
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket

from meshsub_trio import App, AuthError, Context, Server, subject_of
from meshsub_trio.examples.countdown import SCHEMA, countdown, ticks

from .certs import Certs
from .conftest import TlsServerFactory, client_context
from .rawtls import client_frame, open_raw_tls

HELLO = {"query": "{ hello }"}


async def test_trio_websocket_over_wss_streams_a_subscription(
    tls_server: Server, certs: Certs
) -> None:
    assert tls_server.url.startswith("https://")
    async with open_websocket(
        "127.0.0.1", tls_server.port, "/ws", use_ssl=client_context(certs),
        subprotocols=["graphql-transport-ws"],
    ) as ws:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        with trio.fail_after(5):
            assert json.loads(await ws.get_message())["type"] == "connection_ack"
            query = "subscription { countdown(to: 3) }"
            await ws.send_message(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}})
            )
            seen = []
            while True:
                message = json.loads(await ws.get_message())
                if message["type"] == "complete":
                    break
                seen.append(message["payload"]["data"]["countdown"])
    assert seen == [3, 2, 1, 0]


async def test_raw_frames_over_tls_stream_and_oversize_closes_1009(
    start_tls_server: TlsServerFactory, certs: Certs
) -> None:
    server = await start_tls_server(max_message_size=1024)
    with trio.fail_after(5):
        client = await open_raw_tls(server.port, client_context(certs))
        await client.send_json({"type": "connection_init"})
        assert (await client.message())["type"] == "connection_ack"
        await client.send_json(
            {"id": "a", "type": "subscribe", "payload": {"query": "subscription { ticks(everyMs: 1) }"}}
        )
        values = [(await client.message())["payload"]["data"]["ticks"] for _ in range(50)]
        assert values == list(range(50))
        # One message past max_message_size: refused from its header, close 1009.
        await client.stream.send_all(client_frame(b"x" * 2048))
        assert await client.close_code() == 1009
        await server.metrics.wait_for(lambda m: m.live_connections == 0)


async def test_httpx_over_https(tls_server: Server, certs: Certs) -> None:
    async with httpx.AsyncClient(verify=client_context(certs)) as http:
        response = await http.post(f"{tls_server.url}/api", json=HELLO)
        health = await http.get(f"{tls_server.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"data": {"hello": "Hello from meshsub-trio"}}
    assert response.http_version == "HTTP/1.1"
    assert health.status_code == 200


async def test_curl_over_https(tls_server: Server, certs: Certs) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed for this test"
    result = await trio.run_process(
        [curl, "-sS", "--fail", "--cacert", str(certs.ca), "-H", "content-type: application/json",
         "-d", json.dumps(HELLO), f"{tls_server.url}/api"],
        capture_stdout=True, capture_stderr=True,
    )
    assert json.loads(result.stdout) == {"data": {"hello": "Hello from meshsub-trio"}}
    # And curl refuses the server when it does not trust the CA: the certificate is real.
    untrusted = await trio.run_process(
        [curl, "-sS", f"{tls_server.url}/healthz"], check=False, capture_stderr=True
    )
    assert untrusted.returncode == 60, untrusted.stderr  # peer certificate cannot be authenticated


async def test_plain_http_on_the_tls_port_is_refused_with_one_log_line(
    tls_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshsub_trio")
    async with await trio.open_tcp_stream("127.0.0.1", tls_server.port) as stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        with trio.fail_after(5):
            while data := await stream.receive_some(65536):
                answer += data
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"use https:// or wss://" in answer
    lines = [r for r in caplog.records if r.name == "meshsub_trio.tls"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "plain HTTP on the TLS port refused" in lines[0].getMessage()
    assert lines[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info]


# ---- mutual TLS ----------------------------------------------------------------


async def _authenticate(ctx: Context) -> Any:
    """WebSockets: the client certificate's subject is who the client is."""
    if ctx.protocol == "http":
        return None
    subject = subject_of(ctx.tls_peer)
    if "commonName" not in subject:
        raise AuthError("a client certificate is required")
    return subject["commonName"]


async def _on_connect(ctx: Context) -> Any:
    return {"user": ctx.auth, "issuer": subject_of({"subject": ctx.tls_peer["issuer"]})}  # type: ignore[index]


MTLS_APP = App(
    SCHEMA,
    resolvers={"Query": {"hello": lambda _root, _info: "hi"}},
    streamers={"countdown": countdown, "ticks": ticks},
    authenticate=_authenticate,
    on_connect=_on_connect,
)


@pytest.mark.parametrize("mode", ["required", "optional"])
async def test_mtls_client_certificate_reaches_the_auth_hook(
    start_tls_server: TlsServerFactory, certs: Certs, mode: str
) -> None:
    server = await start_tls_server(app=MTLS_APP, ca_certs=str(certs.ca), client_cert=mode)
    async with open_websocket(
        "127.0.0.1", server.port, "/ws", use_ssl=client_context(certs, certs.client),
        subprotocols=["graphql-transport-ws"],
    ) as ws:
        await ws.send_message(json.dumps({"type": "connection_init"}))
        with trio.fail_after(5):
            ack = json.loads(await ws.get_message())
    assert ack["type"] == "connection_ack"
    assert ack["payload"] == {
        "user": "alice", "issuer": {"commonName": "meshsub-test-ca"}
    }


async def _handshake_refused(server: Server, context: ssl.SSLContext) -> bool:
    """Whether the server refuses this client's TLS (at the handshake or its first read)."""
    tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
    stream = trio.SSLStream(tcp, context, server_hostname="localhost")
    try:
        with trio.fail_after(5):
            await stream.do_handshake()
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            return await stream.receive_some(65536) == b""
    except trio.BrokenResourceError as error:
        return isinstance(error.__cause__, ssl.SSLError)
    finally:
        await trio.aclose_forcefully(stream)


async def test_mtls_required_refuses_no_certificate_and_a_stranger(
    start_tls_server: TlsServerFactory, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshsub_trio")
    server = await start_tls_server(app=MTLS_APP, ca_certs=str(certs.ca))  # required by default
    assert await _handshake_refused(server, client_context(certs))
    assert await _handshake_refused(server, client_context(certs, certs.stranger))
    assert not await _handshake_refused(server, client_context(certs, certs.client))
    failures = [r for r in caplog.records if r.getMessage() == "TLS handshake failed"]
    assert len(failures) == 2 and not any(r.exc_info for r in failures)
    assert server.metrics.live_connections == 0


async def test_mtls_optional_lets_a_client_without_certificate_in(
    start_tls_server: TlsServerFactory, certs: Certs
) -> None:
    """The TLS layer lets it in; the app's hook (here: no subject, no entry) decides: 4403."""
    server = await start_tls_server(app=MTLS_APP, ca_certs=str(certs.ca), client_cert="optional")
    client = await open_raw_tls(server.port, client_context(certs))
    with trio.fail_after(5):
        await client.send_json({"type": "connection_init"})
        assert await client.close_code() == 4403
