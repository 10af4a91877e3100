"""The resume log's counters on ``/metrics``.

Why: when clients get CURSOR_EXPIRED, an operator needs to know whether a
user went over their share of the log (``over_share``), the log was simply
full (``heaviest``) or a topic hit its count bound (``topic_count``); the
retained bytes say how close to its cap the log runs. One log per process:
the in-memory broker's, or a replica's history on a shared broker.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ._resume_log import EVICTIONS, ResumeLogBroker


def resume_log_families(log: ResumeLogBroker | None) -> list[Metric]:
    """Evictions by reason and retained bytes of *log* (zeros without one)."""
    evicted = CounterMetricFamily(
        "meshsub_meshery_resume_log_evicted",
        "Entries evicted from the resume log, by why (over_share, heaviest, topic_count)",
        labels=["reason"],
    )
    for why in EVICTIONS:
        evicted.add_metric([why], log.evicted[why] if log is not None else 0)
    retained = GaugeMetricFamily(
        "meshsub_meshery_resume_log_bytes",
        "Bytes the resume log retains, all users together",
        value=log.retained_bytes if log is not None else 0,
    )
    return [evicted, retained]
