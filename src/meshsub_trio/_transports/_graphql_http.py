"""GraphQL over HTTP: GET and POST, JSON and graphql-response+json.

Status codes follow the rules the graphql-http audits check: with
``application/graphql-response+json`` a request that cannot execute (parse,
validation or variable errors) is a 400 without ``data``; with
``application/json`` a well-formed request always gets 200 and its errors.
Mutations over GET get 405 (``Allow: POST``). A subscription is streamed when
the client accepts a streaming format (SSE is routed before this module;
Apollo's multipart is decided here, see :func:`answer_or_stream`); otherwise
it is refused with a 400 that names the WebSocket endpoint and the streaming
Accept values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from graphql import OperationType

from .._app import AuthError, Context
from .._core._state import ServerState
from .._encoding import JSONDecodeError, dumps, loads
from .._execution import Prepared, format_errors, format_result
from .._wire import OperationRequested
from ._requests import make_context

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"


@dataclass
class HttpResponse:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def choose_media_type(accept: str | None) -> str | None:
    """The response type for an ``Accept`` header, or None (406)."""
    if not accept:
        return APPLICATION_JSON
    best: tuple[float, int, str] | None = None
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media == GRAPHQL_RESPONSE_JSON:
            chosen = GRAPHQL_RESPONSE_JSON
        elif media in (APPLICATION_JSON, "application/*", "*/*"):
            chosen = APPLICATION_JSON
        else:
            continue
        if quality > 0 and (best is None or (quality, -position) > (best[0], best[1])):
            best = (quality, -position, chosen)
    return best[2] if best else None


def _error_body(message: str) -> bytes:
    return dumps({"errors": [{"message": message}]})


def _params_from_query_string(query_string: bytes) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if value == "":
            continue  # an empty parameter means absent
        if key in ("variables", "extensions"):
            try:
                params[key] = loads(value)
            except JSONDecodeError:
                raise _BadRequest(f"{key} must be JSON-encoded") from None
        else:
            params[key] = value
    return params


def _params_from_body(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    content_type = headers.get("content-type")
    if not content_type:
        raise _BadRequest("Missing Content-Type: send application/json", 415)
    media = content_type.split(";")[0].strip().lower()
    if media != APPLICATION_JSON:
        raise _BadRequest(f"Unsupported Content-Type {media!r}: send application/json", 415)
    if not body:
        raise _BadRequest("Missing body")
    try:
        params = loads(body)
    except JSONDecodeError:
        raise _BadRequest("Body is not valid JSON") from None
    if not isinstance(params, dict):
        raise _BadRequest("Body must be a JSON object (batching is not supported)")
    return params


def _check_params(params: dict[str, Any]) -> tuple[str, dict[str, Any] | None, str | None]:
    query = params.get("query")
    if not isinstance(query, str):
        raise _BadRequest("query must be a string" if "query" in params else "Missing query")
    variables = params.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise _BadRequest("variables must be an object")
    operation_name = params.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise _BadRequest("operationName must be a string")
    extensions = params.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise _BadRequest("extensions must be an object")
    return query, variables, operation_name


async def authenticate(state: ServerState, context: Context) -> str | None:
    """Run the app's ``authenticate`` hook on *context*: None if let in, else why not."""
    if state.app.authenticate is None:
        return None
    try:
        context.auth = await state.app.authenticate(context)
    except AuthError as refusal:
        return str(refusal) or "Unauthorized"
    return None


async def handle_graphql_http(
    state: ServerState,
    method: str,
    headers: dict[str, str],
    query_string: bytes,
    body: bytes,
    context: Context | None = None,
) -> HttpResponse:
    """Answer one GraphQL-over-HTTP request.

    A host that authenticated the request from its headers (before reading
    its body, as the ASGI app does) passes that *context*; without one the
    request is authenticated here.
    """
    answer = await _answer(state, method, headers, query_string, body, context, multipart=False)
    assert isinstance(answer, HttpResponse)  # only a multipart request is streamed
    return answer


async def answer_or_stream(
    state: ServerState,
    method: str,
    headers: dict[str, str],
    query_string: bytes,
    body: bytes,
    context: Context,
) -> HttpResponse | OperationRequested:
    """A request whose ``Accept`` takes multipart subscriptions (MP-01).

    A subscription is to be streamed: the answer is the operation to run.
    So is any operation when the client takes no JSON at all (one part).
    Everything else is answered as plain GraphQL over HTTP (MP-08): queries
    and mutations in JSON, and what cannot run (unreadable, invalid) with
    its status, before any stream starts.
    """
    return await _answer(state, method, headers, query_string, body, context, multipart=True)


async def _answer(
    state: ServerState,
    method: str,
    headers: dict[str, str],
    query_string: bytes,
    body: bytes,
    context: Context | None,
    *,
    multipart: bool,
) -> HttpResponse | OperationRequested:
    media_type = choose_media_type(headers.get("accept"))
    only_multipart = multipart and media_type is None
    if only_multipart:
        media_type = APPLICATION_JSON  # for answers that are not a stream
    if media_type is None:
        return HttpResponse(
            406,
            _error_body(f"Accept {GRAPHQL_RESPONSE_JSON} or {APPLICATION_JSON}"),
            [("content-type", "application/json; charset=utf-8")],
        )
    content_type = [("content-type", f"{media_type}; charset=utf-8")]
    strict = media_type == GRAPHQL_RESPONSE_JSON

    def reply(
        status: int, payload: dict[str, Any], extra: tuple[tuple[str, str], ...] = ()
    ) -> HttpResponse:
        return HttpResponse(status, dumps(payload), [*content_type, *extra])

    if method not in ("GET", "POST"):
        return reply(405, {"errors": [{"message": "Use GET or POST"}]}, (("allow", "GET, POST"),))
    try:
        params = (
            _params_from_query_string(query_string)
            if method == "GET"
            else _params_from_body(headers, body)
        )
        query, variables, operation_name = _check_params(params)
    except _BadRequest as problem:
        return reply(problem.status, {"errors": [{"message": str(problem)}]})
    extensions = params.get("extensions")

    if context is None:
        context = make_context(headers, "http")
        refused = await authenticate(state, context)
        if refused is not None:
            return reply(
                401,
                {"errors": [{"message": refused}]},
                (("www-authenticate", "Bearer"),),
            )

    label = "HTTP request"
    prepared = await state.engine.prepare_async(query, variables, operation_name, context, label)
    if not isinstance(prepared, Prepared):
        return reply(400 if strict else 200, {"errors": format_errors(prepared, label)})
    try:
        if prepared.kind is OperationType.MUTATION and method == "GET":
            allow = (("allow", "POST"),)
            return reply(405, {"errors": [{"message": "Mutations need POST"}]}, allow)
        if multipart and (only_multipart or prepared.kind is OperationType.SUBSCRIPTION):
            return OperationRequested("multipart", query, variables, operation_name, extensions)
        if prepared.kind is OperationType.SUBSCRIPTION:
            paths = ", ".join(state.config.ws_paths)
            message = (
                f"Subscriptions are not served over plain HTTP: open a WebSocket at {paths}, "
                'or stream with Accept: text/event-stream or multipart/mixed;subscriptionSpec="1.0"'
            )
            return reply(400, {"errors": [{"message": message}]})
        result = await state.engine.execute(prepared)
        return reply(200, format_result(result, label))
    finally:
        prepared.release()


#: A request that cannot be read as GraphQL parameters (status 400, 415).
BadRequest = _BadRequest
#: The checks every GraphQL request's parameters pass, for the other HTTP paths (SSE).
check_params = _check_params


def read_params(
    method: str, headers: dict[str, str], query_string: bytes, body: bytes
) -> dict[str, Any]:
    """A GET's (URL) or POST's (JSON body) GraphQL parameters; raises :class:`BadRequest`."""
    if method == "GET":
        return _params_from_query_string(query_string)
    return _params_from_body(headers, body)
