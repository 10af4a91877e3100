"""Records read and put back where the model holds them, for taking a change back.

Why: a replica takes back its own changes the log refused
(:mod:`.._replication._undo`) by putting back the records they overwrote,
and some changes have no inverse message (a MeshModel entry or a controller
cannot be removed by one). So the records go back directly, but through
here: the stores stay the model's own, and putting back keeps the storage
accounting (``usage``) in step as applying does.

A *place* names one store: the owned ones by their usage kind (``context``,
``design``, ``filter``, ``profile``; keys ``(owner, id)``), ``results`` (a
profile's runs, keyed like it), ``controller`` (``(connection, controller)``),
``cluster`` (a cluster id: all its objects), ``cluster_object`` (``(cluster
id, kind, namespace, name)``) and ``meshmodel`` (an entry's four names). None
stands for "nothing held" throughout.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ._core import Key, ModelCore


class RestorableRecords(ModelCore):
    """``held`` and ``put_back``: the package's one way into the stores from outside."""

    def _owned_store(self, place: str) -> dict[Key, dict[str, Any]] | None:
        owned = {
            "context": self._contexts,
            "design": self._patterns,
            "filter": self._filters,
            "profile": self._profiles,
        }
        return owned.get(place)

    def held(self, place: str, key: Any) -> Any:
        """What *place* holds under *key*, or None: a profile's results as a
        list of ``(seq, result)`` of its own (applying appends to them), the
        rest by reference (applying replaces records rather than editing them)."""
        owned = self._owned_store(place)
        if owned is not None:
            return owned.get(key)
        if place == "results":
            runs = self._results.get(key)
            return None if runs is None else list(runs)
        if place == "controller":
            return self._controllers.get(key)
        if place == "cluster":
            return self._objects.get(key)
        if place == "cluster_object":
            cluster_id, *name = key
            return self._objects.get(cluster_id, {}).get(tuple(name))
        if place == "meshmodel":
            return key if key in self._meshmodel else None
        raise KeyError(f"no place {place!r}")

    def held_keys(self, place: str) -> list[Any]:
        """The keys *place* holds something under (owned stores and controllers)."""
        owned = self._owned_store(place)
        if owned is not None:
            return list(owned)
        if place == "controller":
            return list(self._controllers)
        raise KeyError(f"no keys listed for place {place!r}")

    def put_back(self, place: str, key: Any, record: Any) -> None:
        """Hold *record* under *key* in *place* again (None: hold nothing there),
        charging or crediting its owner as applying it would."""
        owned = self._owned_store(place)
        if owned is not None:
            old = owned.get(key)
            if old is not record:
                self.usage.replace(key[0], place, old, record)
                _put(owned, key, record)
        elif place == "results":
            for _, result in self._results.pop(key, ()):
                self.usage.replace(key[0], "result", result, None)
            if record is not None:
                self._results[key] = deque(record)
                for _, result in record:
                    self.usage.replace(key[0], "result", None, result)
        elif place == "controller":
            _put(self._controllers, key, record)
        elif place == "cluster":
            _put(self._objects, key, record)
        elif place == "cluster_object":
            cluster_id, *name = key
            cluster = self._objects.setdefault(cluster_id, {})
            _put(cluster, tuple(name), record)
            if not cluster:  # the model keeps no empty cluster
                del self._objects[cluster_id]
        elif place == "meshmodel":
            if record is None:
                self._meshmodel.discard(key)
            else:
                self._meshmodel.add(key)
        else:
            raise KeyError(f"no place {place!r}")


def _put(store: dict[Any, Any], key: Any, record: Any) -> None:
    """``store[key] = record``, or no *key* at all when *record* is None."""
    if record is None:
        store.pop(key, None)
    else:
        store[key] = record
