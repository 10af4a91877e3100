"""Replicas on one real nats-server, in one test process (each on its own connection).

What a real process would add here is only its startup; test_processes.py
covers that with three of them.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import trio

from meshsub_trio import ConnectionState, LogStream
from meshsub_trio.meshery import LOCAL_USER_ID, StorageLimits
from meshsub_trio.testing import NatsServer

from ._kit import (
    CONTEXTS,
    CONTROLLERS,
    EVENTS,
    SOON,
    Reader,
    check_events,
    descriptions,
    graphql,
    http_client,
    open_replica,
    post_event,
)

STATE_SUBSCRIPTIONS = {
    "contexts": CONTEXTS,
    "controllers": CONTROLLERS,
    "configuration": """subscription { subscribeConfiguration(
        patternSelector: {page: "0", pageSize: "50"}, filterSelector: {page: "0", pageSize: "50"}) {
        patterns { total_count patterns { id name pattern_file } }
        filters { total_count filters { id name } } } }""",
    "resources": """subscription { subscribeClusterResources(k8scontextIDs: ["cluster-a", "cluster-b"],
        namespace: "default") { resources { kind count } } }""",
    "meshmodel": """subscription { subscribeMeshModelSummary(selector: {type: "components"}) {
        components { name count } } }""",
}


def event(replica: Any, text: str) -> None:
    replica.app.model.publish_event(
        LOCAL_USER_ID, {"severity": "informational", "description": text}
    )


async def first_payloads(port: int, nursery: trio.Nursery) -> dict[str, Any]:
    readers = {name: Reader(query, name) for name, query in STATE_SUBSCRIPTIONS.items()}
    for reader in readers.values():
        await reader.start(nursery, port)
    for reader in readers.values():
        await reader.wait_count(1)
    return {name: reader.data()[0] for name, reader in readers.items()}


async def test_a_late_replica_serves_the_same_state(nats_server: NatsServer) -> None:
    async with open_replica(nats_server) as a, open_replica(nats_server) as b:
        for replica, cluster in ((a, "cluster-a"), (b, "cluster-b")):
            model = replica.app.model
            context = model.upsert_context(
                {"name": cluster, "server": f"https://{cluster}", "kubernetes_server_id": cluster},
                owner=LOCAL_USER_ID,
            )
            model.set_controller_status(context["connection_id"], "OPERATOR", "RUNNING", "v1")
            for name in ("web", "db"):
                model.add_object(cluster, "Pod", "default", f"{cluster}-{name}")
            model.add_object(cluster, "Namespace", "", "default")
            model.save_pattern(LOCAL_USER_ID, {"name": f"design on {cluster}", "pattern_file": "x"})
            model.register_meshmodel("components", "kubernetes", cluster, "Pod")
        # Two processes writing one record at once: both must end on the log's last write.
        shared = {"id": "shared-design", "pattern_file": "y"}
        a.app.model.save_pattern(LOCAL_USER_ID, {**shared, "name": "a's"})
        b.app.model.save_pattern(LOCAL_USER_ID, {**shared, "name": "b's"})
        await b.sync()
        await a.sync()
        async with open_replica(nats_server) as late, trio.open_nursery() as nursery:
            # No sync: a replica does not serve before it replayed the log.
            on_a = await first_payloads(a.port, nursery)
            assert on_a == await first_payloads(b.port, nursery)
            assert on_a == await first_payloads(late.port, nursery)
            assert on_a["contexts"]["subscribeK8sContext"]["total_count"] == 2
            assert len(on_a["resources"]["subscribeClusterResources"]["resources"]) == 2
            nursery.cancel_scope.cancel()


async def test_a_client_resumes_on_another_replica(nats_server: NatsServer) -> None:
    async with (
        open_replica(nats_server) as a,
        open_replica(nats_server) as b,
        trio.open_nursery() as nursery,
    ):
        published: list[str] = []

        def publish(count: int, start: int) -> None:
            for n in range(start, start + count):
                for name, replica in (("a", a), ("b", b)):
                    event(replica, f"{name}-{n}")
                    published.append(f"{name}-{n}")

        watcher, client = Reader(EVENTS, "watcher"), Reader(EVENTS, "client")
        await watcher.start(nursery, b.port, cursor="0")
        await client.start(nursery, a.port, cursor="0")
        publish(10, 0)
        await client.wait_count(20)
        nursery.cancel_scope.cancel()  # the client goes away (so does the watcher)
    async with (
        open_replica(nats_server) as a,
        open_replica(nats_server) as b,
        trio.open_nursery() as nursery,
    ):
        # Both replicas are new processes of the same service: the cursor still works.
        publish(10, 10)  # missed by the client
        await client.start(nursery, b.port, cursor=client.cursor)
        await client.wait_count(40)
        publish(5, 20)  # live after the switch
        await client.wait_count(50)
        fresh = Reader(EVENTS, "fresh")
        await fresh.start(nursery, a.port, cursor="0")
        await fresh.wait_count(50)
        check_events([fresh, client], published)
        assert b.app.replication is not None
        nursery.cancel_scope.cancel()


async def test_perf_results_resume_with_pages_as_of_each_result(nats_server: NatsServer) -> None:
    query = """subscription { subscribePerfResults(profileID: "PROFILE",
        selector: {page: "0", pageSize: "100", order: "created_at asc"}) {
        total_count results { name } } }"""
    async with (
        open_replica(nats_server) as a,
        open_replica(nats_server) as b,
        trio.open_nursery() as nursery,
        http_client(a.port) as http,
    ):
        profile = a.app.model.save_profile(LOCAL_USER_ID, {"name": "soak"})
        for n in range(3):
            a.app.model.record_result(LOCAL_USER_ID, profile["id"], {"name": f"run {n}"})
        await a.sync()
        reader = Reader(query.replace("PROFILE", profile["id"]))
        await reader.start(nursery, b.port, cursor="0")
        await reader.wait_count(3)
        pages = [data["subscribePerfResults"] for data in reader.data()]
        assert [page["total_count"] for page in pages] == [1, 2, 3]
        resumed = Reader(reader.query)
        await resumed.start(nursery, a.port, cursor=reader.items[0][0])
        mutation = (
            """mutation($input: PerfResultInput!) { recordPerfResult(input: $input) { name } }"""
        )
        reply = await graphql(http, mutation, input={"profileID": profile["id"], "name": "run 3"})
        assert reply["data"] == {"recordPerfResult": {"name": "run 3"}}
        await resumed.wait_count(3)
        assert [d["subscribePerfResults"]["total_count"] for d in resumed.data()] == [2, 3, 4]
        nursery.cancel_scope.cancel()


async def test_bad_and_expired_cursors_are_clear_errors(nats_server: NatsServer) -> None:
    """The stream keeps 30 messages and the replica's own history 4 KiB (about
    nine events): a cursor older than both is expired, clearly."""
    async with (
        open_replica(
            nats_server,
            log=LogStream(name="MESHERY", subjects=("meshery.>",), max_msgs=30, heartbeat=0.5),
            limits=StorageLimits(resume_log_bytes=4096),
        ) as a,
        trio.open_nursery() as nursery,
    ):
        early = Reader(EVENTS, "early")
        await early.start(nursery, a.port, cursor="0")
        for n in range(40):  # in chunks read as they go: the log keeps only 30
            event(a, f"a-{n}")
            if n % 10 == 9:
                await early.wait_count(n + 1)
        assert a.app.replication is not None and a.app.replication.gaps == 0
        expired = Reader(EVENTS, "expired")
        await expired.start(nursery, a.port, cursor=early.items[0][0])
        await expired.wait_closed()
        assert expired.items == []
        [error] = expired.error
        assert error["extensions"]["code"] == "CURSOR_EXPIRED"
        assert "resubscribe without a cursor" in error["message"]
        for bad in ("yesterday", "99999"):  # not a cursor; ahead of the whole log
            reader = Reader(EVENTS, bad)
            await reader.start(nursery, a.port, cursor=bad)
            await reader.wait_closed()
            assert reader.error[0]["extensions"]["code"] == "CURSOR_INVALID", reader.error
            assert "resubscribe without a cursor" in reader.error[0]["message"]
        nursery.cancel_scope.cancel()


async def test_nats_outage_clients_stay_broker_status_follows(nats_server: NatsServer) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_replica(nats_server))
        b = await stack.enter_async_context(open_replica(nats_server, max_pending=30))
        nursery = await stack.enter_async_context(trio.open_nursery())
        http_b = await stack.enter_async_context(http_client(b.port))
        a.app.model.upsert_context({"name": "kind", "server": "https://k"}, owner=LOCAL_USER_ID)
        await a.sync()
        await b.sync()
        status = Reader(CONTROLLERS, "status")
        await status.start(nursery, b.port)
        await status.wait_count(1)
        assert broker_status(status) == "CONNECTED"
        readers = [Reader(EVENTS, f"r{i}") for i in range(4)]
        for index, reader in enumerate(readers):
            await reader.start(nursery, (a, b)[index % 2].port, cursor="0")
        published = []
        for n in range(10):
            for name, replica in (("a", a), ("b", b)):
                event(replica, f"{name}-{n}")
                published.append(f"{name}-{n}")
        for reader in readers:
            await reader.wait_count(20)

        await nats_server.stop()
        await status.wait(lambda r: broker_status(r) == "UNKOWN", "BROKER UNKOWN")
        with trio.fail_after(SOON):
            while b.broker.state is ConnectionState.CONNECTED:
                await b.broker.wait_state_change(ConnectionState.CONNECTED)
        # During the outage b refuses changes at once (an answer of 201 must
        # mean the log has it: queued changes were lost if b stopped).
        refused = await post_event(http_b, "b-refused")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "broker unavailable, change not accepted" in refused.json()["errors"][0]["message"]
        reply = await graphql(
            http_b, 'mutation { savePattern(input: {name: "x", pattern_file: "y"}) { id } }'
        )
        assert reply["errors"][0]["extensions"]["code"] == "BROKER_UNAVAILABLE"
        assert "broker unavailable, change not accepted" in reply["errors"][0]["message"]
        assert b.app.model.patterns_of(LOCAL_USER_ID) == []  # refused means not applied
        assert all(not reader.closed for reader in [*readers, status])  # clients stay

        await nats_server.start()
        await status.wait(lambda r: broker_status(r) == "CONNECTED", "BROKER CONNECTED again")
        with trio.fail_after(SOON):
            await a.broker.wait_connected()  # a's own link too: changes need it now
        for n in range(10, 15):
            event(a, f"a-{n}")
            published.append(f"a-{n}")
        for reader in readers:
            await reader.wait_count(len(published))
        check_events(readers, published)
        assert "b-refused" not in descriptions(readers[0])
        statuses = [item["status"] for _, data in status.items
                    for item in data["subscribeMesheryControllersStatus"]
                    if item["controller"] == "BROKER"]  # fmt: skip
        assert statuses == ["CONNECTED", "UNKOWN", "CONNECTED"]
        nursery.cancel_scope.cancel()


def broker_status(reader: Reader) -> str | None:
    """The BROKER controller's latest status as this subscriber was told."""
    latest = None
    for _, data in reader.items:
        for item in data["subscribeMesheryControllersStatus"]:
            if item["controller"] == "BROKER":
                latest = item["status"]
    return latest


async def test_a_change_the_log_refuses_is_an_error_not_a_success(nats_server: NatsServer) -> None:
    # An answer that says "saved" must mean the log has the change: here the
    # stream refuses large messages (as a full disk refuses every one), and
    # the mutation says so instead of answering with the saved pattern.
    async with AsyncExitStack() as stack:
        replica = await stack.enter_async_context(open_replica(nats_server))
        http = await stack.enter_async_context(http_client(replica.port))
        js: Any = replica.broker._js
        info = await replica.broker._aio(js.stream_info)("MESHERY")
        await replica.broker._aio(js.update_stream)(replace(info.config, max_msg_size=2048))
        small = await graphql(
            http, 'mutation { savePattern(input: {name: "small", pattern_file: "y"}) { id } }'
        )
        assert "errors" not in small, small
        big = "x" * 4096
        reply = await graphql(
            http,
            f'mutation {{ savePattern(input: {{name: "big", pattern_file: "{big}"}}) {{ id }} }}',
        )
        [error] = reply["errors"]
        assert error["extensions"]["code"] == "BROKER_UNAVAILABLE"
        assert "the log did not store it" in error["message"], error
        response = await post_event(http, "after")  # the log takes changes again
        assert response.status_code == 201, response.text
