"""The simulator: a live cluster under Trio's mock clock, reproducible from a seed."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from meshsub_trio import Context
from meshsub_trio.meshery import LOCAL_USER, MesheryApp, Model, Simulator, User, create_app
from meshsub_trio.meshery._model._records import SEVERITIES

from .conftest import PAGE, Collector, RecordingBroker, StreamerRun, counting_ids, ticking_clock


def open_stream(
    nursery: trio.Nursery,
    app: MesheryApp,
    field: str,
    args: dict[str, Any],
    user: User = LOCAL_USER,
) -> StreamerRun:
    """Start a subscription the way the server does: through the App's subscribe hook."""
    info = SimpleNamespace(context=Context(auth=user))
    source = app.schema.subscription_type.fields[field].subscribe(None, info, **args)
    run = StreamerRun(Collector())

    async def body() -> None:
        with run.scope:
            await source.streamer.fn(source.context, source.args, run.collector.emit)

    nursery.start_soon(body)
    return run


async def wait_until(run: StreamerRun, done: Callable[[list[Any]], bool], timeout: float) -> float:
    """Wait (in mock time) until *done(items)* holds for a non-empty list of
    emissions; return the time it became true."""
    with trio.fail_after(timeout):
        while not (run.items and done(run.items)):
            await run.wait_for(len(run.items) + 1, timeout)
    return trio.current_time()


def controller_state(deltas: list[list[dict[str, Any]]]) -> dict[tuple[str, str], Any]:
    """Merge the full list and the single-item deltas, as a client does."""
    state: dict[tuple[str, str], Any] = {}
    for frame in deltas:
        for item in frame:
            state[(item["connectionID"], item["controller"])] = (item["status"], item["version"])
    return state


async def test_a_new_subscriber_sees_activity_within_a_second(autojump_clock: Any) -> None:
    app = create_app(seed=1)
    async with app.lifespan(), trio.open_nursery() as nursery:
        start = trio.current_time()
        events = open_stream(nursery, app, "subscribeEvents", {})
        contexts = open_stream(nursery, app, "subscribeK8sContext", {"selector": PAGE})
        first_event = await wait_until(events, bool, timeout=5)
        first_context = await wait_until(contexts, lambda i: i[-1]["total_count"] >= 1, 5)
        assert first_event - start <= 1.0
        assert first_context - start <= 1.0
        nursery.cancel_scope.cancel()


async def test_controllers_roll_out_to_running_and_connected(autojump_clock: Any) -> None:
    app = create_app(seed=2)
    async with app.lifespan(), trio.open_nursery() as nursery:
        start = trio.current_time()
        run = open_stream(nursery, app, "subscribeMesheryControllersStatus", {})

        def rolled_out(frames: list[Any]) -> bool:
            statuses = {k[1]: v[0] for k, v in controller_state(frames).items()}
            return statuses == {"OPERATOR": "RUNNING", "BROKER": "CONNECTED", "MESHSYNC": "RUNNING"}

        finished = await wait_until(run, rolled_out, timeout=10)
        assert 2.0 <= finished - start <= 3.0
        seen = [item["status"] for frame in run.items[1:] for item in frame]
        assert {"DEPLOYING", "DEPLOYED"} <= set(seen)
        assert all(len(frame) == 1 for frame in run.items[1:])
        assert all(v[1] for v in controller_state(run.items).values())  # versions known
        nursery.cancel_scope.cancel()


async def test_every_severity_reaches_the_local_user(autojump_clock: Any) -> None:
    app = create_app(seed=3)
    async with app.lifespan(), trio.open_nursery() as nursery:
        run = open_stream(nursery, app, "subscribeEvents", {})
        await wait_until(run, lambda e: {x["severity"] for x in e} >= set(SEVERITIES), 25)
        assert all(event["userID"] == LOCAL_USER.id for event in run.items)
        nursery.cancel_scope.cancel()


async def test_cluster_resources_appear_and_change(autojump_clock: Any) -> None:
    app = create_app(seed=4)
    async with app.lifespan(), trio.open_nursery() as nursery:
        contexts = open_stream(nursery, app, "subscribeK8sContext", {"selector": PAGE})
        await wait_until(contexts, lambda i: i[-1]["total_count"] >= 1, 5)
        cluster = contexts.items[-1]["contexts"][0]["kubernetes_server_id"]
        run = open_stream(
            nursery,
            app,
            "subscribeClusterResources",
            {"k8scontextIDs": [cluster], "namespace": "default"},
        )
        wanted = {"Pod", "Deployment", "ReplicaSet", "Service", "Namespace", "Node", "ConfigMap"}

        def kinds(frames: list[Any]) -> set[str]:
            return {r["kind"] for r in frames[-1]["resources"]} if frames else set()

        await wait_until(run, lambda f: kinds(f) >= wanted, timeout=10)
        settled = len(run.items)
        await wait_until(run, lambda f: len(f) > settled, timeout=10)  # churn keeps going
        nursery.cancel_scope.cancel()


async def test_second_cluster_perf_results_and_meshmodel(autojump_clock: Any) -> None:
    app = create_app(seed=5)
    async with app.lifespan(), trio.open_nursery() as nursery:
        contexts = open_stream(nursery, app, "subscribeK8sContext", {"selector": PAGE})
        summary = open_stream(
            nursery, app, "subscribeMeshModelSummary", {"selector": {"type": "components"}}
        )
        # The first profile is seeded before the app serves its first request.
        seeded = app.model.profiles()
        assert len(seeded) == 1, seeded
        profile_id = seeded[0]["id"]
        results = open_stream(
            nursery, app, "subscribePerfResults", {"selector": PAGE, "profileID": profile_id}
        )
        await wait_until(results, lambda r: len(r) >= 2, timeout=20)
        assert [page["total_count"] for page in results.items[:2]] == [1, 2]
        assert results.items[0]["results"][0]["runner_results"]["RunType"] == "HTTP"
        await wait_until(contexts, lambda i: i[-1]["total_count"] == 2, timeout=15)

        def versions(frames: list[Any]) -> int:
            return sum(c["count"] for c in frames[-1]["components"]) if frames else 0

        await wait_until(summary, lambda f: versions(f) >= 3, timeout=1)  # first batch
        await wait_until(summary, lambda f: versions(f) >= 6, timeout=20)  # more, later
        nursery.cancel_scope.cancel()


async def test_token_users_also_get_simulated_events(autojump_clock: Any) -> None:
    app = create_app(seed=6, tokens={"t": "alice-id"})
    alice = User("alice-id", "alice-id", "Meshery")
    async with app.lifespan(), trio.open_nursery() as nursery:
        run = open_stream(nursery, app, "subscribeEvents", {}, user=alice)
        await wait_until(run, bool, timeout=3)
        assert run.items[0]["userID"] == "alice-id"
        nursery.cancel_scope.cancel()


async def test_rate_scales_the_story(autojump_clock: Any) -> None:
    app = create_app(seed=2, rate=4.0)
    async with app.lifespan(), trio.open_nursery() as nursery:
        start = trio.current_time()
        run = open_stream(nursery, app, "subscribeMesheryControllersStatus", {})
        done = await wait_until(
            run, lambda f: ("RUNNING", "v0.8.2") in controller_state(f).values(), 5
        )
        assert 2.2 / 4 - 0.01 <= done - start <= 2.2 / 4 + 0.01
        nursery.cancel_scope.cancel()
    with pytest.raises(ValueError, match="rate"):
        create_app(rate=0)


async def test_leaving_the_lifespan_stops_the_simulator(autojump_clock: Any) -> None:
    app = create_app(seed=7)
    assert app.simulator is not None
    async with app.lifespan():
        await trio.sleep(3)
    steps = app.simulator.steps_run
    published = app.broker.published
    assert steps > 0
    await trio.sleep(30)
    assert app.simulator.steps_run == steps and app.broker.published == published


async def test_no_simulator_means_no_activity(autojump_clock: Any) -> None:
    app = create_app(simulator=False)
    assert app.simulator is None
    async with app.lifespan():
        await trio.sleep(30)
    assert app.broker.published == 0


# ---- determinism, without Trio ----------------------------------------------------


def story(seed: int, seconds: float = 30.0) -> list[tuple[str, Any]]:
    broker = RecordingBroker()
    model = Model(broker, now=ticking_clock(), new_id=counting_ids(), system_id="s")
    Simulator(model, owner=LOCAL_USER.id, seed=seed).advance(seconds)
    return broker.log


def test_same_seed_same_story() -> None:
    first = story(11)
    assert len(first) > 100
    assert story(11) == first


def test_different_seed_different_story() -> None:
    assert story(11) != story(12)


async def test_trio_run_follows_the_same_schedule_as_advance(autojump_clock: Any) -> None:
    broker = RecordingBroker()
    model = Model(broker, now=ticking_clock(), new_id=counting_ids(), system_id="s")
    simulator = Simulator(model, owner=LOCAL_USER.id, seed=11)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(simulator.run)
        await trio.sleep(29.999)  # just before advance's inclusive end
        nursery.cancel_scope.cancel()
    expected = story(11, 29.999)
    assert broker.log == expected


def test_create_app_seed_fixes_ids() -> None:
    def ids(app: MesheryApp) -> list[str]:
        assert app.simulator is not None
        app.simulator.advance(12)
        return [c["id"] for c in app.model.contexts()] + [
            e["id"] for e in app.model.events_of(LOCAL_USER.id)
        ]

    assert ids(create_app(seed=9)) == ids(create_app(seed=9))
    assert ids(create_app(seed=9)) != ids(create_app(seed=10))


def test_a_long_run_stays_bounded() -> None:
    broker = RecordingBroker()
    model = Model(broker)
    simulator = Simulator(model, owner=LOCAL_USER.id, seed=1)
    simulator.advance(3600)
    for context in model.contexts():
        pods = [o for o in model.objects(context["kubernetes_server_id"]) if o["kind"] == "Pod"]
        assert 0 < len(pods) <= 4 * 9
    assert len(model.events_of(LOCAL_USER.id)) == 1000
    assert len(model.contexts()) == 2


async def test_two_hosts_serving_one_app_share_one_simulator(autojump_clock: Any) -> None:
    app = create_app(seed=8)
    assert app.simulator is not None
    async with app.lifespan(), app.lifespan():
        await trio.sleep(4.95)  # off any step's due time
        assert app.simulator.running
    solo = create_app(seed=8)
    assert solo.simulator is not None
    solo.simulator.advance(4.95)
    assert app.simulator.steps_run == solo.simulator.steps_run
    assert not app.simulator.running
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app.simulator.run)
        await trio.sleep(1)
        with pytest.raises(RuntimeError, match="already running"):
            await app.simulator.run()
        nursery.cancel_scope.cancel()
