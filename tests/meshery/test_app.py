"""The wiring: create_app, the importable app, and documents run by the real engine."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import pytest
import trio

from meshsub_trio import App, Context, Overflow
from meshsub_trio._app import StreamerSource
from meshsub_trio._execution import Engine, Prepared
from meshsub_trio.meshery import LOCAL_USER, MesheryApp, create_app

from .conftest import Collector, settle
from .test_documents import UI_SUBSCRIPTIONS
from .test_streamers import VALID_ARGS


def test_module_level_app_is_ready_and_idle() -> None:
    """``meshsub_trio.meshery:app`` imports cheaply: built on first use, nothing running.

    Checked in a fresh interpreter, since other tests may serve the shared app.
    """
    script = (
        "import meshsub_trio.meshery as m\n"
        "assert 'app' not in vars(m)  # importing builds nothing\n"
        "assert isinstance(m.app, m.MesheryApp) and m.app.auth_mode == 'local'\n"
        "assert m.app.simulator is not None and m.app.simulator.steps_run == 0\n"
        "assert m.app.broker.published == 0\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    import meshsub_trio.meshery as meshery

    assert isinstance(meshery.app, App) and isinstance(meshery.app, MesheryApp)


def test_create_app_signature() -> None:
    parameters = inspect.signature(create_app).parameters
    assert list(parameters) == [
        "broker", "simulator", "rate", "seed", "tokens", "local_user", "data_dir", "durability",
        "limits",
    ]  # fmt: skip
    assert parameters["data_dir"].default == ":memory:"
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert parameters["simulator"].default is True and parameters["rate"].default == 1.0


def test_injected_broker_carries_the_model_messages() -> None:
    from meshsub_trio import MemoryBroker

    broker = MemoryBroker()
    app = create_app(broker=broker, simulator=False)
    assert app.broker is broker and app.model.broker is broker
    app.model.publish_event(LOCAL_USER.id, {"severity": "debug", "description": "x"})
    assert broker.published == 1


EXPECTED_POLICIES = {
    "subscribeEvents": Overflow.DROP_OLDEST,
    "subscribePerfResults": Overflow.DROP_OLDEST,
    "subscribeMesheryControllersStatus": Overflow.CLOSE,
    "subscribePerfProfiles": Overflow.COALESCE,
    "subscribeConfiguration": Overflow.COALESCE,
    "subscribeClusterResources": Overflow.COALESCE,
    "subscribeK8sContext": Overflow.COALESCE,
    "subscribeMeshModelSummary": Overflow.COALESCE,
}


@pytest.mark.parametrize("field", sorted(EXPECTED_POLICIES))
def test_every_subscription_is_a_streamer_with_its_policy(field: str) -> None:
    app = create_app(simulator=False)
    info: Any = type("Info", (), {"context": Context(auth=LOCAL_USER)})()
    source = app.schema.subscription_type.fields[field].subscribe(None, info, **VALID_ARGS[field])
    assert isinstance(source, StreamerSource)
    assert source.streamer.policy is EXPECTED_POLICIES[field]
    assert (source.streamer.capacity == 1) is (source.streamer.policy is Overflow.COALESCE)


async def run_document(app: MesheryApp, name: str, drive: Any, count: int) -> list[dict[str, Any]]:
    """Prepare a UI document with the engine, run its streamer, execute each emission."""
    engine = Engine(app)
    document, variables = UI_SUBSCRIPTIONS[name]
    prepared = engine.prepare(document, variables, None, Context(auth=LOCAL_USER))
    assert isinstance(prepared, Prepared), prepared
    source = await engine.open_source(prepared)
    assert isinstance(source, StreamerSource)
    collector = Collector()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source.streamer.fn, source.context, source.args, collector.emit)
        await settle()
        drive()
        await collector.wait_for(count)
        nursery.cancel_scope.cancel()
    results = [await engine.execute_event(prepared, value) for value in collector.items]
    assert all(result.errors is None for result in results), [r.errors for r in results]
    return [result.data for result in results]


async def test_aliased_configuration_document_through_the_engine() -> None:
    app = create_app(simulator=False)
    data = await run_document(
        app,
        "configuration",
        lambda: app.model.save_pattern(LOCAL_USER.id, {"name": "d", "pattern_file": "x"}),
        count=2,
    )
    assert data[0]["configuration"]["patterns"]["total_count"] == 0
    assert data[1]["configuration"]["patterns"]["patterns"][0]["name"] == "d"
    assert data[1]["configuration"]["applications"] is None


async def test_events_document_through_the_engine() -> None:
    app = create_app(simulator=False)
    data = await run_document(
        app,
        "events",
        lambda: app.model.publish_event(
            LOCAL_USER.id, {"severity": "informational", "description": "hello"}
        ),
        count=1,
    )
    event = data[0]["subscribeEvents"]
    assert event["description"] == "hello" and event["severity"] == "informational"
    assert event["createdAt"].endswith("Z")


async def test_controllers_document_with_variables_through_the_engine() -> None:
    app = create_app(simulator=False)
    app.model.upsert_context({"name": "k", "server": "s", "connection_id": "c-1"}, owner="u")
    data = await run_document(
        app,
        "controllers",
        lambda: app.model.set_controller_status("c-1", "BROKER", "UNKOWN"),
        count=2,
    )
    assert len(data[0]["subscribeMesheryControllersStatus"]) == 3
    assert data[1]["subscribeMesheryControllersStatus"] == [
        {"connectionID": "c-1", "controller": "BROKER", "status": "UNKOWN", "version": ""}
    ]
