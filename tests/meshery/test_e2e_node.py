"""The npm ``graphql-ws`` client (the one Meshery's UI ships) against a real server.

Each test runs js/meshery_ui.mjs with a spec (documents, auth) and asserts on
the JSON lines it prints. The packages are the locked ones in
tests/interop/js; the script imports them from there.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import trio

from meshsub_trio import Server
from meshsub_trio.meshery import create_app

from ..interop.conftest import (
    INSTALL_HINT,
    NODE_MODULES,
    NodeRun,
    NodeSession,
    _installed_mismatches,
    cli_server,
    node_session,
    wait_idle,
)
from .test_e2e_documents import (
    UI_DOCUMENTS,
    UiDocument,
    bounded,
    check,
    drive,
    page_filter,
    seed,
    when_live,
)

pytestmark = pytest.mark.node

SCRIPT = str(Path(__file__).parent / "js" / "meshery_ui.mjs")
MESHERY_PATH = "/api/system/graphql/query"


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary with the locked packages installed; fails (never skips) if not."""
    binary = shutil.which("node")
    if binary is None:
        pytest.fail(f"node is not on PATH: install Node.js >= 20, then {INSTALL_HINT}")
    if problems := _installed_mismatches():
        pytest.fail(f"{NODE_MODULES}: {'; '.join(problems)}: {INSTALL_HINT}")
    return binary


def url_of(server: Server | str) -> str:
    base = server if isinstance(server, str) else server.url
    return base.replace("http://", "ws://") + MESHERY_PATH


def spec(docs: list[UiDocument], **auth: Any) -> str:
    payload = [{"name": d.name, "payload": d.request(), "take": d.take} for d in docs]
    return json.dumps({"docs": payload, **auth})


def data_by_name(run: NodeRun) -> dict[str, list[dict[str, Any]]]:
    """Each document's results, checking none carried errors."""
    received: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in run.named("next"):
        assert "errors" not in event["payload"], str(run)
        received[event["name"]].append(event["payload"]["data"])
    return received


async def wait_initial(session: NodeSession, docs: list[UiDocument]) -> None:
    """Read results until every snapshot (and the controllers' full list) is in."""
    wanted = {doc.name: doc.initial for doc in docs if doc.initial}
    counts: dict[str, int] = defaultdict(int)
    while any(counts[name] < n for name, n in wanted.items()):
        event = await session.expect("next")
        counts[event["name"]] += 1


@bounded()
async def test_every_ui_subscription(node: str, start_server: Any) -> None:
    app = create_app(simulator=False, seed=3)
    seed(app.model)
    server = await start_server(app=app)
    docs = list(UI_DOCUMENTS.values())

    async with node_session(node, SCRIPT, url_of(server), "story", spec(docs)) as session:
        await wait_initial(session, docs)
        await when_live(server, len(docs))
        drive(app.model)

    run = session.run
    run.assert_ok()
    assert [e["protocol"] for e in run.named("connected")] == ["graphql-transport-ws"], str(run)
    received = data_by_name(run)
    for doc in docs:
        check(doc.name, received[doc.name])
    await wait_idle(server)


@bounded()
async def test_events_reach_only_their_user(node: str, start_server: Any) -> None:
    """Token mode, two users: alice sends her token the way Meshery's docs say
    (cookies), bob the way the third-party docs say (connectionParams)."""
    app = create_app(simulator=False, tokens={"alice-token": "alice", "bob-token": "bob"})
    server = await start_server(app=app)
    docs = [UI_DOCUMENTS["events"]]
    alice = spec(docs, headers={"cookie": "meshery-provider=Meshery; token=alice-token"})
    bob = spec(docs, connectionParams={"Authorization": "Bearer bob-token"})

    async with (
        node_session(node, SCRIPT, url_of(server), "story", alice) as for_alice,
        node_session(node, SCRIPT, url_of(server), "story", bob) as for_bob,
    ):
        await when_live(server, 2)
        app.model.publish_event("bob", {"severity": "critical", "description": "for bob"})
        app.model.publish_event("alice", {"severity": "error", "description": "for alice"})

    for session, user in ((for_alice, "alice"), (for_bob, "bob")):
        session.run.assert_ok()
        (data,) = data_by_name(session.run)["events"]
        assert (data["event"]["userID"], data["event"]["description"]) == (user, f"for {user}")
    await wait_idle(server)


@bounded()
async def test_bad_token_is_closed_with_4403(node: str, start_server: Any) -> None:
    app = create_app(simulator=False, tokens={"alice-token": "alice"})
    server = await start_server(app=app)
    bad = spec([UI_DOCUMENTS["events"]], connectionParams={"Authorization": "Bearer nope"})

    async with node_session(node, SCRIPT, url_of(server), "story", bad) as session:
        pass

    run = session.run
    run.assert_ok()
    assert [e["code"] for e in run.named("closed")] == [4403], str(run)
    assert not run.named("next") and not run.named("connected"), str(run)
    await wait_idle(server)


@bounded()
async def test_bad_paging_is_a_clear_graphql_error(node: str, start_server: Any) -> None:
    server = await start_server(app=create_app(simulator=False))
    profiles = UI_DOCUMENTS["perf_profiles"]
    bad = UiDocument(**{**vars(profiles), "variables": {"selector": page_filter(pageSize="ten")}})

    async with node_session(node, SCRIPT, url_of(server), "story", spec([bad])) as session:
        pass

    run = session.run
    run.assert_ok()
    (error,) = run.named("error")
    (problem,) = error["errors"]
    assert "pageSize" in problem["message"] and "'ten'" in problem["message"], str(run)
    assert problem["extensions"]["code"] == "BAD_USER_INPUT", str(run)
    await wait_idle(server)


@bounded()
async def test_new_user_cli_serves_live_data_within_5s(node: str) -> None:
    """What a newcomer does first: ``meshsub-trio serve --port 0 --seed 1`` (the
    Meshery app, simulator on), then a graphql-ws client on the two busiest fields."""
    controllers = UiDocument(**{**vars(UI_DOCUMENTS["controllers"]), "variables": {}})
    events = UI_DOCUMENTS["events"]
    async with cli_server("--seed", "1") as cli:
        with trio.fail_after(5):
            async with node_session(
                node, SCRIPT, url_of(cli.url), "story", spec([controllers, events])
            ) as session:
                pass
    run = session.run
    run.assert_ok()
    received = data_by_name(run)
    full, delta = (value["subscribeMesheryControllersStatus"] for value in received["controllers"])
    for item in full + delta:
        assert set(item) == {"connectionID", "controller", "status", "version"}
        assert item["controller"] in ("BROKER", "OPERATOR", "MESHSYNC")
    assert len(delta) == 1, str(run)
    (data,) = received["events"]
    assert data["event"]["userID"] and data["event"]["description"], str(run)
    assert run.named("ended")[0]["ms"] < 5000, str(run)
    assert cli.returncode == 0, cli.output.decode()
