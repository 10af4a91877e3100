"""The eight Meshery subscriptions, as streamers over the model's broker topics.

Two delivery shapes, chosen per field:

* State-shaped (configuration, k8s contexts, cluster resources, MeshModel
  summary, perf profiles): a broker message only means "something changed";
  the streamer re-renders from the model and emits only when the rendering
  differs from what it sent last. Both the broker buffer and the outbox use
  ``Overflow.COALESCE``: a slow subscriber skips intermediate states and gets
  the latest one, which is all a state view needs.
* Event-shaped (events, perf results): each message is one emission, in
  order. Both buffers are bounded ``Overflow.DROP_OLDEST`` and count what
  they drop, so a slow subscriber loses the oldest events, never the newest,
  and never stalls the publisher. Each emission carries its log sequence as
  a resume cursor; a subscription that sends one back replays what came
  after it, then continues live (:mod:`._cursors`). State-shaped
  subscriptions ignore cursors: they resend the current state anyway.

Controller status is state sent as deltas (the full list, then one
single-item array per changed controller), of the caller's own contexts'
connections only, unless the caller feeds the cluster (a service account; the
local user): see :mod:`.._model._connections`. The connections a user holds
are read again at each wake-up, so one whose last context of theirs is gone
is in no later delta. Coalescing deltas would silently
lose another controller's change, so its outbox uses ``Overflow.CLOSE``: a
subscriber that falls that far behind gets an error and resubscribes for a
fresh full list. Its broker buffer coalesces, since each wake-up re-diffs the
whole current state.

Every streamer subscribes to the broker *before* reading its snapshot, so no
change between the two is missed.

Owned records are the caller's own (``ctx.auth``): configuration, K8s
contexts, perf profiles and perf results render the caller's records only,
and a perf result on a profile id the caller shares with another user (ids
are per owner) is skipped unless it is the caller's, live or replayed from a
cursor. Another user's change wakes a state streamer, which re-renders the
same page and sends nothing. Context ids given to the cluster resources
stream name the caller's contexts only; cluster ids are shared state.

Sharing (cohorts keyed on document, variables, operation name and
``ctx.auth``, the frozen :class:`User`) is set only where a late joiner gets
exactly what a fresh, unshared subscription would get:

* ``"state"`` for configuration, k8s contexts, cluster resources and the
  MeshModel summary: each emission is the complete current rendering and a
  fresh subscription starts with that rendering, which is the cohort's
  latest value (its ``last``). Those that read ``ctx.auth`` (everything
  owned) share only within one user: the cohort key includes it.
* ``"events"`` for events and perf results: no snapshot, each message one
  emission, and a late joiner gets the later ones, as a fresh run would.
* ``"events"`` for perf profiles, although its values are states: Meshery
  sends no initial snapshot there, so ``"state"``'s replay of the latest page
  would hand a late joiner a page a fresh subscription never sends. The
  cohort's change filter compares against the current rendering, which is
  where a fresh run's filter would start, so later pages match too.
* None for controller status: the full list, then deltas relative to what
  *this* subscriber was sent; a late joiner needs its own full list.

One window is left, and it is harmless: a joiner that arrives while the
cohort has a change queued but not yet rendered gets the previous state and
then the new one, where a fresh run would have started at the new one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._app import Context, Emit, Streamer
from ...brokers._buffer import Overflow
from .._auth import current_user
from .._model import _connections as connections
from .._model import _topics as topics
from .._model import _views as views
from .._model._cursors import open_feed
from .._model._model import Model
from .._model._paging import BadUserInput

#: Outbox sizes. State outboxes hold one value: the latest.
STATE_CAPACITY = 1
EVENTS_CAPACITY = 256
RESULTS_CAPACITY = 64
CONTROLLERS_CAPACITY = 1024


async def _stream_state(
    model: Model,
    topic: str,
    render: Callable[[], Any],
    emit: Emit,
    *,
    snapshot: bool,
) -> None:
    """Emit *render()* whenever it changes; first at once when *snapshot*."""
    async with model.broker.subscribe(topic, capacity=1, policy=Overflow.COALESCE) as changes:
        last = render()
        if snapshot:
            emit(last)
        async for _ in changes:
            value = render()
            if value != last:
                last = value
                emit(value)


def make_streamers(
    model: Model, may_feed_cluster: Callable[[str], bool] = lambda _user_id: True
) -> dict[str, Streamer]:
    """The ``streamers=`` mapping for the App, bound to *model*; *may_feed_cluster*
    says who sees every connection's controllers (see ``make_resolvers``)."""

    async def perf_profiles(ctx: Context, args: dict[str, Any], emit: Emit) -> None:
        """The caller's profiles page on every change; no initial snapshot (as in Meshery)."""
        user = current_user(ctx)
        request = views.profiles_selector(args["selector"])
        await _stream_state(
            model,
            topics.PERF_PROFILES,
            lambda: views.perf_profiles_page(model, user.id, request),
            emit,
            snapshot=False,
        )

    async def perf_results(ctx: Context, args: dict[str, Any], emit: Emit) -> None:
        """One results page per stored result of the caller's profile, rendered as
        of that result, so a burst of results yields one distinct page each; no
        initial snapshot."""
        user = current_user(ctx)
        request = views.results_selector(args["selector"])
        profile_id = args["profileID"]
        if model.profile(profile_id, user.id) is None:
            # Meshery sends nothing, forever; say why instead (another user's
            # profile reads exactly like a missing one).
            raise BadUserInput(
                f"no performance profile {profile_id!r}: profileID must name one of your "
                "profiles (see getPerformanceProfiles)"
            )
        topic = topics.perf_results(user.id, str(profile_id))
        async with open_feed(
            model.broker,
            topic,
            ctx.resume_cursor,
            capacity=RESULTS_CAPACITY,
            policy=Overflow.DROP_OLDEST,
        ) as results:
            async for cursor, message in results:
                result = message["result"]
                if result["user_id"] != user.id or str(result["performance_profile"]) != str(
                    profile_id
                ):
                    continue  # not this profile's: a check, the topic's name is the boundary
                page = views.perf_results_page(
                    model, user.id, request, profile_id, result["meshery_id"]
                )
                emit(page, cursor=cursor)

    async def controllers_status(ctx: Context, args: dict[str, Any], emit: Emit) -> None:
        """The full list (filtered by ``connectionIDs`` when given), then a
        single-item array for each controller whose status or version changed."""
        user = current_user(ctx)
        sees_all = may_feed_cluster(user.id)
        wanted = args.get("connectionIDs")

        def items() -> list[dict[str, Any]]:
            ids = connections.visible_connections(model, user.id, sees_all, wanted)
            return model.controller_items(ids)

        async with model.broker.subscribe(
            topics.CONTROLLERS, capacity=1, policy=Overflow.COALESCE
        ) as changes:
            current = items()
            emit(current)
            sent = {(i["connectionID"], i["controller"]): i for i in current}
            async for _ in changes:
                now = {(i["connectionID"], i["controller"]): i for i in items()}
                for key, item in now.items():
                    if sent.get(key) != item:
                        emit([item])
                # Forget removed controllers, so a re-added one is reported again.
                sent = now

    async def configuration(ctx: Context, args: dict[str, Any], emit: Emit) -> None:
        """The caller's designs and filters: a snapshot, then each change."""
        user = current_user(ctx)
        patterns = views.config_selector(args["patternSelector"])
        filters = views.config_selector(args["filterSelector"])
        await _stream_state(
            model,
            topics.configuration(user.id),
            lambda: views.configuration_page(model, user.id, patterns, filters),
            emit,
            snapshot=True,
        )

    async def cluster_resources(ctx: Context, args: dict[str, Any], emit: Emit) -> None:
        """Per-kind counts for the clusters named by ``kubernetes_server_id`` (or
        by the id of one of the caller's contexts)."""
        user = current_user(ctx)
        ids = views.cluster_ids(args.get("k8scontextIDs"))
        namespace = args["namespace"]
        await _stream_state(
            model,
            topics.CLUSTER_RESOURCES,
            lambda: views.cluster_resources(model, user.id, ids, namespace),
            emit,
            snapshot=True,
        )

    async def k8s_contexts(ctx: Context, args: dict[str, Any], emit: Emit) -> None:
        """The caller's contexts page; null search/order mean none/default (Meshery
        crashes on them)."""
        user = current_user(ctx)
        request = views.contexts_selector(args["selector"])
        await _stream_state(
            model,
            topics.K8S_CONTEXTS,
            lambda: views.k8s_contexts_page(model, user.id, request),
            emit,
            snapshot=True,
        )

    async def meshmodel_summary(_ctx: Context, args: dict[str, Any], emit: Emit) -> None:
        kind = views.meshmodel_type(args["selector"])
        await _stream_state(
            model,
            topics.MESHMODEL,
            lambda: views.meshmodel_summary(model, kind),
            emit,
            snapshot=True,
        )

    async def events(ctx: Context, _args: dict[str, Any], emit: Emit) -> None:
        """The caller's events as they are published, each with its cursor; a
        resuming subscription first gets every event after its cursor."""
        user = current_user(ctx)
        async with open_feed(
            model.broker,
            topics.events(user.id),
            ctx.resume_cursor,
            capacity=EVENTS_CAPACITY,
            policy=Overflow.DROP_OLDEST,
        ) as published:
            async for cursor, message in published:
                emit(message["event"], cursor=cursor)

    state = Overflow.COALESCE
    drop = Overflow.DROP_OLDEST
    return {
        "subscribePerfProfiles": Streamer(perf_profiles, STATE_CAPACITY, state, "events"),
        "subscribePerfResults": Streamer(perf_results, RESULTS_CAPACITY, drop, "events"),
        "subscribeMesheryControllersStatus": Streamer(
            controllers_status, CONTROLLERS_CAPACITY, Overflow.CLOSE
        ),
        "subscribeConfiguration": Streamer(configuration, STATE_CAPACITY, state, "state"),
        "subscribeClusterResources": Streamer(cluster_resources, STATE_CAPACITY, state, "state"),
        "subscribeK8sContext": Streamer(k8s_contexts, STATE_CAPACITY, state, "state"),
        "subscribeMeshModelSummary": Streamer(meshmodel_summary, STATE_CAPACITY, state, "state"),
        "subscribeEvents": Streamer(events, EVENTS_CAPACITY, drop, "events"),
    }
