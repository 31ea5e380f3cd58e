"""ServingMetrics rendering: every series carries the replica that answered the scrape, families and
values unchanged."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import ServingMetrics


def test_every_sample_carries_the_replica_label_and_values_are_unchanged() -> None:
    metrics = ServingMetrics("SERVE_REPLICA::tuneloop#abc")
    metrics.requests.labels(served_by="support@1", endpoint="chat.completions", status="200").inc(3)
    metrics.e2e.labels(served_by="support@1").observe(0.2)
    metrics.log_spilled.set(42)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    samples = [s for f in families.values() for s in f.samples]
    assert samples and all(s.labels["replica"] == "SERVE_REPLICA::tuneloop#abc" for s in samples)
    (requests,) = [s for s in families["tuneloop_requests"].samples if s.name == "tuneloop_requests_total"]
    assert requests.value == 3.0 and requests.labels["served_by"] == "support@1"
    assert families["tuneloop_e2e_request_latency_seconds"].type == "histogram"
    assert [s.value for s in families["tuneloop_request_log_spilled"].samples] == [42.0]


def test_two_replicas_render_distinct_series() -> None:
    a, b = ServingMetrics("r-a"), ServingMetrics("r-b")
    a.rate_limited.labels(kind="ip").inc()
    b.rate_limited.labels(kind="ip").inc(5)
    text = a.render().decode() + b.render().decode()
    assert 'tuneloop_rate_limited_total{kind="ip",replica="r-a"} 1.0' in text
    assert 'tuneloop_rate_limited_total{kind="ip",replica="r-b"} 5.0' in text
