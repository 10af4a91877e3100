"""The resume log's evictions, by reason, and its retained bytes are on /metrics.

Rendered through the server's own :class:`Metrics` (the Prometheus text a
scrape gets), with the app's families added as a source, on a real flood that
pushes one user over their share of a small log.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from meshsub_trio._metrics import Metrics
from meshsub_trio.meshery import StorageLimits, create_app
from meshsub_trio.meshery._replication._resume_log import ResumeLogBroker


def scraped(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_evictions_by_reason_and_retained_bytes_are_exported() -> None:
    app = create_app(simulator=False, limits=StorageLimits(resume_log_bytes=8 * 1024))
    metrics = Metrics()
    metrics.add_source(app.metric_families)
    before = scraped(metrics)
    for reason in ("over_share", "heaviest", "topic_count"):  # present from the start, at 0
        assert before[("meshsub_meshery_resume_log_evicted_total", (("reason", reason),))] == 0

    app.model.publish_event("bob", {"severity": "debug", "description": "bob's"})
    for n in range(40):  # about 20 KiB for alice: well over her share
        app.model.publish_event("alice", {"severity": "debug", "description": f"{n}" + "x" * 500})

    log = app.broker
    assert isinstance(log, ResumeLogBroker) and app.resume_log is log
    after = scraped(metrics)
    over_share = after[("meshsub_meshery_resume_log_evicted_total", (("reason", "over_share"),))]
    assert over_share == log.evicted["over_share"] > 0
    assert after[("meshsub_meshery_resume_log_bytes", ())] == log.retained_bytes <= 8 * 1024
