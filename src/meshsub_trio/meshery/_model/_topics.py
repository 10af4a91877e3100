"""Broker topic names for the Meshery model.

Per-user topics carry the user id so a subscriber only ever receives what it
is entitled to; per-profile results get their own topic so a busy profile
does not wake every results subscriber.
"""

from __future__ import annotations

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


def perf_results(profile_id: str) -> str:
    return PERF_RESULTS_PREFIX + profile_id
