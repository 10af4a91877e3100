"""graphql-sse single connection mode under ``serve --workers 2``: one server, not two.

The reservation (PUT), the event stream (GET) and each operation (POST,
DELETE) are separate HTTP requests; here each is pinned to a chosen worker
(see :mod:`._sse_pinned_kit`), so every crossing is exercised on purpose: the
stream opened on the worker that did not reserve, operations posted to the
worker that holds the stream and to the one that does not, posted before the
stream opens, stopped from the other worker, and tokens refused alike on both.
"""

from __future__ import annotations

from pathlib import Path

import trio

from ._kit import EVENTS, PUBLISH, SOON, open_supervisor
from ._sse_pinned_kit import event_stream, operation, request

WORKERS = (0, 1)


async def reserve(supervisor: object, index: int) -> str:
    answer = await request(supervisor, index, "PUT", accept="text/plain")  # type: ignore[arg-type]
    assert answer.status == 201, answer
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    return answer.body.decode()


async def test_every_request_may_land_on_either_worker(tmp_path: Path) -> None:
    async with open_supervisor(tmp_path) as supervisor:
        for home, holder in ((0, 1), (1, 0), (0, 0)):
            other = 1 - holder
            token = await reserve(supervisor, home)
            async with event_stream(supervisor, holder, token) as stream:
                # A subscription posted where the stream is not, one where it is.
                for op_id, index in (("far", other), ("near", holder)):
                    posted = await request(
                        supervisor, index, "POST", token=token, body=operation(op_id, EVENTS)
                    )
                    assert posted.status == 202 and posted.body == b"", (op_id, posted)
                # Subscribed on the broker before the 202: a publish now reaches both.
                published = await request(
                    supervisor, other, "POST", token=token,
                    body=operation("pub", PUBLISH, {"d": f"from-{home}-{holder}"}),
                )  # fmt: skip
                assert published.status == 202, published
                seen: dict[str, list[str]] = {}
                with trio.fail_after(SOON):
                    while len(seen.get("far", [])) < 1 or len(seen.get("near", [])) < 1:
                        name, data = await stream.next_sse()
                        if name == "next" and data["id"] in ("far", "near"):
                            event = data["payload"]["data"]["subscribeEvents"]
                            seen.setdefault(data["id"], []).append(event["description"])
                assert seen == {
                    "far": [f"from-{home}-{holder}"],
                    "near": [f"from-{home}-{holder}"],
                }
                # Stopped from the worker without the stream, and from the one with it.
                for op_id, index in (("far", other), ("near", holder)):
                    stopped = await request(
                        supervisor, index, "DELETE", token=token,
                        target=f"/api/system/graphql/query?operationId={op_id}",
                    )  # fmt: skip
                    assert stopped.status == 200, (op_id, stopped)
                # A second stream on the token is refused by either worker.
                for index in WORKERS:
                    again = await request(
                        supervisor, index, "GET", token=token, accept="text/event-stream"
                    )
                    assert again.status == 409, (index, again)


async def test_operations_posted_before_the_stream_are_held_for_it(tmp_path: Path) -> None:
    async with open_supervisor(tmp_path) as supervisor:
        token = await reserve(supervisor, 0)
        for op_id, index in (("early-0", 0), ("early-1", 1)):
            posted = await request(
                supervisor, index, "POST", token=token, body=operation(op_id, "{ __typename }")
            )
            assert posted.status == 202, (op_id, posted)
        async with event_stream(supervisor, 1, token) as stream:
            done: set[str] = set()
            results = {}
            with trio.fail_after(SOON):
                while done != {"early-0", "early-1"}:
                    name, data = await stream.next_sse()
                    if name == "next":
                        results[data["id"]] = data["payload"]
                    elif name == "complete":
                        done.add(data["id"])
            assert results == {
                "early-0": {"data": {"__typename": "Query"}},
                "early-1": {"data": {"__typename": "Query"}},
            }


async def test_unknown_and_forged_tokens_read_alike_on_every_worker(tmp_path: Path) -> None:
    async with open_supervisor(tmp_path) as supervisor:
        real = await reserve(supervisor, 0)
        forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
        for token in ("nope", forged):
            for index in WORKERS:
                posted = await request(
                    supervisor, index, "POST", token=token, body=operation("x", "{ __typename }")
                )
                assert posted.status == 404, (token, index, posted)
                assert posted.json() == {"errors": [{"message": "Stream not found"}]}
                stopped = await request(
                    supervisor, index, "DELETE", token=token,
                    target="/api/system/graphql/query?operationId=x",
                )  # fmt: skip
                assert stopped.status == 404, (token, index, stopped)
        # A PUT carrying a live token is 409 wherever it lands (SSE-22).
        for index in WORKERS:
            again = await request(supervisor, index, "PUT", token=real, accept="text/plain")
            assert again.status == 409, (index, again)


async def test_the_operation_cap_counts_every_worker_s_posts(tmp_path: Path) -> None:
    async with open_supervisor(tmp_path, "--max-operations", "3") as supervisor:
        token = await reserve(supervisor, 0)

        async def post(index: int, op_id: str) -> int:
            body = operation(op_id, EVENTS)
            return (await request(supervisor, index, "POST", token=token, body=body)).status

        assert await post(1, "s1") == 202  # held by worker 0 until the stream opens
        async with event_stream(supervisor, 1, token):
            assert await post(0, "s2") == 202  # passed on to worker 1
            assert await post(1, "s3") == 202
            for index in WORKERS:
                refused = await request(
                    supervisor, index, "POST", token=token, body=operation("s4", EVENTS)
                )
                assert refused.status == 429, (index, refused)
                assert refused.json() == {"errors": [{"message": "Subscription limit reached"}]}
            stopped = await request(
                supervisor, 0, "DELETE", token=token,
                target="/api/system/graphql/query?operationId=s1",
            )  # fmt: skip
            assert stopped.status == 200
            with trio.fail_after(SOON):  # s1's cleanup frees its place
                while await post(0, "s4") != 202:
                    await trio.sleep(0.05)
