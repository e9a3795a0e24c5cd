"""The worker's Prometheus endpoint (``METRICS_PORT``; off by default).

Why optional: most deployments read the structured logs and ``cos-worker status``;
those that run Prometheus scrape each worker. ``prometheus_client`` is imported only
when the port is set, so a worker without it pays nothing (memory included). The names
and a sample dashboard are in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from worker.core.settings import Settings

log = structlog.get_logger("worker.queue.metrics")

#: Item latency buckets (seconds, enqueue to outcome): a live e-mail takes ~0.1-0.3 s.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200)
#: Inputs per embedding request.
BATCH_BUCKETS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    """Counters and histograms of one worker; every method is a no-op while disabled."""

    def __init__(
        self,
        settings: Settings,
        worker: str,
        *,
        in_flight: Callable[[], float] = lambda: 0,
        degraded: Callable[[], float] = lambda: 0,
    ) -> None:
        """``in_flight`` and ``degraded`` are read at each scrape (the worker keeps them)."""
        self.enabled = settings.metrics_port is not None
        self.port: int | None = None
        self._server: Any = None
        if not self.enabled:
            return
        import prometheus_client as prom
        from prometheus_client import Counter, Gauge, Histogram

        registry = prom.CollectorRegistry()
        prom.ProcessCollector(registry=registry)
        prom.PlatformCollector(registry=registry)
        labels = {"worker": worker}
        self._jobs = Counter(
            "cos_worker_items", "Items by outcome (done, skipped, failed, noop, retry)",
            ["outcome"], registry=registry,
        ).labels  # fmt: skip
        self._latency = Histogram(
            "cos_worker_item_latency_seconds", "Enqueue to outcome, per item",
            ["priority"], buckets=LATENCY_BUCKETS, registry=registry,
        ).labels  # fmt: skip
        self._requests = Counter(
            "cos_worker_embedding_requests", "Embedding API answers (ok, rate_limited)",
            ["outcome"], registry=registry,
        ).labels  # fmt: skip
        self._tokens = Counter(
            "cos_worker_embedding_tokens", "Tokens sent in successful requests", registry=registry
        )
        self._batch = Histogram(
            "cos_worker_embedding_batch_inputs", "Inputs per successful request",
            buckets=BATCH_BUCKETS, registry=registry,
        )  # fmt: skip
        Gauge(
            "cos_worker_items_in_flight", "Item runs in progress", registry=registry
        ).set_function(in_flight)
        Gauge(
            "cos_worker_budget_degraded",
            "1 while Redis is unreachable and the worker spends its local share",
            registry=registry,
        ).set_function(degraded)
        Gauge("cos_worker_info", "This worker", ["worker"], registry=registry).labels(**labels).set(
            1
        )
        self._server, _ = prom.start_http_server(
            settings.metrics_port or 0, addr=settings.metrics_host, registry=registry
        )
        self.port = int(self._server.server_port)
        log.info("metrics.serving", port=self.port)

    def item(self, outcome: str, latency_s: float | None, live: bool) -> None:
        """One item's outcome, and its latency from enqueue when known."""
        if not self.enabled:
            return
        self._jobs(outcome).inc()
        if latency_s is not None and latency_s >= 0:
            self._latency("live" if live else "bulk").observe(latency_s)

    def request(self, outcome: str, tokens: int, inputs: int) -> None:
        """A batcher observer: one embedding request's outcome."""
        if not self.enabled:
            return
        self._requests(outcome).inc()
        if outcome == "ok":
            self._tokens.inc(tokens)
            self._batch.observe(inputs)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
