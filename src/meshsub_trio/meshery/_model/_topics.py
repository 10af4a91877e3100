"""Broker topic names for the Meshery model.

Per-user topics carry the user id so a subscriber only ever receives what it
is entitled to; per-profile results get their own topic so a busy profile
does not wake every results subscriber. That topic names the owner too:
profile ids are the client's to choose, so two users' profiles may share
one, and a shared topic would share its count bound and its cursors' expiry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONTROLLERS = "meshery.controllers"
K8S_CONTEXTS = "meshery.k8s_contexts"
CLUSTER_RESOURCES = "meshery.cluster_resources"
PERF_PROFILES = "meshery.perf_profiles"
MESHMODEL = "meshery.meshmodel"

EVENTS_PREFIX = "meshery.events."
CONFIGURATION_PREFIX = "meshery.configuration."
PERF_RESULTS_PREFIX = "meshery.perf_results."


def events(user_id: str) -> str:
    return EVENTS_PREFIX + user_id


def configuration(user_id: str) -> str:
    return CONFIGURATION_PREFIX + user_id


def perf_results(user_id: str, profile_id: str) -> str:
    return f"{PERF_RESULTS_PREFIX}{user_id}.{profile_id}"


def results_owner(topic: str) -> str | None:
    """The user a results topic names (None: not one, or an earlier version's).

    The first token after the prefix: a profile id may hold dots, a user id
    is taken to hold none (one that did would share its first token's floor
    in the resume log, never lose one). Earlier versions' topics name only
    the profile (one token): no owner.
    """
    if not topic.startswith(PERF_RESULTS_PREFIX):
        return None
    owner, dot, profile = topic[len(PERF_RESULTS_PREFIX) :].partition(".")
    return owner if dot and owner and profile else None


def resumed_topic(topic: str, message: Any) -> str:
    """The topic an entry logged under *topic* is resumed from now.

    Why: earlier versions logged perf results under the profile id alone
    (``meshery.perf_results.<profile>``); a result read back from such a log
    (a database, the NATS stream) belongs to its owner's topic, so that a
    cursor on it neither misses it nor sees another user's.
    """
    if not topic.startswith(PERF_RESULTS_PREFIX) or not isinstance(message, Mapping):
        return topic
    result = message.get("result") if message.get("type") == "perf_result" else None
    if not isinstance(result, Mapping):
        return topic
    owner, profile = result.get("user_id"), result.get("performance_profile")
    if owner is None or profile is None:
        return topic
    return perf_results(str(owner), str(profile))
