"""Before-images put back exactly what an own change overwrote, for every kind of change.

The model is built by a random history (each change as a local model makes
it); then one more operation's early-applied messages are applied, each
after taking its before-image, and undone newest first. The model must be
what it was, records and storage accounting alike: a replica that takes back
a refused change must hold no trace of it.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meshsub_trio.meshery import Model
from meshsub_trio.meshery._replication._pending import applies_at_once
from meshsub_trio.meshery._replication._undo import before_image

from ..meshery.conftest import counting_ids, ticking_clock
from .test_convergence import KINDS, change


class Recorder:
    """A committer that only records what the model would commit."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def commit(self, _topic: str, message: dict[str, Any]) -> None:
        self.messages.append(message)

    async def flush(self) -> None:  # pragma: no cover - never awaited here
        pass


def exact_state(model: Model) -> dict[str, Any]:
    """Every record, the accounting, and which clusters have an entry at all."""
    return {
        "records": sorted(
            orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in model.state_messages()
        ),
        "usage": (dict(model.usage._bytes), dict(model.usage._counts)),
        "clusters": sorted(model._objects),
        "results": {key: list(runs) for key, runs in model._results.items()},
    }


#: The convergence tests' kinds, plus filters (the same code path as designs,
#: its own store and usage kind).
ALL_KINDS = [*KINDS, "filter", "delete_filter"]
#: Kinds that create something for the others to update or delete.
CREATING = [
    "pattern",
    "filter",
    "controller",
    "object",
    "profile",
    "result",
    "meshmodel",
    "context",
]


def make(model: Model, kind: str, key: int, value: int) -> None:
    if kind == "filter":
        model.save_filter("u", {"id": f"k{key}", "name": f"v{value}", "filter_file": "f"})
    elif kind == "delete_filter":
        model.delete_filter("u", f"k{key}")
    else:
        change(model, kind, key, value)


operations = st.tuples(st.sampled_from(ALL_KINDS), st.integers(0, 1), st.integers(0, 9))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, max_size=25), operations)
@example([("profile", 0, 1), ("result", 0, 2), ("result", 0, 3)], ("delete_profile", 0, 0))
@example([("object", 0, 1), ("object", 1, 1)], ("clear", 0, 0))
@example([("context", 0, 1), ("object", 0, 1)], ("delete_context", 0, 0))
def test_undoing_an_operation_newest_first_restores_the_model(
    history: list[tuple[str, int, int]], last: tuple[str, int, int]
) -> None:
    model = Model(now=ticking_clock(), new_id=counting_ids("r"), system_id="r")
    for step in history:
        make(model, *step)
    before = exact_state(model)

    recorder = Recorder()
    model.committer = recorder
    make(model, *last)
    model.committer = None
    images = []
    for message in recorder.messages:
        if applies_at_once(message):
            images.append(before_image(model, message))
            model.apply(message)
    for image in reversed(images):
        image(model)
    assert exact_state(model) == before


def test_every_kind_of_early_change_is_covered() -> None:
    """The kinds the history above draws from make every at-once message type."""
    seen = set()
    for kind, key in [(kind, key) for kind in ALL_KINDS for key in (0, 1)]:
        model = Model(now=ticking_clock(), new_id=counting_ids("r"), system_id="r")
        for setup in CREATING:  # something to update, delete or clear (under key 0)
            make(model, setup, 0, 1)
        recorder = Recorder()
        model.committer = recorder
        make(model, kind, key, 2)
        seen |= {(m["type"], m["op"]) for m in recorder.messages if applies_at_once(m)}
    assert seen == {
        ("k8s_context", "upsert"), ("k8s_context", "delete"),
        ("controller", "upsert"), ("controller", "delete"),
        ("cluster_object", "upsert"), ("cluster_object", "delete"), ("cluster_object", "clear"),
        ("pattern", "upsert"), ("pattern", "delete"), ("filter", "upsert"), ("filter", "delete"),
        ("perf_profile", "upsert"), ("perf_profile", "delete"),
        ("meshmodel", "register"),
    }  # fmt: skip
