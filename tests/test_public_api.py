"""The public API is held: each public module exports exactly its frozen list.

Like trio's ``test_exports``: ``__all__`` names every public thing a module
offers, each of them exists, none is private, and the expected names are
written out here, so adding or removing one is a conscious change (edit the
list in the same commit). Everything users, tests, scripts and examples need
comes from these modules; the ``_``-prefixed ones are free to change.
"""

from __future__ import annotations

import importlib
import types
import typing

import pytest

EXPECTED: dict[str, set[str]] = {
    "meshsub_trio": {
        "ASGIApp",
        "App",
        "AuthError",
        "Broker",
        "BrokerClosed",
        "BufferClosed",
        "BufferOverflow",
        "CloseCode",
        "Config",
        "ConnectionState",
        "Context",
        "CursorError",
        "CursorExpired",
        "Delivery",
        "Emit",
        "EventBuffer",
        "EventStream",
        "HttpRequest",
        "HttpResponse",
        "LocalProtocolError",
        "LogStream",
        "MemoryBroker",
        "Metrics",
        "NatsBroker",
        "NatsOptions",
        "Overflow",
        "PublishQueueFull",
        "Server",
        "ServerSentEvent",
        "StreamRefused",
        "Streamer",
        "StreamerFn",
        "__version__",
        "serve",
        "shielded_cleanup",
        "streamer",
        "subject_of",
    },
    "meshsub_trio.brokers": {
        "Broker",
        "BrokerClosed",
        "ConnectionState",
        "CursorError",
        "CursorExpired",
        "Delivery",
        "LogBroker",
        "LogStream",
        "MemoryBroker",
        "NatsBroker",
        "NatsOptions",
        "NoResponders",
        "NotStored",
        "PublishQueueFull",
        "Request",
    },
    "meshsub_trio.interceptors": {
        "AuditLog",
        "Filter",
        "Gate",
        "Interceptor",
        "OperationInfo",
        "OperationOutcome",
        "PerUserLimit",
        "Reason",
        "Refused",
        "SKIP",
        "Throttle",
        "ValueInterceptor",
    },
    "meshsub_trio.testing": {
        "BufferingProxy",
        "ClientClosed",
        "Direction",
        "DirectionFaults",
        "DropDirection",
        "DropMethod",
        "FaultProxy",
        "GraphQLWSClient",
        "LEGACY_WS",
        "Namespace",
        "NatsServer",
        "NatsServerError",
        "NetnsError",
        "NetnsPair",
        "ProxiedConnection",
        "ResponseHolder",
        "TRANSPORT_WS",
        "live_tasks",
        "open_buffering_proxy",
        "open_fault_proxy",
        "open_graphql_ws",
        "open_nats_server",
        "task_names",
    },
    "meshsub_trio.testing.pytest_plugin": {
        "fault_proxy",
        "graphql_ws",
        "meshsub_app",
        "meshsub_config",
        "meshsub_server",
        "nats_server",
    },
    "meshsub_trio.meshery": {
        "Authenticator",
        "BadUserInput",
        "BrokerUnavailable",
        "DEFAULT_PORT",
        "GRAPHQL_PATH",
        "LOCAL_USER",
        "LOCAL_USER_ID",
        "MesheryApp",
        "Model",
        "PLAYGROUND_PATH",
        "ReplicatedBus",
        "STREAM_NAME",
        "STREAM_SUBJECTS",
        "Simulator",
        "StorageLimitExceeded",
        "StorageLimits",
        "StoreCorrupt",
        "StoreError",
        "StoreLocked",
        "StoreTooNew",
        "StoreUnavailable",
        "StoreUnreadable",
        "User",
        "app",
        "create_app",
        "default_data_dir",
        "log_stream",
        "schema_sdl",
        "topics",
    },
    "meshsub_trio.client": {
        "AuthRefused",
        "CLOSE_CODES",
        "Client",
        "ClientClosed",
        "ClientError",
        "Connected",
        "Connecting",
        "CursorLost",
        "Disconnect",
        "Disconnected",
        "GaveUp",
        "NetworkGone",
        "Notice",
        "OperationError",
        "OutcomeUnknown",
        "Overflow",
        "Restarted",
        "ResultError",
        "RetryPolicy",
        "ServerRejected",
        "Subscription",
        "SubscriptionOverflow",
        "TRANSPORTS",
        "TooManySubscriptions",
        "TransportChanged",
        "Verdict",
        "close_verdict",
        "describe",
        "open_client",
        "status_verdict",
    },
}

#: The pytest plugin imports helpers to build its fixtures; only the fixtures
#: are its API, so it is exempt from "every public-looking name is exported".
IMPLEMENTATION_IMPORTS_ALLOWED = {"meshsub_trio.testing.pytest_plugin"}

MODULES = sorted(EXPECTED)


def _plumbing(module: types.ModuleType, name: str) -> bool:
    """Submodules, ``from __future__`` features and ``typing`` helpers are no exports."""
    value = getattr(module, name)
    return (
        isinstance(value, types.ModuleType)
        or type(value).__module__ == "__future__"
        or getattr(typing, name, None) is value
    )


@pytest.mark.parametrize("name", MODULES)
def test_all_is_the_frozen_list(name: str) -> None:
    module = importlib.import_module(name)
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice"
    assert set(module.__all__) == EXPECTED[name]


@pytest.mark.parametrize("name", MODULES)
def test_every_name_in_all_exists(name: str) -> None:
    module = importlib.import_module(name)
    missing = [export for export in module.__all__ if not hasattr(module, export)]
    assert missing == []


@pytest.mark.parametrize("name", MODULES)
def test_nothing_private_is_exported(name: str) -> None:
    module = importlib.import_module(name)
    private = [
        export
        for export in module.__all__
        if export.startswith("_") and not (export.startswith("__") and export.endswith("__"))
    ]
    assert private == []


@pytest.mark.parametrize("name", sorted(set(MODULES) - IMPLEMENTATION_IMPORTS_ALLOWED))
def test_all_lists_everything_the_module_offers(name: str) -> None:
    module = importlib.import_module(name)
    public = {attr for attr in dir(module) if not attr.startswith("_")}
    unlisted = sorted(attr for attr in public - set(module.__all__) if not _plumbing(module, attr))
    assert unlisted == []


def test_the_pytest_plugin_exports_its_fixtures() -> None:
    plugin = importlib.import_module("meshsub_trio.testing.pytest_plugin")
    fixtures = {
        attr
        for attr in dir(plugin)
        if not attr.startswith("_") and type(getattr(plugin, attr)).__name__.startswith("Fixture")
    }
    assert fixtures == set(plugin.__all__)


def test_the_nats_broker_is_imported_lazily() -> None:
    """nats-py stays optional: the public modules import it only on first use."""
    import subprocess
    import sys

    code = (
        "import sys, meshsub_trio, meshsub_trio.brokers\n"
        "assert 'nats' not in sys.modules, 'nats imported eagerly'\n"
        "meshsub_trio.brokers.NatsBroker\n"
        "assert 'nats' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_what_meshery_deployments_rely_on_stays() -> None:
    """Meshery's endpoint, playground, port and JetStream stream live in its package
    now (none in the core), with the values existing clients and data use."""
    from meshsub_trio import Config, LogStream
    from meshsub_trio.meshery import (
        DEFAULT_PORT,
        GRAPHQL_PATH,
        PLAYGROUND_PATH,
        STREAM_NAME,
        STREAM_SUBJECTS,
        create_app,
        log_stream,
    )

    assert (GRAPHQL_PATH, PLAYGROUND_PATH) == (
        "/api/system/graphql/query",
        "/api/system/graphql/playground",
    )
    assert (DEFAULT_PORT, STREAM_NAME, STREAM_SUBJECTS) == (9081, "MESHERY", ("meshery.>",))
    stream = log_stream(heartbeat=0.5)
    assert (stream.name, stream.subjects, stream.heartbeat) == ("MESHERY", ("meshery.>",), 0.5)
    assert LogStream.under("meshery", heartbeat=0.5) == stream
    assert (LogStream().name, LogStream().subjects) == ("MESHSUB", ("meshsub.>",))
    app = create_app(simulator=False)
    served = Config().serving(app.graphql_paths, app.playground_paths)
    assert served.ws_paths == ("/ws", GRAPHQL_PATH)
    assert served.http_paths == ("/api", GRAPHQL_PATH)
    assert served.playground_paths == (PLAYGROUND_PATH, "/playground")
