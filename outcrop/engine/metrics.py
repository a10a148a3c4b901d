"""Prometheus metrics of one model copy (its own registry, served at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from outcrop.engine.messages import CoreStats

# Buckets in seconds: TTFT spans a fast decode step (ms) to a long queue wait (tens of s).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Per-output-token time: one decode step, from ~1 ms (GPU) to ~0.5 s (big model on CPU).
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Grammar compiles: ~1 ms for a tool schema, up to seconds for a pathological one.
COMPILE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.running = Gauge(
            "outcrop_engine_requests_running",
            "Sequences admitted to the batch (holding KV-cache blocks).",
            registry=r,
        )
        self.paused = Gauge(
            "outcrop_engine_requests_paused",
            "Sequences holding a slot but skipped while a more urgent priority class runs.",
            registry=r,
        )
        self.waiting = Gauge("outcrop_engine_requests_waiting", "Sequences queued for a slot.", registry=r)
        self.kv_cache_usage = Gauge(
            "outcrop_engine_kv_cache_usage_ratio",
            "Fraction of the KV-cache blocks held by sequences.",
            registry=r,
        )
        self.kv_cache_bytes = Gauge(
            "outcrop_engine_kv_cache_bytes", "Bytes allocated for the KV cache.", registry=r
        )
        self.prompt_tokens = Counter("outcrop_engine_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generation_tokens = Counter("outcrop_engine_generation_tokens", "Tokens generated.", registry=r)
        self.requests_finished = Counter(
            "outcrop_engine_requests_finished",
            "Sequences finished, by reason.",
            ["finish_reason"],
            registry=r,
        )
        self.ttft = Histogram(
            "outcrop_engine_time_to_first_token_seconds",
            "Arrival to first token.",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "outcrop_engine_time_per_output_token_seconds",
            "Mean time between output tokens of a finished sequence.",
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.prefix_cache_queries = Counter(
            "outcrop_engine_prefix_cache_queries",
            "Tokens looked up in the prefix cache when sequences were admitted.",
            registry=r,
        )
        self.prefix_cache_hits = Counter(
            "outcrop_engine_prefix_cache_hits",
            "Of those tokens, the ones found computed already (not computed again).",
            registry=r,
        )
        self.preemptions = Counter(
            "outcrop_engine_preemptions",
            "Sequences that gave up their KV-cache blocks to be recomputed later (the pool ran out).",
            registry=r,
        )
        self.forward_seconds = Counter(
            "outcrop_engine_forward_seconds",
            "Host time spent in the model's forward calls (on CUDA: launching them); against wall time "
            "it gives the share of the engine's time the model itself takes.",
            registry=r,
        )
        self.steps = Counter("outcrop_engine_steps", "Engine steps run, by kind.", ["kind"], registry=r)
        self.constrained_requests = Counter(
            "outcrop_engine_constrained_requests",
            "Requests whose output was constrained by a grammar, by kind "
            "(json, json_object, regex, choice, grammar, tool_call).",
            ["kind"],
            registry=r,
        )
        self.grammar_compile_seconds = Histogram(
            "outcrop_engine_grammar_compile_seconds",
            "Time to compile a new output constraint against the tokenizer (cache misses only).",
            buckets=COMPILE_BUCKETS,
            registry=r,
        )
        self.grammar_cache_hits = Counter(
            "outcrop_engine_grammar_cache_hits", "Output constraints found compiled already.", registry=r
        )

    def mirror(self, stats: CoreStats, last: CoreStats) -> None:
        """Apply the engine core's gauges and counters (sent with each step) to this registry."""
        self.running.set(stats.running)
        self.waiting.set(stats.waiting)
        self.paused.set(stats.paused)
        self.kv_cache_usage.set(stats.kv_cache_usage)
        for counter, new, old in (
            (self.prompt_tokens, stats.prompt_tokens, last.prompt_tokens),
            (self.generation_tokens, stats.generation_tokens, last.generation_tokens),
            (self.prefix_cache_queries, stats.prefix_cache_queries, last.prefix_cache_queries),
            (self.prefix_cache_hits, stats.prefix_cache_hits, last.prefix_cache_hits),
            (self.preemptions, stats.preemptions, last.preemptions),
            (self.steps.labels("prefill"), stats.prefill_steps, last.prefill_steps),
            (self.steps.labels("decode"), stats.decode_steps, last.decode_steps),
            (self.forward_seconds, stats.forward_seconds, last.forward_seconds),
        ):
            if new > old:
                counter.inc(new - old)
