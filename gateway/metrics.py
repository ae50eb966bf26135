"""Prometheus metrics of one gateway process (served at /metrics).

A private registry per app instance, so tests can run several apps in one
process and each one's numbers are its own.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.model_output_invalid = Counter(
            "verdict_model_output_invalid",
            "Requests refused because the model's score was outside its declared output space (no record written)",
            ["model", "version"],
            registry=self.registry,
        )
