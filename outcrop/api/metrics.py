"""Prometheus metrics of the gateway process (one registry per app, so tests can build many apps)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from outcrop.serving.stats import RecentStats

# Request latency buckets: from sub-millisecond control-plane calls to minute-long generations.
LATENCY_BUCKETS_SECONDS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
)


class _StateCollector(Collector):
    """Gauges read from the metadata store at scrape time (so every gateway reports the same truth)."""

    def __init__(self, read: Callable[[], dict[str, dict[str, int]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._read()
        jobs = GaugeMetricFamily("outcrop_import_jobs", "Import jobs by status.", labels=["status"])
        for status, count in state.get("import_jobs", {}).items():
            jobs.add_metric([status], count)
        yield jobs
        models = GaugeMetricFamily("outcrop_imported_models", "Imported models registered.")
        models.add_metric([], state.get("imported_models", {}).get("total", 0))
        yield models


class _ServingCollector(Collector):
    """Copies and queues of the serving layer, read at scrape time."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        models = self._read().get("models", {})
        copies = GaugeMetricFamily(
            "outcrop_model_copies", "Model copies by state (Bedrock's ModelCopy).", labels=["model", "state"]
        )
        queue = GaugeMetricFamily("outcrop_queue_depth", "Requests waiting for a copy.", labels=["model"])
        in_flight = GaugeMetricFamily(
            "outcrop_requests_in_flight", "Requests on copies now.", labels=["model"]
        )
        cold = CounterMetricFamily(
            "outcrop_cold_starts", "Copies started for waiting traffic.", labels=["model"]
        )
        cold_seconds = CounterMetricFamily(
            "outcrop_cold_start_seconds", "Total seconds cold starts took until ready.", labels=["model"]
        )
        failures = CounterMetricFamily(
            "outcrop_copy_start_failures", "Copies that failed to start.", labels=["model"]
        )
        for name, m in models.items():
            for state, count in m.get("copies", {}).items():
                copies.add_metric([name, state], count)
            queue.add_metric([name], m.get("queue_depth", 0))
            in_flight.add_metric([name], m.get("in_flight", 0))
            cold.add_metric([name], m.get("cold_starts", 0))
            cold_seconds.add_metric([name], m.get("cold_start_seconds_sum", 0.0))
            failures.add_metric([name], m.get("start_failures", 0))
        yield from (copies, queue, in_flight, cold, cold_seconds, failures)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The last hour in 10 s steps, for GET /outcrop/stats and the console's charts.
        self.recent = RecentStats()
        self.serving_reader: Callable[[], dict[str, Any]] | None = None
        self.requests = Counter(
            "outcrop_http_requests",
            "HTTP requests by surface, operation and status code.",
            ["surface", "operation", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "outcrop_http_request_duration_seconds",
            "HTTP request latency (to the last byte for non-streaming responses).",
            ["surface", "operation"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        model = ["model"]
        self.invocations = Counter(
            "outcrop_invocations",
            "Successful model invocations (Bedrock's Invocations).",
            ["model", "operation"],
            registry=self.registry,
        )
        self.invocation_errors = Counter(
            "outcrop_invocation_errors",
            "Failed invocations by kind: client (4xx) or server (5xx).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.throttles = Counter(
            "outcrop_invocation_throttles",
            "Invocations refused by throttling or ModelNotReady.",
            model,
            registry=self.registry,
        )
        self.invocation_latency = Histogram(
            "outcrop_invocation_latency_seconds",
            "Invocation latency to the last token.",
            model,
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "outcrop_time_to_first_token_seconds",
            "Streaming invocations: time to the first chunk.",
            model,
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.input_tokens = Counter(
            "outcrop_input_tokens", "Prompt tokens processed.", model, registry=self.registry
        )
        self.output_tokens = Counter(
            "outcrop_output_tokens", "Tokens generated.", model, registry=self.registry
        )
        self.structured_requests = Counter(
            "outcrop_structured_requests",
            "Invocations asking for tools or structured output, by operation and kind "
            "(tools, json_schema, json_object, guided).",
            ["operation", "kind"],
            registry=self.registry,
        )

    def add_state_reader(self, read: Callable[[], dict[str, dict[str, int]]]) -> None:
        self.registry.register(_StateCollector(read))

    def add_serving_reader(self, read: Callable[[], dict[str, Any]]) -> None:
        self.registry.register(_ServingCollector(read))
        self.serving_reader = read

    def render(self) -> bytes:
        return generate_latest(self.registry)
