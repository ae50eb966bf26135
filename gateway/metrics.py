"""Prometheus metrics of one gateway process (served at /metrics).

A private registry per app instance, so tests can run several apps in one
process and each one's numbers are its own; the process, platform and
garbage-collector collectors are registered on it too (``process_*``,
``python_info``, ``python_gc_*``), since the default registry is not served.
docs/operations.md "Metrics" lists every name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["GatewayMetrics", "ModelInfo"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ModelInfo(Collector):
    """``verdict_model_info{model, version, sha256} 1`` for each version this replica has loaded
    (sha256: the artifact's, as in every decision's ``model.sha256``), read at each scrape."""

    def __init__(self, loaded: Callable[[], Iterable[tuple[str, str, str]]]) -> None:
        self._loaded = loaded

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "verdict_model_info", "Model versions loaded by this replica", labels=["model", "version", "sha256"]
        )
        for name, version, sha256 in self._loaded():
            family.add_metric([name, version, sha256], 1)
        yield family


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        if GC_COLLECTOR is not None:  # None on interpreters without gc.get_stats
            GCCollector(registry=self.registry)
        self.build = Info("verdict_build", "This gateway's version, Python, torch and device", registry=self.registry)
        self.requests = Counter(
            "verdict_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "verdict_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "verdict_batch_size",
            "Decisions per micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 48, 64, 128),
            registry=self.registry,
        )
        self.audit_append = Histogram(
            "verdict_audit_append_seconds",
            "Durable audit append latency per batch",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.chain_length = Gauge(
            "verdict_chain_length", "Records in this process's chain", ["chain"], registry=self.registry
        )
        self.decisions = Counter(
            "verdict_decisions", "Decisions returned", ["model", "decision"], registry=self.registry
        )
        self.failures = Counter(
            "verdict_failures", "Requests that failed closed, by reason", ["reason"], registry=self.registry
        )
        # Model isolation (design.md "Isolation"): one broken model is unready by name, the others serve.
        self.model_load_failures = Counter(
            "verdict_model_load_failures",
            "Failed attempts to load a model version (it is unready until one succeeds)",
            ["model", "version"],
            registry=self.registry,
        )
        self.models_unready = Gauge(
            "verdict_models_unready",
            "Model versions this replica failed to load and has not loaded since",
            registry=self.registry,
        )
        # Where a batch's time goes, per model version: one observation per batch group.
        self.score_seconds = Histogram(
            "verdict_score_seconds",
            "Scoring time per micro-batch group of one model version",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.explain_seconds = Histogram(
            "verdict_explain_seconds",
            "Explanation time per micro-batch group of one model version",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "verdict_queue_depth", "Decision submissions waiting for a micro-batch", registry=self.registry
        )
        self.in_flight = Gauge(
            "verdict_in_flight",
            "Decisions submitted and not yet answered (queued, being scored, or being recorded)",
            registry=self.registry,
        )
        self.model_output_invalid = Counter(
            "verdict_model_output_invalid",
            "Requests refused because the model's score was outside its declared output space (no record written)",
            ["model", "version"],
            registry=self.registry,
        )

    def set_build_info(self, *, version: str, python: str, torch: str, device: str) -> None:
        """``verdict_build_info{version, python, torch, device} 1``."""
        self.build.info({"version": version, "python": python, "torch": torch, "device": device})

    def watch_models(self, loaded: Callable[[], Iterable[tuple[str, str, str]]]) -> None:
        """Serve ``verdict_model_info`` from ``loaded()``: (model, version, artifact sha256)."""
        self.registry.register(ModelInfo(loaded))

    def watch_monitor(self, collector: Collector) -> None:
        """Serve the trail monitor's figures (``verdict_monitor_*``, gateway.monitoring) from
        ``collector``, which reads the monitor's current summary (no trail scan at scrape time)."""
        self.registry.register(collector)
