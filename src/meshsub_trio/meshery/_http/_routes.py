"""Plain HTTP endpoints beside GraphQL, so scripts and services can feed and read.

* ``POST /api/system/events``: publish one event (a JSON object) to the caller,
  or to ``user_id`` when the caller may (see :func:`make_routes`); answers 201
  with the stored ``Event``.
* ``GET /api/system/events``: the caller's retained history, newest first,
  paged like Meshery's REST (``page`` from 0, ``pagesize`` default 25 or
  ``all``; filters ``severity``/``category``/``action`` as a JSON array or a
  comma list, ``status``, ``search`` in the description, ``order=asc``).
  With ``after=CURSOR`` it is a long-poll instead (:mod:`._long_poll`).
* ``POST /api/meshsub/publish``: apply a batch of model changes, one message
  or ``{"messages": [...]}``, in order. Each is ``{type, op, <payload>}``
  with the type/op names of :mod:`._model`'s messages, but the payload is
  the matching GraphQL mutation input (``K8sContextInput``, ``PatternInput``,
  ...), checked by the same coercion and applied as the caller: no more than
  the mutations allow, without writing GraphQL. Server-owned fields (ids of
  records' owners, timestamps) are never taken from the client. As with the
  mutations, ids name the caller's own records: deleting another user's is
  "no design X" (400), exactly as deleting one that does not exist, and a
  context's ``connection_id`` must be one the caller holds (else "no
  connection X"; see :mod:`.._model._connections`). Deleting a context
  clears its cluster's objects only when the caller feeds the cluster.

A change over a storage limit (:mod:`._quota`: one object's size, a user's
stored bytes or record count) answers 413 with the limit in the message, and
stores nothing of that message.

Requests are authenticated by the server first (401 in token mode without a
valid token). POST bodies must be ``application/json``: a browser cannot send
that cross-origin without a CORS preflight, which this server never grants,
so a page the user happens to visit cannot publish with their cookie.
Events use the GraphQL ``Event`` shape (camelCase), not meshkit's JSON.

On a replicated model a POST answers once its changes reached the shared bus,
so an acknowledged change survives this process crashing. During a broker
outage changes wait in the broker's bounded queue (the POST answers at once);
once that queue is full a POST gets 503 "broker unavailable, change not
accepted" (with ``Retry-After``) and nothing of that message was applied.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from graphql import GraphQLError, GraphQLInputObjectType, GraphQLNonNull, GraphQLSchema
from graphql.utilities import coerce_input_value, validate_input_value

from ..._app import HttpHandler, HttpRequest, HttpResponse
from ..._encoding import JSONDecodeError, dumps, loads
from .._auth import Authenticator, User, current_user
from .._model._connections import own_context_fields
from .._model._model import Model
from .._model._quota import StorageLimitExceeded
from .._replication._replication import BrokerUnavailable
from ._event_input import EVENT_TARGET, RouteError, event_fields, events_page
from ._long_poll import long_poll

EVENTS_PATH = "/api/system/events"
PUBLISH_PATH = "/api/meshsub/publish"
MAX_MESSAGES = 1000

#: Applies one publish message's payload as the given user id.
Applier = Callable[[str, str, Mapping[str, Any]], Any]


def _json(status: int, value: Any, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    return HttpResponse(status, dumps(value), headers=headers or [])


def _read_object(request: HttpRequest) -> dict[str, Any]:
    content_type = request.context.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise RouteError(415, "send the body as JSON with Content-Type: application/json")
    try:
        body = loads(request.body)
    except JSONDecodeError as error:
        raise RouteError(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise RouteError(400, "the body must be a JSON object")
    return body


def _coerce(schema: GraphQLSchema, type_name: str, value: Any, key: str) -> dict[str, Any]:
    """Check *value* exactly as the matching mutation's input argument is checked."""
    input_type = schema.get_type(type_name)
    assert isinstance(input_type, GraphQLInputObjectType), type_name
    if not isinstance(value, dict):
        raise RouteError(400, f"{key} must be a JSON object ({type_name})")
    problems: list[str] = []

    def collect(error: GraphQLError, path: list[str | int]) -> None:
        where = ".".join(str(part) for part in [key, *path])
        problems.append(f"{where}: {error.message}")

    validate_input_value(value, GraphQLNonNull(input_type), collect)
    if problems:
        raise RouteError(400, "; ".join(problems))
    return dict(coerce_input_value(value, GraphQLNonNull(input_type)))


def _id_of(message: Mapping[str, Any]) -> str:
    value = message.get("id")
    if not isinstance(value, str) or not value:
        raise RouteError(400, "id must be a non-empty string")
    return value


def make_routes(
    model: Model,
    authenticator: Authenticator,
    schema: GraphQLSchema,
    *,
    publishers: Collection[str] = (),
    may_feed_cluster: Callable[[str], bool] = lambda _user_id: True,
) -> dict[str, HttpHandler]:
    """The ``http_routes=`` mapping for the Meshery app.

    Who may publish an event to whom: every caller to itself; a caller whose
    user id is in *publishers* (a service account; read at each request, so
    the host may change it) also to any user the authenticator knows.
    Anything else is 403, and an unknown target 404, so a token can never be
    used to write into another user's feed by accident.
    """

    def target_of(caller: User, wanted: Any) -> str:
        if wanted is None or wanted == caller.id:
            return caller.id
        if not isinstance(wanted, str) or not wanted:
            raise RouteError(400, "user_id must be a non-empty string")
        if caller.id not in publishers:
            raise RouteError(403, f"user {caller.id} may only publish events to itself")
        if wanted not in {user.id for user in authenticator.users()}:
            raise RouteError(404, f"no user {wanted}")
        return wanted

    def publish_event(caller: User, body: Mapping[str, Any]) -> dict[str, Any]:
        wanted = [body[key] for key in EVENT_TARGET if body.get(key) is not None]
        if len(set(map(str, wanted))) > 1:
            raise RouteError(400, "user_id and userID disagree")
        target = target_of(caller, wanted[0] if wanted else None)
        fields = {k: v for k, v in body.items() if k not in EVENT_TARGET}
        return model.publish_event(target, event_fields(fields))

    async def events(request: HttpRequest) -> HttpResponse:
        caller = current_user(request.context)
        if request.method == "GET" and "after" in request.query:
            return await long_poll(model, caller.id, request.query)
        if request.method == "GET":
            return _json(200, events_page(model.events_of(caller.id), request.query))
        if request.method == "POST":
            event = publish_event(caller, _read_object(request))
            await model.flush()
            return _json(201, event)
        raise RouteError(405, f"{request.method} is not allowed here; use GET or POST")

    def upsert(type_name: str, call: Callable[[str, dict[str, Any]], Any]) -> Applier:
        return lambda user, key, message: call(
            user, _coerce(schema, type_name, message.get(key), key)
        )

    def delete(call: Callable[[str, str], bool], what: str) -> Applier:
        def run(user: str, _key: str, message: Mapping[str, Any]) -> bool:
            item_id = _id_of(message)
            if not call(user, item_id):  # another user's, or nobody's: the same answer
                raise RouteError(400, f"no {what} {item_id}")
            return True

        return run

    def cluster_object(call: Callable[[str, str, str | None, str], bool]) -> Applier:
        def run(_user: str, key: str, message: Mapping[str, Any]) -> bool:
            obj = _coerce(schema, "ClusterResourceInput", message.get(key), key)
            return call(obj["kubernetes_server_id"], obj["kind"], obj.get("namespace"), obj["name"])

        return run

    def meshmodel(_user: str, key: str, message: Mapping[str, Any]) -> bool:
        entry = message.get(key)
        entity = entry.get("entity") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entity not in ("components", "relationships"):
            raise RouteError(400, 'entry.entity must be "components" or "relationships"')
        rest = {k: v for k, v in entry.items() if k != "entity"}
        fields = _coerce(schema, "MeshModelEntityInput", rest, key)
        return model.register_meshmodel(
            entity, fields["model"], fields["version"], fields.get("name")
        )

    def controller(_user: str, key: str, message: Mapping[str, Any]) -> Any:
        item = _coerce(schema, "ControllerStatusInput", message.get(key), key)
        return model.set_controller_status(
            item["connectionID"], item["controller"], item["status"], item.get("version")
        )

    def upsert_context(user: str, fields: dict[str, Any]) -> Any:
        if not may_feed_cluster(user):  # as addK8sContext: a user names only its own
            fields = own_context_fields(model, fields, user)
        return model.upsert_context(fields, owner=user)

    def delete_context(user: str, context_id: str) -> bool:
        # As deleteK8sContext: only the cluster's feed clears its cluster's objects.
        return model.delete_context(context_id, user, clear_cluster=may_feed_cluster(user))

    #: (type, op) -> (payload key, how to apply it as a given user id).
    appliers: dict[tuple[str, str], tuple[str, Applier]] = {
        ("k8s_context", "upsert"): ("context", upsert("K8sContextInput", upsert_context)),
        ("k8s_context", "delete"): (
            "id",
            delete(delete_context, "Kubernetes context"),
        ),
        ("controller", "upsert"): ("item", controller),
        ("cluster_object", "upsert"): ("object", cluster_object(model.add_object)),
        ("cluster_object", "delete"): ("object", cluster_object(model.delete_object)),
        ("pattern", "upsert"): ("pattern", upsert("PatternInput", model.save_pattern)),
        ("pattern", "delete"): ("id", delete(model.delete_pattern, "design")),
        ("filter", "upsert"): ("filter", upsert("FilterInput", model.save_filter)),
        ("filter", "delete"): ("id", delete(model.delete_filter, "filter")),
        ("perf_profile", "upsert"): (
            "profile",
            upsert("PerformanceProfileInput", model.save_profile),
        ),
        ("perf_profile", "delete"): ("id", delete(model.delete_profile, "performance profile")),
        ("perf_result", "append"): (
            "result",
            upsert("PerfResultInput", lambda u, v: model.record_result(u, v["profileID"], v)),
        ),
        ("meshmodel", "register"): ("entry", meshmodel),
    }

    def apply(caller: User, message: Mapping[str, Any]) -> Any:
        kind, op = message.get("type"), message.get("op")
        if (kind, op) == ("event", "append"):
            event = message.get("event")
            if not isinstance(event, dict):
                raise RouteError(400, "event must be a JSON object")
            target = {"user_id": message["user_id"]} if "user_id" in message else {}
            return publish_event(caller, {**event, **target})
        found = appliers.get((str(kind), str(op)))
        if found is None:
            known = ", ".join(f"{t}/{o}" for t, o in [("event", "append"), *appliers])
            raise RouteError(400, f"unsupported type/op {kind!r}/{op!r}; known: {known}")
        key, run = found
        if kind in _CLUSTER_KINDS and not may_feed_cluster(caller.id):
            raise RouteError(
                403,
                f"user {caller.id} may not change shared cluster state ({kind}); "
                "only service accounts may",
            )
        return run(caller.id, key, message)

    async def publish(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            raise RouteError(405, f"{request.method} is not allowed here; use POST")
        caller = current_user(request.context)
        body = _read_object(request)
        messages = body.get("messages", [body])
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise RouteError(400, "messages must be a list of JSON objects")
        if len(messages) > MAX_MESSAGES:
            raise RouteError(400, f"at most {MAX_MESSAGES} messages per request")
        results = []
        for index, message in enumerate(messages):
            # Applied in order; the first bad one stops the batch and says where.
            try:
                results.append(apply(caller, message))
            except (RouteError, ValueError, BrokerUnavailable) as error:
                status = _status_of(error)
                problem = {"message": f"message {index}: {error}", "index": index}
                await model.flush()  # what was applied before it is kept, so make it durable
                return _json(
                    status,
                    {"errors": [problem], "applied": index, "results": results},
                    _retry_after(status),
                )
        await model.flush()
        return _json(200, {"applied": len(results), "results": results})

    return {EVENTS_PATH: _guarded(events), PUBLISH_PATH: _guarded(publish)}


#: Message types that write the shared cluster state (see ``CLUSTER_FEEDS``).
_CLUSTER_KINDS = frozenset({"controller", "cluster_object", "meshmodel"})


def _status_of(error: Exception) -> int:
    if isinstance(error, RouteError):
        return error.status
    if isinstance(error, StorageLimitExceeded):
        return 413
    return 503 if isinstance(error, BrokerUnavailable) else 400


def _retry_after(status: int) -> list[tuple[str, str]]:
    return [("retry-after", "1")] if status == 503 else []


def _guarded(handler: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> HttpHandler:
    """Turn RouteError/ValueError/BrokerUnavailable into JSON error responses
    (405 gets ``Allow``, 503 ``Retry-After``)."""

    async def route(request: HttpRequest) -> HttpResponse:
        try:
            return await handler(request)
        except (RouteError, ValueError, BrokerUnavailable) as error:
            status = _status_of(error)
            headers = _retry_after(status)
            if status == 405:
                allow = "POST" if request.path == PUBLISH_PATH else "GET, POST"
                headers.append(("allow", allow))
            return _json(status, {"errors": [{"message": str(error)}]}, headers)

    return route
