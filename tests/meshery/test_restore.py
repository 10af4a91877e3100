"""``Model.held`` and ``Model.put_back``: the way a replica's undo reaches the stores.

Every kind of change is undone exactly in ``tests/scaleout/test_rollback_undo.py``;
here, the contract itself: putting a record back keeps the storage accounting
where applying it had it, a profile's results come out as a copy, and a cluster
left empty is dropped as the model drops it.
"""

from __future__ import annotations

import pytest

from meshsub_trio.meshery import Model

from .conftest import ALICE


def test_putting_a_design_back_keeps_the_accounting(model: Model) -> None:
    design = model.save_pattern(ALICE.id, {"name": "d", "pattern_file": "x"})
    key = (ALICE.id, design["id"])
    stored = model.stored_bytes(ALICE.id)
    assert model.held("design", key) == design
    model.put_back("design", key, None)
    assert model.held("design", key) is None and model.stored_bytes(ALICE.id) == 0
    model.put_back("design", key, design)
    assert model.stored_bytes(ALICE.id) == stored
    assert model.held_keys("design") == [key]


def test_a_profile_s_results_come_out_as_a_copy(model: Model) -> None:
    profile = model.save_profile(ALICE.id, {"name": "p"})
    key = (ALICE.id, profile["id"])
    model.record_result(ALICE.id, profile["id"], {"name": "r1"})
    kept = model.held("results", key)
    model.record_result(ALICE.id, profile["id"], {"name": "r2"})
    assert [result["name"] for _, result in kept] == ["r1"]
    model.put_back("results", key, kept)
    assert [r["name"] for r in model.results_of(profile["id"], owner=ALICE.id)] == ["r1"]


def test_a_cluster_left_empty_is_dropped(model: Model) -> None:
    model.add_object("c1", "Pod", "ns", "p")
    key = ("c1", "Pod", "ns", "p")
    assert model.held("cluster_object", key) is not None
    model.put_back("cluster_object", key, None)
    assert model.held("cluster", "c1") is None


def test_an_unknown_place_is_refused(model: Model) -> None:
    with pytest.raises(KeyError):
        model.held("nowhere", "k")
    with pytest.raises(KeyError):
        model.put_back("nowhere", "k", None)
