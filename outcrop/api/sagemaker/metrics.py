"""Per-endpoint, per-variant metrics under SageMaker's CloudWatch names (Prometheus allows the case).

    outcrop_sagemaker_Invocations_total{EndpointName, VariantName, InferenceComponentName}
    outcrop_sagemaker_Invocation4XXErrors_total / _Invocation5XXErrors_total
    outcrop_sagemaker_ModelLatency_seconds      time in the copy (SageMaker: the container)
    outcrop_sagemaker_OverheadLatency_seconds   everything else the gateway spent (parsing, templates)

SageMaker reports latencies in microseconds; Prometheus' convention is seconds, and the histogram
buckets are the gateway's own so the two kinds compare. ``InferenceComponentName`` is empty for an
endpoint's model variants (SageMaker publishes component metrics under that dimension). Only calls
that reached an existing endpoint (and component) are counted, so callers cannot grow the label
sets without bound.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from outcrop.api.metrics import LATENCY_BUCKETS_SECONDS

UNKNOWN_LABEL = "<unknown>"
# Overhead is sub-millisecond when all is well: finer buckets at the bottom than the gateway's.
OVERHEAD_BUCKETS_SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)


class SageMakerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["EndpointName", "VariantName", "InferenceComponentName"]
        self.invocations = Counter(
            "outcrop_sagemaker_Invocations",
            "InvokeEndpoint requests answered by a variant.",
            labels,
            registry=registry,
        )
        self.errors_4xx = Counter(
            "outcrop_sagemaker_Invocation4XXErrors",
            "Invocations answered with a 4xx status.",
            labels,
            registry=registry,
        )
        self.errors_5xx = Counter(
            "outcrop_sagemaker_Invocation5XXErrors",
            "Invocations answered with a 5xx status.",
            labels,
            registry=registry,
        )
        self.model_latency = Histogram(
            "outcrop_sagemaker_ModelLatency_seconds",
            "Time the model copy took to answer (to the last chunk when streaming).",
            labels,
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=registry,
        )
        self.overhead_latency = Histogram(
            "outcrop_sagemaker_OverheadLatency_seconds",
            "Time the gateway added around the model: parsing, routing, templates, encoding.",
            labels,
            buckets=OVERHEAD_BUCKETS_SECONDS,
            registry=registry,
        )

    def observe(
        self,
        endpoint: str,
        variant: str,
        *,
        status: int,
        total_seconds: float,
        model_seconds: float,
        component: str = "",
    ) -> None:
        labels = (endpoint, variant, component)
        self.invocations.labels(*labels).inc()
        if 400 <= status < 500:
            self.errors_4xx.labels(*labels).inc()
        elif status >= 500:
            self.errors_5xx.labels(*labels).inc()
        if model_seconds > 0:
            self.model_latency.labels(*labels).observe(model_seconds)
            self.overhead_latency.labels(*labels).observe(max(0.0, total_seconds - model_seconds))

    def summary(self) -> list[dict[str, Any]]:
        """This gateway's figures per endpoint, variant and component, as the console and
        ``outcrop endpoints`` show them: counts since the gateway started and mean latencies in
        milliseconds (None before the first answer)."""
        rows: dict[tuple[str, str, str], dict[str, Any]] = {}

        def row(labels: dict[str, str]) -> dict[str, Any]:
            key = (labels["EndpointName"], labels["VariantName"], labels["InferenceComponentName"])
            return rows.setdefault(
                key,
                {
                    "EndpointName": key[0],
                    "VariantName": key[1],
                    "InferenceComponentName": key[2] or None,
                    "Invocations": 0,
                    "Invocation4XXErrors": 0,
                    "Invocation5XXErrors": 0,
                    "ModelLatencyMs": None,
                    "OverheadLatencyMs": None,
                },
            )

        for counter, name in (
            (self.invocations, "Invocations"),
            (self.errors_4xx, "Invocation4XXErrors"),
            (self.errors_5xx, "Invocation5XXErrors"),
        ):
            for family in counter.collect():
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        row(sample.labels)[name] = int(sample.value)
        for histogram, name in (
            (self.model_latency, "ModelLatencyMs"),
            (self.overhead_latency, "OverheadLatencyMs"),
        ):
            sums: dict[tuple[tuple[str, str], ...], float] = {}
            counts: dict[tuple[tuple[str, str], ...], float] = {}
            for family in histogram.collect():
                for sample in family.samples:
                    key = tuple(sorted(sample.labels.items()))
                    if sample.name.endswith("_sum"):
                        sums[key] = sample.value
                    elif sample.name.endswith("_count"):
                        counts[key] = sample.value
            for key, count in counts.items():
                if count:
                    row(dict(key))[name] = round(1000 * sums.get(key, 0.0) / count, 3)
        return sorted(
            rows.values(),
            key=lambda r: (r["EndpointName"], r["VariantName"], r["InferenceComponentName"] or ""),
        )
