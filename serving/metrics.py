"""Prometheus metrics of the serving layer, per served version (`served_by` = base id or name@version).

Each `ServingMetrics` owns its own `CollectorRegistry`, so several cores (tests, replicas in one
process) never collide; `GET /metrics` renders it in the text exposition format with a `replica` label
on every series: behind the Serve proxy successive scrapes can be answered by different replicas, and the
label keeps each replica's counters a series of their own instead of one that seems to reset.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
COLD_LOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
TPOT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServingMetrics:
    """The serving layer's Prometheus series, registered in a registry of this replica's own."""

    def __init__(self, replica_id: str = "local") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.replica_id = replica_id
        self._define_request_metrics(self.registry)
        self._define_adapter_metrics(self.registry)
        self._define_routing_and_log_metrics(self.registry)
        self._define_rate_limit_metrics(self.registry)

    def _define_request_metrics(self, r: CollectorRegistry) -> None:
        """Requests, errors, tokens and latencies, per served version."""
        self.requests = Counter(
            "tuneloop_requests",
            "Requests finished, by served version and HTTP status.",
            ["served_by", "endpoint", "status"],
            registry=r,
        )
        self.errors = Counter(
            "tuneloop_request_errors",
            "Requests that ended in an error, by served version and error type.",
            ["served_by", "type"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "tuneloop_prompt_tokens", "Prompt tokens processed.", ["served_by"], registry=r
        )
        self.completion_tokens = Counter(
            "tuneloop_completion_tokens", "Completion tokens generated.", ["served_by"], registry=r
        )
        self.ttft = Histogram(
            "tuneloop_time_to_first_token_seconds",
            "Time to first token.",
            ["served_by"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "tuneloop_time_per_output_token_seconds",
            "Mean time per output token after the first.",
            ["served_by"],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "tuneloop_e2e_request_latency_seconds",
            "End-to-end request latency.",
            ["served_by"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge("tuneloop_inflight_requests", "Requests in flight.", ["served_by"], registry=r)

    def _define_adapter_metrics(self, r: CollectorRegistry) -> None:
        """Adapter residency on this replica: loaded, pinned, evicted, and how long cold loads take."""
        self.loaded_adapters = Gauge(
            "tuneloop_loaded_adapters", "Adapter versions loaded in the engine of this replica.", registry=r
        )
        self.adapter_loaded = Gauge(
            "tuneloop_adapter_loaded",
            "1 for each adapter version loaded on this replica.",
            ["adapter"],
            registry=r,
        )
        self.adapter_load_failures = Counter(
            "tuneloop_adapter_load_failures",
            "Adapter versions refused at load or smoke test.",
            ["adapter"],
            registry=r,
        )
        self.adapter_capacity = Gauge(
            "tuneloop_adapter_capacity",
            "Adapter versions this replica keeps resident at most (max_cpu_loras; LRU beyond).",
            registry=r,
        )
        self.adapter_pinned = Gauge(
            "tuneloop_adapter_pinned",
            "Adapter versions pinned on this replica (alias targets, running experiments, staged).",
            registry=r,
        )
        self.adapter_loads = Counter(
            "tuneloop_adapter_loads",
            "Adapter versions loaded into the engine, by why (pinned: desired set; on_demand: a request; "
            "preload: registered while the replica runs, loaded into a free slot).",
            ["kind"],
            registry=r,
        )
        self.adapter_evictions = Counter(
            "tuneloop_adapter_evictions",
            "Adapter versions unloaded, by why (lru: room for another; released: left the desired set or "
            "the registry; engine: the engine evicted it on its own).",
            ["reason"],
            registry=r,
        )
        self.adapter_lookups = Counter(
            "tuneloop_adapter_lookups",
            "Requests for an adapter version by whether it was resident (hit) or had to load (miss).",
            ["result"],
            registry=r,
        )
        self.adapter_cold_load = Histogram(
            "tuneloop_adapter_cold_load_seconds",
            "Time to make a requested cold adapter version resident (fetch, load, first-time smoke).",
            buckets=COLD_LOAD_BUCKETS,
            registry=r,
        )

    def _define_routing_and_log_metrics(self, r: CollectorRegistry) -> None:
        """The registry generation routed by, and the request log's backlog (memory, spill folder, drops)."""
        self.routing_generation = Gauge(
            "tuneloop_routing_generation", "Registry generation this replica routes by.", registry=r
        )
        self.log_pending = Gauge(
            "tuneloop_request_log_pending", "Request-log records not yet written.", registry=r
        )
        self.log_dropped = Gauge(
            "tuneloop_request_log_dropped",
            "Request-log records dropped (memory buffer and spill folder full).",
            registry=r,
        )
        self.log_spilled = Gauge(
            "tuneloop_request_log_spilled",
            "Request-log records on disk (database outage) waiting to be replayed.",
            registry=r,
        )

    def _define_rate_limit_metrics(self, r: CollectorRegistry) -> None:
        """Requests refused by this replica's rate limit."""
        self.rate_limited = Counter(
            "tuneloop_rate_limited",
            "Requests refused with 429 by this replica's rate limit, by what was counted (key or ip).",
            ["kind"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(_Labelled(self.registry, "replica", self.replica_id))


class _Labelled:
    """A collector that yields another registry's metrics with one more label on every sample."""

    def __init__(self, registry: CollectorRegistry, label: str, value: str) -> None:
        self._registry, self._label, self._value = registry, label, value

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                out.add_sample(
                    sample.name,
                    {**sample.labels, self._label: self._value},
                    sample.value,
                    sample.timestamp,
                    sample.exemplar,
                )
            yield out
