"""Prometheus metrics for ``GET /metrics``.

Each proxy instance has its own registry (tests run several in one process), and no
label carries a user, session or model: those are unbounded and would turn the
scrape into a usage report readable by anyone who can reach the port. Per-user and
per-session numbers are in the access log and ``/admin/usage``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ProxyMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5, 30, 120, 600, float("inf"))


class ProxyMetrics:
    """The proxy's counters, histograms and gauges, in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "claude_pods_proxy_requests",
            "Requests answered, by route and HTTP status.",
            ["route", "status"],
            registry=r,
        )
        self.rejections = Counter(
            "claude_pods_proxy_rejections",
            "Requests refused by the proxy itself, by reason.",
            ["reason"],
            registry=r,
        )
        self.duration = Histogram(
            "claude_pods_proxy_request_duration_seconds",
            "Time from request to the last response byte, forwarded routes only.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_headers = Histogram(
            "claude_pods_proxy_upstream_response_seconds",
            "Time from a request's arrival to the upstream's response head.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "claude_pods_proxy_tokens",
            "Tokens charged, by kind.",
            ["kind"],
            registry=r,
        )
        self.cost = Counter(
            "claude_pods_proxy_cost_usd", "Estimated spend charged to budgets.", registry=r
        )
        self.in_flight = Gauge(
            "claude_pods_proxy_in_flight", "Forwarded requests in progress.", registry=r
        )
        self.upstream_errors = Counter(
            "claude_pods_proxy_upstream_errors",
            "Upstream failures: connect (refused, TLS, timeout), stall (silent for the stall "
            "timeout), broken (closed mid-reply).",
            ["kind"],
            registry=r,
        )
        self.client_disconnects = Counter(
            "claude_pods_proxy_client_disconnects",
            "Clients that went away before their reply ended (upstream request cancelled).",
            registry=r,
        )
        self.key_reloads = Counter(
            "claude_pods_proxy_key_reloads", "Times a changed API key file was loaded.", registry=r
        )
        self.revocations = Counter(
            "claude_pods_proxy_revocations", "Revocations received, by kind.", ["kind"], registry=r
        )
        # Children looked up once: labels() costs a dict lookup and a lock per call.
        self._requests_by_label: dict[tuple[str, int], Any] = {}
        self._duration_by_route = {
            route: self.duration.labels(route) for route in ("messages", "count_tokens")
        }
        self._tokens_by_kind = {
            kind: self.tokens.labels(kind)
            for kind in ("input", "output", "cache_creation_input", "cache_read_input")
        }

    def count_request(self, route: str, status: int) -> None:
        child = self._requests_by_label.get((route, status))
        if child is None:
            child = self._requests_by_label[(route, status)] = self.requests.labels(
                route, str(status)
            )
        child.inc()

    def observe_duration(self, route: str, seconds: float) -> None:
        self._duration_by_route[route].observe(seconds)

    def add_tokens(self, input_: int, output: int, cache_write: int, cache_read: int) -> None:
        kinds = self._tokens_by_kind
        if input_:
            kinds["input"].inc(input_)
        if output:
            kinds["output"].inc(output)
        if cache_write:
            kinds["cache_creation_input"].inc(cache_write)
        if cache_read:
            kinds["cache_read_input"].inc(cache_read)
