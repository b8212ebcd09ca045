"""Prometheus metrics of one server (its own registry, so two apps in one process never mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from edge_adapt.assembly import Stack
from edge_adapt.search import SearchResult

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("edge_adapt_requests", "HTTP requests answered", ("endpoint", "status"), registry=r)
        self.generated_tokens = Counter("edge_adapt_generated_tokens", "Tokens generated (every sample)", registry=r)
        self.prompt_tokens = Counter("edge_adapt_prompt_tokens", "Prompt tokens prefilled", registry=r)
        self.prm_tokens = Counter("edge_adapt_prm_tokens", "Tokens the PRM scored", registry=r)
        self.prm_calls = Counter("edge_adapt_prm_calls", "PRM scoring calls", registry=r)
        self.samples = Counter("edge_adapt_samples", "Solutions drawn", registry=r)
        self.joules = Counter("edge_adapt_joules", "Energy of the searches", ("source", "estimated"), registry=r)
        self.latency = Histogram("edge_adapt_request_seconds", "Request latency", ("endpoint",), buckets=_LATENCY_BUCKETS,
                                 registry=r)
        self.search_seconds = Histogram("edge_adapt_search_seconds", "Search wall time", buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("edge_adapt_queue_depth", "Requests running or waiting", registry=r)
        self.kv_cells_used = Gauge("edge_adapt_kv_cells_used", "Generator KV cells held (0 between requests)", registry=r)
        self.kv_cells_cached = Gauge("edge_adapt_kv_cells_cached", "Generator KV cells held only by the prompt cache",
                                     registry=r)
        self.meter_joules = Gauge("edge_adapt_meter_joules", "The meter's joules since the server started (idle included)",
                                  registry=r)
        self.shared_joules = Gauge("edge_adapt_meter_joules_while_searching",
                                   "The meter's joules while searches ran: what edge_adapt_joules splits over them", registry=r)
        self.decodes = Gauge("edge_adapt_decodes", "llama_decode calls (every search's rows batched together)", registry=r)
        self.decode_rows = Gauge("edge_adapt_decode_rows", "Rows those decodes carried (their ratio: the mean batch)",
                                 registry=r)
        self.cancelled = Counter("edge_adapt_cancelled", "Searches stopped because the client went away", registry=r)

    def record_search(self, result: SearchResult) -> None:
        c = result.cost
        self.generated_tokens.inc(c.generated_tokens)
        self.prompt_tokens.inc(c.prompt_tokens)
        self.prm_tokens.inc(c.prm_tokens)
        self.prm_calls.inc(c.prm_calls)
        self.samples.inc(c.samples)
        self.search_seconds.observe(c.wall_s)
        if c.joules is not None:
            self.joules.labels(c.energy_source or "unknown", str(bool(c.energy_estimated)).lower()).inc(max(0.0, c.joules))

    def refresh(self, stack: Stack, pending: int) -> None:
        """The gauges read at scrape time: the queue, the meter, the decodes and their rows."""
        self.queue_depth.set(pending)
        self.meter_joules.set(stack.policy.read().joules)
        self.shared_joules.set(stack.policy.ledger.measured)
        self.decodes.set(stack.generator.scheduler.decodes)
        self.decode_rows.set(stack.generator.scheduler.rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
