"""Prometheus metrics (``GET /metrics``) and the hooks the worker feeds.

:class:`EngineMetrics` is what the worker calls (no-op by default, so the worker runs
without Prometheus); :class:`PrometheusMetrics` records into a per-app
``CollectorRegistry`` (tests build many apps). The worker calls, from its thread:
``submitted`` per job, ``admitted`` with its prompt length, ``token`` per generated
token, ``finished`` when it ends; :meth:`EngineMetrics.prefix_cache` and
:meth:`EngineMetrics.speculation` are the hooks for the prefix cache and speculative
decoding. :class:`RequestCounter` (ASGI middleware) counts requests by route and status.

Metric names (all prefixed ``mlx_gen_``): ``requests_total{endpoint,status}``,
``prompt_tokens_total``, ``generation_tokens_total``, ``time_to_first_token_seconds``
(submission → first token), ``time_per_output_token_seconds`` (between two tokens of a
job), ``queue_depth`` (jobs waiting), ``running_requests`` (jobs in the batch),
``prefix_cache_hit_tokens_total``, ``prefix_cache_hit_bytes_total``,
``spec_draft_tokens_total``, ``spec_accepted_tokens_total``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class EngineMetrics:
    """What the worker reports; every method is a no-op here (override to record).

    Methods are called on the worker thread (``submitted`` on the request's thread) and
    must not block.
    """

    def submitted(self, job: object) -> None:
        """``job`` was queued."""

    def admitted(self, job: object, prompt_tokens: int) -> None:
        """``job``'s settings resolved; its prompt has ``prompt_tokens`` tokens."""

    def token(self, job: object) -> None:
        """``job`` generated one token."""

    def finished(self, job: object) -> None:
        """``job`` ended (done, failed or cancelled)."""

    def prefix_cache(self, *, hit_tokens: int, hit_bytes: int) -> None:
        """A prompt reused ``hit_tokens`` cached tokens (``hit_bytes`` of KV cache)."""

    def speculation(self, *, drafted: int, accepted: int) -> None:
        """A verification step: ``drafted`` tokens proposed, ``accepted`` of them kept."""


class PrometheusMetrics(EngineMetrics):
    """:class:`EngineMetrics` recorded in ``registry`` (one per app).

    Args:
        running: Returns the jobs in the batch now.
        in_flight: Returns the jobs submitted and not finished.
    """

    def __init__(self, running: Callable[[], int], in_flight: Callable[[], int]) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "mlx_gen_requests",
            "HTTP requests by route and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter("mlx_gen_prompt_tokens", "Prompt tokens", registry=r)
        self.generation_tokens = Counter(
            "mlx_gen_generation_tokens", "Generated tokens", registry=r
        )
        self.ttft = Histogram(
            "mlx_gen_time_to_first_token_seconds",
            "Submission to first token",
            buckets=_LATENCY,
            registry=r,
        )
        self.tpot = Histogram(
            "mlx_gen_time_per_output_token_seconds",
            "Time between two tokens of a job",
            buckets=_LATENCY,
            registry=r,
        )
        Gauge("mlx_gen_running_requests", "Jobs in the batch", registry=r).set_function(running)
        Gauge("mlx_gen_queue_depth", "Jobs waiting for a batch place", registry=r).set_function(
            lambda: max(0, in_flight() - running())
        )
        self.cache_tokens = Counter(
            "mlx_gen_prefix_cache_hit_tokens",
            "Prompt tokens served from the prefix cache",
            registry=r,
        )
        self.cache_bytes = Counter(
            "mlx_gen_prefix_cache_hit_bytes", "KV-cache bytes reused", registry=r
        )
        self.drafted = Counter(
            "mlx_gen_spec_draft_tokens", "Speculative tokens drafted", registry=r
        )
        self.accepted = Counter(
            "mlx_gen_spec_accepted_tokens", "Speculative tokens accepted", registry=r
        )
        self._start: dict[int, float] = {}  # id(job) → submission time
        self._last: dict[int, float] = {}  # id(job) → its last token's time

    def submitted(self, job: object) -> None:
        """Start ``job``'s first-token clock."""
        self._start[id(job)] = time.perf_counter()

    def admitted(self, job: object, prompt_tokens: int) -> None:
        """Count the prompt's tokens."""
        self.prompt_tokens.inc(prompt_tokens)

    def token(self, job: object) -> None:
        """Count one token; observe TTFT (first) or the time since the previous token."""
        now, key = time.perf_counter(), id(job)
        self.generation_tokens.inc()
        if key in self._last:
            self.tpot.observe(now - self._last[key])
        else:
            self.ttft.observe(now - self._start.get(key, now))
        self._last[key] = now

    def finished(self, job: object) -> None:
        """Forget ``job``'s clocks."""
        self._start.pop(id(job), None)
        self._last.pop(id(job), None)

    def prefix_cache(self, *, hit_tokens: int, hit_bytes: int) -> None:
        """Count a prefix-cache hit."""
        self.cache_tokens.inc(hit_tokens)
        self.cache_bytes.inc(hit_bytes)

    def speculation(self, *, drafted: int, accepted: int) -> None:
        """Count one verification's drafted and accepted tokens."""
        self.drafted.inc(drafted)
        self.accepted.inc(accepted)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class RequestCounter:
    """ASGI middleware: count each HTTP response by route and status.

    The endpoint label is the request's path when a route has it (``/v1/messages``), else
    ``"other"``, so the label set stays bounded; an unexpected exception counts as a 500.
    """

    def __init__(self, app: ASGIApp, metrics: PrometheusMetrics, routes: set[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the response when it starts."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.routes else "other"

        started = False

        async def counted(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.requests.labels(endpoint, str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            if not started:  # The outermost handler will answer a 500.
                self.metrics.requests.labels(endpoint, "500").inc()
            raise
