"""Broker topic names for the Meshery model.

Per-user topics carry the user id so a subscriber only ever receives what it
is entitled to; per-profile results get their own topic so a busy profile
does not wake every results subscriber. That topic names the owner too:
profile ids are the client's to choose, so two users' profiles may share
one, and a shared topic would share its count bound and its cursors' expiry.
Each id is escaped into exactly one token (:mod:`._tokens`), so no two
owners' names are ever the same string and every name is a NATS subject.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._tokens import escape, is_token, unescape

CONTROLLERS = "meshery.controllers"
K8S_CONTEXTS = "meshery.k8s_contexts"
CLUSTER_RESOURCES = "meshery.cluster_resources"
PERF_PROFILES = "meshery.perf_profiles"
MESHMODEL = "meshery.meshmodel"

EVENTS_PREFIX = "meshery.events."
CONFIGURATION_PREFIX = "meshery.configuration."
PERF_RESULTS_PREFIX = "meshery.perf_results."

#: Per-user topics' messages: message type -> (record field, owner field);
#: a delete names its owner at the top (``user_id``).
_USER_RECORDS = {
    "event": ("event", "userID"),
    "pattern": ("pattern", "user_id"),
    "filter": ("filter", "user_id"),
}


def events(user_id: str) -> str:
    return EVENTS_PREFIX + escape(user_id)


def configuration(user_id: str) -> str:
    return CONFIGURATION_PREFIX + escape(user_id)


def perf_results(user_id: str, profile_id: str) -> str:
    return f"{PERF_RESULTS_PREFIX}{escape(user_id)}.{escape(profile_id)}"


def topic_user(topic: str) -> str | None:
    """The user a per-user topic (events, configuration) names; None for any
    other topic, or a name this version would not build (an earlier one's)."""
    for prefix in (EVENTS_PREFIX, CONFIGURATION_PREFIX):
        if topic.startswith(prefix):
            return unescape(topic[len(prefix) :])
    return None


def results_owner(topic: str) -> str | None:
    """The user a results topic names (None: not one, or an earlier version's).

    Exactly two escaped tokens after the prefix, the owner's and the
    profile's. Earlier versions' topics named only the profile (one token),
    or the owner and profile unescaped: no owner is read from those (one
    whose ids needed no escape is the same name now, and reads right).
    """
    if not topic.startswith(PERF_RESULTS_PREFIX):
        return None
    owner, dot, profile = topic[len(PERF_RESULTS_PREFIX) :].partition(".")
    if not dot or not is_token(profile):
        return None
    return unescape(owner)


def has_older_names(topic: str) -> bool:
    """Whether earlier versions may have logged *topic*'s entries under another
    name: results always (once named by the profile only), a per-user topic
    whose id needed escaping (once written raw). Such entries are found only
    by reading them back (:func:`resumed_topic`), never by asking a log for
    this name, so a cursor only a log could serve must expire instead."""
    if topic.startswith(PERF_RESULTS_PREFIX):
        return True
    for prefix in (EVENTS_PREFIX, CONFIGURATION_PREFIX):
        if topic.startswith(prefix):
            return "%" in topic[len(prefix) :]  # escaped or digested: once written raw
    return False


def resumed_topic(topic: str, message: Any) -> str:
    """The topic an entry logged under *topic* is resumed from now.

    Why: earlier versions logged perf results under the profile id alone
    (``meshery.perf_results.<profile>``), then under the owner's and profile's
    ids unescaped, and per-user entries under the raw user id; an entry read
    back from such a log (a database, the NATS stream) belongs to the topic
    its owner's ids name now, so that a cursor on it neither misses it nor
    sees another user's. The message names the owner: the old name may not
    (two owners' could be the same string).
    """
    if not isinstance(message, Mapping):
        return topic
    if topic.startswith(PERF_RESULTS_PREFIX):
        result = message.get("result") if message.get("type") == "perf_result" else None
        if not isinstance(result, Mapping):
            return topic
        owner, profile = result.get("user_id"), result.get("performance_profile")
        if owner is None or profile is None:
            return topic
        return perf_results(str(owner), str(profile))
    for prefix, name in ((EVENTS_PREFIX, events), (CONFIGURATION_PREFIX, configuration)):
        if topic.startswith(prefix):
            user = _user_named(message)
            return topic if user is None else name(user)
    return topic


def _user_named(message: Mapping[str, Any]) -> str | None:
    """The owner a per-user topic's message names (None: not one of its shapes)."""
    fields = _USER_RECORDS.get(str(message.get("type")))
    if fields is None:
        return None
    record, key = fields
    holder = message.get(record)
    owner = holder.get(key) if isinstance(holder, Mapping) else message.get(key)
    return owner if isinstance(owner, str) else None
