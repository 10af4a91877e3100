"""GraphQL over HTTP on the native host (protocols.md §4: HTTP-01..15, audits HTTP-A01..A61).

Every request goes through httpx on Trio to a real server on 127.0.0.1. Status
codes follow the project's decisions: with ``application/json`` (or no Accept,
or ``*/*``) parse, validation and coercion failures are 200 with ``errors``;
with ``application/graphql-response+json`` they are 400 without ``data``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
from graphql import GraphQLError
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionRejected

from meshsub_trio import App, AuthError, Context, Server
from meshsub_trio.examples.countdown import app as countdown_app

from ..wsclient import TRANSPORT, open_raw_client

GR = "application/graphql-response+json"
JSON = "application/json"
MESHERY = "/graphql"
WS_PATHS = ("/ws", MESHERY)
SOON = 5.0  # generous bound for "is answered"

TYPENAME = {"query": "{ __typename }"}
TYPE_QUERY = "query Type($name: String!) { __type(name: $name) { name } }"
UNICODE_QUERY = '{ __type(name: "Run🏃Swim🏊") { name } }'
NONEXISTENT = "{ 8f31403dfe404bccbb0e835f2629c6a7 }"
COERCION = "query CoerceFailure($id: ID!){ __typename }"

SCHEMA = """
type Query {
  hello: String!
  whoami: String
  fail: String
  gate(n: Int!): Int!
}
type Mutation { bump: Int! }
type Subscription { countdown(to: Int!): Int! }
"""


# ---- the app under test -------------------------------------------------


@dataclass
class Probe:
    """What the resolvers saw: mutations run, gate arrivals."""

    mutations: int = 0
    arrived: int = 0
    all_arrived: trio.Event = field(default_factory=trio.Event)


def make_app(probe: Probe, **hooks: Any) -> App:
    """A small app with a mutation (to prove GET never runs one) and a gate."""

    def bump(_root: Any, _info: Any) -> int:
        probe.mutations += 1
        return probe.mutations

    def fail(_root: Any, _info: Any) -> str:
        raise GraphQLError("resolver failed")

    def whoami(_root: Any, info: Any) -> Any:
        return info.context.auth

    async def gate(_root: Any, _info: Any, n: int) -> int:
        """Answer only once *n* requests are inside the resolver at the same time."""
        probe.arrived += 1
        if probe.arrived >= n:
            probe.all_arrived.set()
        await probe.all_arrived.wait()
        return probe.arrived

    async def countdown(_ctx: Context, args: dict[str, Any], emit: Callable[[Any], None]) -> None:
        for n in range(args["to"], -1, -1):
            emit(n)

    return App(
        SCHEMA,
        resolvers={
            "Query": {
                "hello": lambda _root, _info: "Hello",
                "whoami": whoami,
                "fail": fail,
                "gate": gate,
            },
            "Mutation": {"bump": bump},
        },
        streamers={"countdown": countdown},
        playground_paths=("/graphiql",),
        **hooks,
    )


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def http_server(start_server: Callable[..., Any], probe: Probe) -> Server:
    return await start_server(app=make_app(probe))


@pytest.fixture
async def client(http_server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client with no default Accept header (the audits' "no Accept")."""
    async with open_client(http_server) as http:
        yield http


class open_client(httpx.AsyncClient):
    """``async with open_client(server)``: httpx bound to *server*, without default Accept."""

    def __init__(self, server: Server, **kw: Any) -> None:
        super().__init__(base_url=server.url, timeout=SOON, **kw)
        del self.headers["accept"]


# ---- helpers ------------------------------------------------------------


def encode(body: Any) -> bytes:
    """Raw bytes as they are; anything else as UTF-8 JSON (non-ASCII kept as is)."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, ensure_ascii=False).encode()


async def post(
    http: httpx.AsyncClient,
    body: Any = TYPENAME,
    *,
    accept: str | None = None,
    content_type: str | None = JSON,
    path: str = "/api",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = dict(headers or {})
    if accept is not None:
        sent["accept"] = accept
    if content_type is not None:
        sent["content-type"] = content_type
    return await http.post(path, content=encode(body), headers=sent)


async def get(
    http: httpx.AsyncClient,
    params: dict[str, str] | str,
    *,
    accept: str | None = None,
    path: str = "/api",
) -> httpx.Response:
    headers = {"accept": accept} if accept is not None else {}
    return await http.get(path, params=params, headers=headers)


def body_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON body, which must be UTF-8 (HTTP-A05)."""
    decoded = json.loads(response.content.decode("utf-8"))
    assert isinstance(decoded, dict), decoded
    return decoded


def media_of(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip()


def assert_graphql_content_type(response: httpx.Response, expected: str) -> None:
    """HTTP-06: a Content-Type, with a charset, of the negotiated media type."""
    content_type = response.headers.get("content-type", "")
    assert media_of(response) == expected, content_type
    assert "charset=utf-8" in content_type.lower(), content_type


def client_port(response: httpx.Response) -> int | None:
    """The local port of the connection that carried *response*; None once it is closed."""
    stream = response.extensions["network_stream"]
    try:
        return stream.get_extra_info("client_addr")[1]
    except OSError:
        return None


# ---- the graphql-http audit table (HTTP-A01..A61) -------------------------


@dataclass(frozen=True)
class Audit:
    """One graphql-http audit: the request variation and its pass condition."""

    id: str
    body: Any = field(default_factory=lambda: TYPENAME)
    accept: str | None = None
    content_type: str | None = JSON
    method: str = "POST"
    params: dict[str, str] | None = None
    status: int | tuple[int, int] = 200
    media: str | None = None
    no_errors: bool = False
    has_errors: bool = False
    no_data: bool = False


AUDITS: list[Audit] = [
    Audit("A01-22EB", accept=GR, media=GR),
    Audit("A02-4655", accept=JSON, media=JSON),
    Audit("A03-47DE", accept="*/*", media=JSON),
    Audit("A04-80D8", media=JSON),
    Audit("A05-82A3", no_errors=True),
    Audit(
        "A06-BF61",
        body={"query": UNICODE_QUERY},
        content_type="application/json; charset=utf-8",
        no_errors=True,
    ),
    Audit("A07-78D5", content_type=JSON),
    Audit("A08-2C94"),
    Audit("A09-5A70", method="GET", params={"query": "{ __typename }"}, content_type=None),
    Audit(
        "A10-9C48",
        method="GET",
        params={"query": "mutation { __typename }"},
        accept=GR,
        status=(400, 499),
        no_data=True,
    ),
    Audit("A11-9ABE", content_type=None, status=415, has_errors=True),
    Audit("A12-03D4", no_errors=True),
    Audit("A13-A5BF", body=b"", status=400, has_errors=True),
    Audit("A14-423L", body={"notquery": "{ __typename }"}, accept=GR, status=400, no_data=True),
    *[
        Audit(f"A{15 + i}-LKJ{i}", body={"query": value}, status=400, has_errors=True)
        for i, value in enumerate([{"obj": "ect"}, 0, False, ["array"]])
    ],
    Audit("A19-34A2", accept=GR, no_errors=True),
    Audit("A20-13EE", accept=JSON, no_errors=True),
    *[
        Audit(
            f"A{21 + i}-6C0{i}",
            body={"query": "{ __typename }", "operationName": value},
            status=400,
            has_errors=True,
        )
        for i, value in enumerate([{"obj": "ect"}, 0, False, ["array"]])
    ],
    Audit(
        "A25-8161",
        body={"query": "query Query { __typename }", "operationName": "Query"},
        accept=GR,
        no_errors=True,
    ),
    Audit(
        "A26-B8B3",
        body={"query": "query Query { __typename }", "operationName": "Query"},
        accept=JSON,
        no_errors=True,
    ),
    *[
        Audit(
            f"A{27 + i}-94B{i}",
            body={"query": "{ __typename }", key: None},
            accept=GR,
            no_errors=True,
        )
        for i, key in enumerate(["variables", "operationName", "extensions"])
    ],
    *[
        Audit(
            f"A{30 + i}-022{i}",
            body={"query": "{ __typename }", key: None},
            accept=JSON,
            no_errors=True,
        )
        for i, key in enumerate(["variables", "operationName", "extensions"])
    ],
    *[
        Audit(
            f"A{33 + i}-476{i}",
            body={"query": "{ __typename }", "variables": value},
            status=400,
            has_errors=True,
        )
        for i, value in enumerate(["string", 0, False, ["array"]])
    ],
    Audit(
        "A37-2EA1",
        body={"query": TYPE_QUERY, "variables": {"name": "sometype"}},
        accept=GR,
        no_errors=True,
    ),
    Audit(
        "A38-28B9",
        body={"query": TYPE_QUERY, "variables": {"name": "sometype"}},
        accept=JSON,
        no_errors=True,
    ),
    Audit(
        "A39-D6D5",
        method="GET",
        params={"query": TYPE_QUERY, "variables": json.dumps({"name": "sometype"})},
        accept=GR,
        media=GR,
        no_errors=True,
    ),
    Audit(
        "A40-6A70",
        method="GET",
        params={"query": TYPE_QUERY, "variables": json.dumps({"name": "sometype"})},
        accept=JSON,
        media=JSON,
        no_errors=True,
    ),
    *[
        Audit(
            f"A{41 + i}-58B{i}",
            body={"query": "{ __typename }", "extensions": value},
            status=400,
            has_errors=True,
        )
        for i, value in enumerate(["string", 0, False, ["array"]])
    ],
    Audit(
        "A45-428F",
        body={"query": "{ __typename }", "extensions": {"some": "value"}},
        accept=GR,
        no_errors=True,
    ),
    Audit(
        "A46-1B7A",
        body={"query": "{ __typename }", "extensions": {"some": "value"}},
        accept=JSON,
        no_errors=True,
    ),
    Audit("A47-B6DC", body=b'{ "not a JSON', accept=JSON, status=(200, 599)),
    Audit("A48-BCF8", body=b'{ "not a JSON', accept=JSON, status=400, has_errors=True),
    Audit("A49-B7N8", body=b'{ "not a JSON', accept=GR, status=400, no_data=True),
    Audit("A50-8764", body={"qeury": "{ __typename }"}, status=(400, 599)),
    Audit("A51-3E3A", body={"qeury": "{ __typename }"}, status=400, has_errors=True),
    Audit("A52-572B", body={"query": "{"}, accept=JSON, has_errors=True),
    Audit("A53-FDE2", body={"query": NONEXISTENT}, accept=JSON, has_errors=True),
    Audit(
        "A54-7B9B",
        body={"query": COERCION, "variables": {"id": None}},
        accept=JSON,
        has_errors=True,
    ),
    Audit("A55-865D", body={"query": "{"}, accept=GR, status=(400, 599)),
    Audit("A56-556A", body={"query": "{"}, accept=GR, status=400, has_errors=True),
    Audit("A57-D586", body={"query": "{"}, accept=GR, status=400, no_data=True),
    Audit("A58-51FE", body={"query": NONEXISTENT}, accept=GR, status=(400, 599)),
    Audit("A59-74FF", body={"query": NONEXISTENT}, accept=GR, status=400, has_errors=True),
    Audit("A60-5E5B", body={"query": NONEXISTENT}, accept=GR, status=400, no_data=True),
    Audit(
        "A61-86EE",
        body={"query": COERCION, "variables": {"id": None}},
        accept=GR,
        status=400,
        has_errors=True,
        no_data=True,
    ),
]


def test_audit_table_is_complete() -> None:
    """All 61 graphql-http audits are in the table, each once."""
    numbers = [int(audit.id[1:3]) for audit in AUDITS]
    assert numbers == list(range(1, 62))


@pytest.mark.parametrize("audit", AUDITS, ids=[audit.id for audit in AUDITS])
async def test_graphql_http_audit(audit: Audit, client: httpx.AsyncClient, probe: Probe) -> None:
    """One graphql-http audit; every answer is UTF-8 JSON with a charset-labelled type."""
    if audit.method == "GET":
        assert audit.params is not None
        response = await get(client, audit.params, accept=audit.accept)
    else:
        response = await post(
            client, audit.body, accept=audit.accept, content_type=audit.content_type
        )
    if isinstance(audit.status, tuple):
        low, high = audit.status
        assert low <= response.status_code <= high, response.text
    else:
        assert response.status_code == audit.status, response.text
    expected_media = audit.media or (GR if audit.accept == GR else JSON)
    assert_graphql_content_type(response, expected_media)
    payload = body_of(response)
    if audit.no_errors:
        assert "errors" not in payload, payload
        assert "data" in payload, payload
    if audit.has_errors:
        assert payload.get("errors"), payload
    if audit.no_data:
        assert "data" not in payload, payload
    assert probe.mutations == 0


# ---- HTTP-01/02/03: requests and parameters -------------------------------


@pytest.mark.parametrize("path", ["/api", MESHERY])
async def test_both_endpoints_answer_get_and_post(client: httpx.AsyncClient, path: str) -> None:
    """HTTP-01: POST (MUST) and GET (MAY) on both GraphQL-over-HTTP paths."""
    posted = await post(client, {"query": "{ hello }"}, path=path)
    fetched = await get(client, {"query": "{ hello }"}, path=path)
    for response in (posted, fetched):
        assert response.status_code == 200, response.text
        assert body_of(response) == {"data": {"hello": "Hello"}}


async def test_unicode_query_over_post_and_get(client: httpx.AsyncClient) -> None:
    """HTTP-A06: a UTF-8 query (with astral characters) over POST and over GET."""
    posted = await post(
        client, {"query": UNICODE_QUERY}, content_type="application/json; charset=utf-8"
    )
    fetched = await get(client, {"query": UNICODE_QUERY})
    for response in (posted, fetched):
        assert response.status_code == 200, response.text
        assert body_of(response) == {"data": {"__type": None}}


async def test_unknown_body_properties_are_ignored(client: httpx.AsyncClient) -> None:
    """HTTP-02: unknown properties in the request object are ignored."""
    response = await post(client, {"query": "{ hello }", "somethingElse": [1, 2], "id": "x"})
    assert response.status_code == 200, response.text
    assert body_of(response) == {"data": {"hello": "Hello"}}


@pytest.mark.parametrize("accept", [JSON, GR])
async def test_non_object_bodies_are_malformed(client: httpx.AsyncClient, accept: str) -> None:
    """A JSON body that is not an object (a batch, a string, null) is 400."""
    for body in ([TYPENAME], "query", None, 7):
        response = await post(client, json.dumps(body), accept=accept)
        assert response.status_code == 400, (body, response.text)
        payload = body_of(response)
        assert payload["errors"] and "data" not in payload


async def test_get_with_url_encoded_variables(client: httpx.AsyncClient) -> None:
    """HTTP-03: variables are a URL-encoded JSON string."""
    query = "query Echo($name: String!) { __type(name: $name) { name } }"
    response = await get(
        client, {"query": query, "variables": json.dumps({"name": "Query"})}, accept=GR
    )
    assert response.status_code == 200, response.text
    assert body_of(response) == {"data": {"__type": {"name": "Query"}}}


async def test_get_empty_parameters_mean_absent(client: httpx.AsyncClient) -> None:
    """HTTP-03: an empty ``variables``/``operationName``/``extensions`` is absent."""
    response = await get(
        client,
        {"query": "{ hello }", "variables": "", "operationName": "", "extensions": ""},
    )
    assert response.status_code == 200, response.text
    assert body_of(response) == {"data": {"hello": "Hello"}}


async def test_get_operation_name_null_names_an_operation(client: httpx.AsyncClient) -> None:
    """HTTP-03: ``operationName=null`` over GET names the operation called "null"."""
    query = "query null { a: hello } query other { b: __typename }"
    response = await get(client, {"query": query, "operationName": "null"})
    assert response.status_code == 200, response.text
    assert body_of(response) == {"data": {"a": "Hello"}}


@pytest.mark.parametrize(
    "params",
    [
        {"query": "{ hello }", "variables": "{not json"},
        {"query": "{ hello }", "variables": "[7]"},
        {"query": "{ hello }", "extensions": "{not json"},
        {"query": "{ hello }", "extensions": '"string"'},
        {"variables": "{}"},
        {},
    ],
    ids=[
        "bad-variables",
        "array-variables",
        "bad-extensions",
        "string-extensions",
        "no-query",
        "nothing",
    ],
)
@pytest.mark.parametrize("accept", [JSON, GR])
async def test_malformed_get_parameters_are_400(
    client: httpx.AsyncClient, params: dict[str, str], accept: str
) -> None:
    """HTTP-03/HTTP-10: GET parameters that do not form a request are 400 without data."""
    response = await get(client, params, accept=accept)
    assert response.status_code == 400, response.text
    payload = body_of(response)
    assert payload["errors"] and "data" not in payload


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_operation_name_selects_the_operation(client: httpx.AsyncClient, method: str) -> None:
    """``operationName`` picks one operation of several."""
    query = "query A { a: hello } query B { b: __typename }"
    if method == "GET":
        response = await get(client, {"query": query, "operationName": "B"})
    else:
        response = await post(client, {"query": query, "operationName": "B"})
    assert response.status_code == 200, response.text
    assert body_of(response) == {"data": {"b": "Query"}}


@pytest.mark.parametrize("operation_name", [None, "C"], ids=["ambiguous", "unknown"])
async def test_operation_not_identified(
    client: httpx.AsyncClient, operation_name: str | None
) -> None:
    """HTTP-10/15: an ambiguous or unknown operation: 200+errors (json), 400 no data (gr+json)."""
    body = {"query": "query A { a: hello } query B { b: hello }", "operationName": operation_name}
    legacy = await post(client, body, accept=JSON)
    assert legacy.status_code == 200, legacy.text
    assert body_of(legacy)["errors"]
    strict = await post(client, body, accept=GR)
    assert strict.status_code == 400, strict.text
    payload = body_of(strict)
    assert payload["errors"] and "data" not in payload


# ---- HTTP-04/05: methods and content types --------------------------------


@pytest.mark.parametrize("accept", [None, JSON, GR])
async def test_mutation_over_get_is_405_and_not_run(
    client: httpx.AsyncClient, probe: Probe, accept: str | None
) -> None:
    """HTTP-04: a mutation over GET is 405 with ``Allow: POST`` and never executes."""
    response = await get(client, {"query": "mutation { bump }"}, accept=accept)
    assert response.status_code == 405, response.text
    assert response.headers.get("allow") == "POST"
    assert "data" not in body_of(response)
    assert probe.mutations == 0


async def test_mutation_over_post_runs(client: httpx.AsyncClient, probe: Probe) -> None:
    """HTTP-01: mutations run over POST (the counterpart of the GET refusal)."""
    response = await post(client, {"query": "mutation { bump }"})
    assert response.status_code == 200, response.text
    assert body_of(response) == {"data": {"bump": 1}}
    assert probe.mutations == 1


async def test_mutation_over_get_without_mutation_type(start_server: Callable[..., Any]) -> None:
    """HTTP-A10 on a schema with no Mutation type: 4xx (a validation error)."""
    server = await start_server(app=countdown_app)
    async with open_client(server) as http:
        response = await get(http, {"query": "mutation { __typename }"}, accept=GR)
    assert 400 <= response.status_code <= 499, response.text
    assert "data" not in body_of(response)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_other_methods_are_405(client: httpx.AsyncClient, method: str) -> None:
    """HTTP-10: an unsupported method is 405 with an ``Allow`` header."""
    response = await client.request(
        method, "/api", content=encode(TYPENAME), headers={"content-type": JSON}
    )
    assert response.status_code == 405, response.text
    allowed = {part.strip() for part in response.headers.get("allow", "").split(",")}
    assert {"GET", "POST"} <= allowed


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/graphql",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
)
async def test_missing_or_unsupported_content_type_is_415(
    client: httpx.AsyncClient, probe: Probe, content_type: str | None
) -> None:
    """HTTP-05: POST without Content-Type or with an unsupported one is 415, not run."""
    response = await post(client, {"query": "mutation { bump }"}, content_type=content_type)
    assert response.status_code == 415, response.text
    assert body_of(response)["errors"]
    assert probe.mutations == 0


async def test_content_type_parameters_and_case(client: httpx.AsyncClient) -> None:
    """HTTP-02: ``application/json`` is recognised with parameters and in any case."""
    for content_type in ("application/json;charset=UTF-8", "Application/JSON"):
        response = await post(client, {"query": "{ hello }"}, content_type=content_type)
        assert response.status_code == 200, (content_type, response.text)


# ---- HTTP-06/07/11: media types -------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (f"{GR}, {JSON};q=0.9", GR),
        (f"{JSON}, {GR};q=0.5", JSON),
        (f"{JSON};q=0.5, {GR}", GR),
        (f"text/html, {GR}", GR),
        ("text/html, application/*;q=0.2", JSON),
        (f"{GR};q=0, {JSON}", JSON),
    ],
)
async def test_accept_highest_priority_wins(
    client: httpx.AsyncClient, accept: str, expected: str
) -> None:
    """HTTP-07: the supported type with the highest priority is used."""
    response = await post(client, {"query": "{ hello }"}, accept=accept)
    assert response.status_code == 200, response.text
    assert_graphql_content_type(response, expected)


@pytest.mark.parametrize(
    "accept", ["text/html", "application/xml, text/plain", f"{JSON};q=0", "image/*"]
)
async def test_unacceptable_accept_is_406(
    client: httpx.AsyncClient, probe: Probe, accept: str
) -> None:
    """HTTP-07/10/11: nothing acceptable is 406, never labelled graphql-response+json."""
    response = await post(client, {"query": "mutation { bump }"}, accept=accept)
    assert response.status_code == 406, response.text
    assert response.headers.get("content-type")
    assert media_of(response) != GR
    assert probe.mutations == 0


# ---- HTTP-08/09/12/14: results ---------------------------------------------


@pytest.mark.parametrize("accept", [JSON, GR])
async def test_field_error_with_data_is_2xx(client: httpx.AsyncClient, accept: str) -> None:
    """HTTP-08: non-null ``data`` with field ``errors`` is still a 2xx."""
    response = await post(client, {"query": "{ hello fail }"}, accept=accept)
    assert 200 <= response.status_code <= 299, response.text
    payload = body_of(response)
    assert payload["data"] == {"hello": "Hello", "fail": None}
    assert payload["errors"][0]["path"] == ["fail"]
    assert payload["errors"][0]["message"] == "resolver failed"


@pytest.mark.parametrize("accept", [JSON, GR])
async def test_invalid_mutation_is_not_executed(
    client: httpx.AsyncClient, probe: Probe, accept: str
) -> None:
    """HTTP-12: a request that fails validation never runs."""
    response = await post(client, {"query": "mutation { bump nosuchfield }"}, accept=accept)
    assert response.status_code == (400 if accept == GR else 200), response.text
    assert body_of(response)["errors"]
    assert probe.mutations == 0


@pytest.mark.parametrize("accept", [None, JSON, GR])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_subscription_over_http_names_websocket_paths(
    client: httpx.AsyncClient, method: str, accept: str | None
) -> None:
    """HTTP-14: a subscription over HTTP is 400 and points at the WebSocket paths."""
    query = "subscription { countdown(to: 1) }"
    if method == "GET":
        response = await get(client, {"query": query}, accept=accept)
    else:
        response = await post(client, {"query": query}, accept=accept)
    assert response.status_code == 400, response.text
    payload = body_of(response)
    assert "data" not in payload
    message = payload["errors"][0]["message"]
    for path in WS_PATHS:
        assert path in message, message


# ---- HTTP-10: sizes --------------------------------------------------------


async def test_body_over_one_mebibyte_is_413(http_server: Server) -> None:
    """HTTP-10: a body larger than 1 MiB is 413; one just under is served."""
    limit = http_server.config.max_message_size
    assert limit == 1 << 20
    base = len(encode({"query": "{ hello }", "pad": ""}))
    async with open_client(http_server) as http:
        under = await post(http, {"query": "{ hello }", "pad": "x" * (limit - base)})
        assert under.status_code == 200, under.text[:200]
        over = await post(http, {"query": "{ hello }", "pad": "x" * (limit - base + 1)})
        assert over.status_code == 413, over.text[:200]
        assert over.headers.get("content-type")
        assert "data" not in body_of(over)
        after = await post(http, {"query": "{ hello }"})
        assert after.status_code == 200, after.text


async def test_oversized_request_head_is_431(client: httpx.AsyncClient) -> None:
    """HTTP-10: request headers that are too large get 431, not a dropped connection."""
    try:
        response = await post(client, {"query": "{ hello }"}, headers={"x-big": "a" * 200_000})
    except httpx.RemoteProtocolError as error:
        pytest.fail(f"server dropped the connection without a response: {error!r}")
    assert response.status_code == 431, response.text


# ---- HTTP-13: authentication ----------------------------------------------


async def authenticate(ctx: Context) -> str:
    """Accept ``Authorization: Bearer good`` only; the user is ``alice``."""
    if ctx.headers.get("authorization") != "Bearer good":
        raise AuthError("Invalid token")
    return "alice"


@pytest.fixture
async def auth_server(start_server: Callable[..., Any], probe: Probe) -> Server:
    return await start_server(app=make_app(probe, authenticate=authenticate))


@pytest.mark.parametrize("accept", [None, GR])
@pytest.mark.parametrize("query", ["{ hello }", "mutation { bump }", "{ __typename }"])
async def test_auth_error_is_401_with_www_authenticate(
    auth_server: Server, probe: Probe, accept: str | None, query: str
) -> None:
    """The authenticate hook refusing is 401 with WWW-Authenticate, whatever the body."""
    async with open_client(auth_server) as http:
        response = await post(http, {"query": query}, accept=accept)
        wrong = await post(
            http, {"query": query}, accept=accept, headers={"authorization": "Bearer bad"}
        )
    for refused in (response, wrong):
        assert refused.status_code == 401, refused.text
        assert refused.headers.get("www-authenticate")
        payload = body_of(refused)
        assert payload["errors"][0]["message"] == "Invalid token"
        assert "data" not in payload
    assert probe.mutations == 0


async def test_authenticated_request_sees_auth(auth_server: Server) -> None:
    """What the hook returned reaches resolvers as ``ctx.auth``."""
    async with open_client(auth_server) as http:
        response = await post(
            http, {"query": "{ whoami }"}, headers={"authorization": "Bearer good"}
        )
    assert response.status_code == 200, response.text
    assert body_of(response) == {"data": {"whoami": "alice"}}


async def test_failing_authenticate_hook_is_500_and_server_survives(
    start_server: Callable[..., Any], probe: Probe
) -> None:
    """A hook bug (not AuthError) is a 500 for that request; the server keeps serving."""

    async def broken(ctx: Context) -> str:
        if ctx.headers.get("x-boom"):
            raise RuntimeError("hook bug")
        return "ok"

    server = await start_server(app=make_app(probe, authenticate=broken))
    async with open_client(server) as http:
        try:
            failed = await post(http, {"query": "{ hello }"}, headers={"x-boom": "1"})
        except httpx.TransportError as error:
            pytest.fail(f"no response to a request whose hook raised: {error!r}")
        assert failed.status_code == 500, failed.text
    async with open_client(server) as http:
        again = await post(http, {"query": "{ hello }"})
    assert again.status_code == 200, again.text


async def test_unencodable_result_is_5xx_and_server_survives(
    start_server: Callable[..., Any],
) -> None:
    """A resolver value JSON cannot encode fails that request only (5xx), not the server."""
    app = App(
        "scalar Blob\ntype Query { blob: Blob, hello: String! }",
        resolvers={"Query": {"blob": lambda _r, _i: object(), "hello": lambda _r, _i: "Hello"}},
    )
    server = await start_server(app=app)
    async with open_client(server) as http:
        try:
            failed = await post(http, {"query": "{ blob }"})
        except httpx.TransportError as error:
            pytest.fail(f"no response to a request whose result cannot be encoded: {error!r}")
        assert 500 <= failed.status_code <= 599, failed.text
    async with open_client(server) as http:
        again = await post(http, {"query": "{ hello }"})
    assert again.status_code == 200, again.text


# ---- other routes -----------------------------------------------------------


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.headers.get("content-type")
    assert body_of(response) == {"status": "ok"}


async def test_readyz_follows_the_apps_readiness_and_the_drain(
    start_server: Callable[..., Any], probe: Probe
) -> None:
    """``/readyz`` is what a load balancer asks: 503 with the app's reason (its
    broker is down) or while draining; ``/healthz`` (liveness) stays 200."""
    reason: list[str | None] = [None]
    server = await start_server(app=make_app(probe, readiness=lambda: reason[0]))
    async with open_client(server) as http:
        ready = await http.get("/readyz")
        assert (ready.status_code, body_of(ready)) == (200, {"status": "ready"})
        head = await http.head("/readyz")
        assert (head.status_code, head.content) == (200, b"")
        wrong = await http.post("/readyz")
        assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET, HEAD")

        reason[0] = "broker reconnecting"
        down = await http.get("/readyz")
        assert down.status_code == 503 and down.headers["retry-after"] == "1"
        assert body_of(down) == {"status": "not ready", "reason": "broker reconnecting"}
        assert (await http.get("/healthz")).status_code == 200

        reason[0] = None
        server.state.shutdown()
        draining = await http.get("/readyz")
        assert draining.status_code == 503
        assert body_of(draining) == {"status": "not ready", "reason": "shutting down"}
        assert (await http.get("/healthz")).status_code == 200


async def test_metrics_reports_live_connections_and_operations(
    http_server: Server, client: httpx.AsyncClient
) -> None:
    """``/metrics`` is Prometheus text whose gauges follow live WebSockets."""

    def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    idle = await client.get("/metrics")
    assert idle.status_code == 200
    assert media_of(idle) == "text/plain"
    assert samples(idle.text)[("meshsub_connections", ())] == 0
    assert "meshsub_active_operations" in idle.text

    async with open_raw_client(http_server.port, subprotocols=[TRANSPORT]) as ws:
        assert (await ws.init())["type"] == "connection_ack"
        # A gate that never opens keeps the operation alive while /metrics is read.
        await ws.send({"id": "1", "type": "subscribe", "payload": {"query": "{ gate(n: 1000) }"}})
        with trio.fail_after(SOON):
            await http_server.metrics.wait_for(lambda m: m.live_operations == 1)
        busy = await client.get("/metrics")
        found = samples(busy.text)
        assert found[("meshsub_connections", ())] == 1
        key = ("meshsub_active_operations", (("protocol", TRANSPORT),))
        assert found[key] == 1


@pytest.mark.parametrize("path", ["/graphiql", "/playground"])
async def test_playground_serves_html(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert media_of(response) == "text/html"
    assert "<html" in response.text.lower()
    assert "graphiql" in response.text.lower()
    assert json.dumps(MESHERY) in response.text


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_plain_request_to_websocket_only_path_is_426(
    client: httpx.AsyncClient, method: str
) -> None:
    """``/ws`` speaks only WebSocket: a plain request is 426 Upgrade Required."""
    response = await client.request(method, "/ws")
    assert response.status_code == 426, response.text
    assert "websocket" in response.headers.get("upgrade", "").lower()
    assert response.headers.get("content-type")


@pytest.mark.parametrize("path", ["/nope", "/api/", "/api/system/graphql", "/healthz/x"])
async def test_unknown_path_is_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404, response.text
    assert response.headers.get("content-type")


async def test_meshery_path_also_upgrades_to_websocket(http_server: Server) -> None:
    """``/graphql`` serves HTTP and WebSocket subscriptions."""
    async with open_raw_client(http_server.port, path=MESHERY, subprotocols=[TRANSPORT]) as ws:
        assert ws.subprotocol == TRANSPORT
        assert (await ws.init())["type"] == "connection_ack"
        subscribe = {"query": "subscription { countdown(to: 2) }"}
        await ws.send({"id": "c", "type": "subscribe", "payload": subscribe})
        messages = await ws.receive_until("complete")
    assert [m["payload"]["data"]["countdown"] for m in messages[:-1]] == [2, 1, 0]
    assert messages[-1] == {"id": "c", "type": "complete"}


async def test_http_only_path_refuses_websocket_upgrade(http_server: Server) -> None:
    """``/api`` is HTTP only: an upgrade there is refused."""
    with pytest.raises(ConnectionRejected) as refused:
        async with open_raw_client(http_server.port, path="/api", subprotocols=[TRANSPORT]):
            pass
    assert refused.value.status_code == 404


# ---- connections: keep-alive and concurrency ---------------------------------


async def test_keep_alive_serves_several_requests_on_one_connection(
    client: httpx.AsyncClient,
) -> None:
    """HTTP/1.1 keep-alive: requests of all kinds share one TCP connection."""
    requests: list[Callable[[], Any]] = [
        lambda: post(client, {"query": "{ hello }"}),
        lambda: get(client, {"query": "{ hello }"}),
        lambda: post(client, b'{ "not a JSON'),
        lambda: post(client, {"query": "{"}, accept=GR),
        lambda: client.get("/healthz"),
        lambda: client.get("/metrics"),
        lambda: client.get("/nope"),
        lambda: post(client, {"query": "{ hello }"}, content_type="text/plain"),
        lambda: post(client, {"query": "{ hello }"}, path=MESHERY),
    ]
    statuses, ports = [], []
    for request in requests:
        response = await request()
        statuses.append(response.status_code)
        ports.append(client_port(response))  # read at once, while the connection is open
    assert statuses == [200, 200, 400, 400, 200, 200, 404, 415, 200]
    assert ports[0] is not None and ports == [ports[0]] * len(requests), ports


async def test_head_request_keeps_the_connection(client: httpx.AsyncClient) -> None:
    """A HEAD answered without a body leaves the connection usable for the next request."""
    ports = []
    for method in ("GET", "HEAD", "GET"):
        response = await client.request(method, "/healthz")
        assert response.status_code == 200, method
        ports.append(client_port(response))
    assert ports[0] is not None and ports == [ports[0]] * 3, f"HEAD closed the connection: {ports}"


async def test_sixty_parallel_requests_are_all_answered(http_server: Server, probe: Probe) -> None:
    """60 requests in flight at once: every resolver waits for all 60, so all run together."""
    parallel = 60
    results: list[httpx.Response] = []

    async def one(http: httpx.AsyncClient) -> None:
        results.append(await post(http, {"query": f"{{ gate(n: {parallel}) }}"}))

    limits = httpx.Limits(max_connections=parallel)
    async with open_client(http_server, limits=limits) as http:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(parallel):
                    nursery.start_soon(one, http)
    assert len(results) == parallel
    assert all(r.status_code == 200 for r in results)
    assert all(body_of(r) == {"data": {"gate": parallel}} for r in results)
