"""Performance profiles and their load-test results.

A result updates its profile (run count, last run), so both live together.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from . import _quota as quota
from . import _records as records
from . import _topics as topics
from ._core import Message, ModelCore, _keys, _mine


class PerformanceRecords(ModelCore):
    """Performance profiles and a bounded history of results per profile."""

    def _apply_perf_profile(self, op: str, msg: Message) -> None:
        if op == "upsert":
            self._store(self._profiles, "profile", msg["profile"]["user_id"], msg["profile"])
            return
        for key in self._unstore(self._profiles, "profile", msg.get("user_id"), msg["id"]):
            for _, result in self._results.pop(key, ()):
                self.usage.replace(key[0], "result", result, None)

    def _apply_perf_result(self, _op: str, msg: Message) -> None:
        result = msg["result"]
        key = (str(result["user_id"]), str(result["performance_profile"]))
        runs = self._results.setdefault(key, deque())
        runs.append((msg["seq"], result))
        self.usage.replace(key[0], "result", None, result)
        while len(runs) > self._results_per_profile:
            self.usage.replace(key[0], "result", runs.popleft()[1], None)
        self._seq = max(self._seq, msg["seq"])

    # ------------------------------------------------------------ performance

    def save_profile(self, user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update one of the user's performance profiles."""
        previous = _mine(self._profiles, user_id, fields.get("id"))
        profile = records.perf_profile(
            fields,
            previous=previous,
            profile_id=str(fields.get("id") or self.new_id()),
            user_id=user_id,
            now=self.now(),
        )
        self._admit(user_id, "profile", profile, previous)
        self._put_profile(profile)
        return profile

    def _put_profile(self, profile: dict[str, Any]) -> None:
        message = {"type": "perf_profile", "op": "upsert", "profile": profile}
        self._commit(topics.PERF_PROFILES, message)

    def delete_profile(self, user_id: str, profile_id: str) -> bool:
        """Delete one of the user's profiles and its results."""
        if _mine(self._profiles, user_id, profile_id) is None:
            return False
        message = {"type": "perf_profile", "op": "delete", "user_id": user_id, "id": profile_id}
        self._commit(topics.PERF_PROFILES, message)
        return True

    def profile(self, profile_id: str, owner: str | None = None) -> dict[str, Any] | None:
        """*owner*'s profile with this id (any owner's when None)."""
        keys = _keys(self._profiles, owner, profile_id)
        return self._profiles[keys[0]] if keys else None

    def profiles(self, owner: str | None = None) -> list[dict[str, Any]]:
        """*owner*'s profiles (everyone's when None)."""
        return [p for (who, _), p in self._profiles.items() if owner in (None, who)]

    def record_result(
        self, user_id: str, profile_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Store one load-test result of one of the user's profiles; the profile's
        run count and last run follow."""
        profile = _mine(self._profiles, user_id, profile_id)
        if profile is None:
            raise ValueError(f"no performance profile {profile_id}")
        now = self.now()
        result = records.perf_result(
            fields, result_id=self.new_id(), profile=profile, user_id=user_id, now=now
        )
        updated = {
            **profile,
            "total_results": (profile.get("total_results") or 0) + 1,
            "last_run": now,
            "updated_at": now,
        }
        runs = self._results.get((user_id, str(profile_id)))
        full = runs is not None and len(runs) >= self._results_per_profile
        evicted = quota.size_of(runs[0][1]) if runs and full else 0
        grown = quota.size_of(updated) - quota.size_of(profile)
        self._admit(user_id, "result", result, None, freed=evicted - grown)
        self._seq += 1
        message = {"type": "perf_result", "op": "append", "seq": self._seq, "result": result}
        self._commit(topics.perf_results(user_id, str(profile_id)), message)
        self._put_profile(updated)
        return result

    def results_of(
        self, profile_id: str, upto_id: str | None = None, *, owner: str | None = None
    ) -> list[dict[str, Any]]:
        """*owner*'s profile's retained results (of every owner's profile with this id
        when None), oldest first; with *upto_id*, only those up to and including
        that result (none once it is no longer retained).

        Results are kept in the order they were applied, which is the shared
        log's order on every replica, so "as of this result" means the same
        everywhere (a per-origin sequence number would not).
        """
        runs = [
            result
            for key in _keys(self._results, owner, profile_id)
            for _, result in self._results[key]
        ]
        if upto_id is None:
            return runs
        for index, result in enumerate(runs):
            if result["meshery_id"] == upto_id:
                return runs[: index + 1]
        return []

    def all_results(self, owner: str | None = None) -> list[dict[str, Any]]:
        """*owner*'s results (everyone's when None)."""
        return [
            result
            for (who, _), runs in self._results.items()
            if owner in (None, who)
            for _, result in runs
        ]

    def result(self, result_id: str, owner: str | None = None) -> dict[str, Any] | None:
        """*owner*'s result with this id (any owner's when None)."""
        for result in self.all_results(owner):
            if result["meshery_id"] == result_id:
                return result
        return None
