"""What a server holds: its configuration, the stack and engine once loaded (in a background
thread, so /health answers while it loads), and what it counts (metrics, requests in flight)."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, replace

from edge_adapt.assembly import StackSettings, open_stack
from edge_adapt.cores import LoadWatch
from edge_adapt.defaults import search_default
from edge_adapt.search import BestOfN, SearchResult
from edge_adapt.search.spec import parse_spec
from edge_adapt.server.engine import Engine, Job
from edge_adapt.server.errors import APIError
from edge_adapt.server.gate import Traffic
from edge_adapt.server.jobs import Offer, ServerSettings
from edge_adapt.server.metrics import ServerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``edge-adapt serve`` decides before the models load."""

    stack: StackSettings  # its task, prompt settings and context; its budget is the server-wide default
    offer: Offer  # its default_strategy None: the default search (edge_adapt.defaults) for the loaded models
    max_waiting: int = 8
    api_key: str | None = None
    retry_after_s: int = 2
    warm_up: bool = True
    max_body: int = 4 * 2**20
    drain_s: float = 30.0  # how long SIGTERM waits for requests in flight


def stack_settings_for(config: ServeConfig) -> StackSettings:
    """The stack sized for the largest request this server accepts: the default strategy, or
    ``max_n`` samples, each up to ``max_tokens`` tokens."""
    offer = config.offer
    sizing = [BestOfN(n=offer.max_n, select="majority")]
    if offer.default_strategy is not None:
        sizing.append(parse_spec(offer.default_strategy))
    prompt = replace(config.stack.run.prompt, max_new_tokens=offer.max_tokens)
    return replace(config.stack, strategies=tuple(sizing), run=replace(config.stack.run, prompt=prompt))


class ServerState:
    """The loaded stack and engine, once ready; the load error, if loading failed."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self.traffic = Traffic()
        self.engine: Engine | None = None
        self.settings: ServerSettings | None = None
        self.error: str | None = None
        self._exit = contextlib.ExitStack()
        self._thread = threading.Thread(target=self._load, name="edge-adapt-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _load(self) -> None:
        try:
            stack_settings = stack_settings_for(self.config)
            stack = self._exit.enter_context(open_stack(stack_settings))
            gen = stack.generator
            offer = self.config.offer
            if offer.default_strategy is None:
                default, why = search_default(stack_settings.run.models, stack.searcher.vote_model)
                offer = replace(offer, default_strategy=default, default_why=why)
            self.settings = ServerSettings(
                offer, search=stack.searcher.settings, budget=stack_settings.run.budget,
                max_live_paths=max(s.live_paths for s in stack_settings.strategies), can_judge=bool(stack.prm.available),
                max_prompt_chars=gen.n_ctx * gen.vocab.longest_piece,
            )
            if self.config.warm_up:
                stack.searcher.warm_up(stack.searcher.task.warm_up_problem())
            parallel = stack_settings.parallel
            self.engine = Engine(stack, self.config.max_waiting, self._done, parallel=parallel)
            if stack.threads.load is not None:  # chosen from the load, not given: follow it while serving
                watch = LoadWatch(gen.set_threads).start(stack.threads.threads)
                self._exit.callback(watch.close)
            log.info("ready: %s, task %s%s; %d requests at once; context %d KV cells (a one-sample prompt may have %d "
                     "tokens); n <= %d, max_tokens <= %d, body <= %d bytes; questions with a checkable answer: %s (%s); "
                     "other turns: one sample, streamed", offer.model_id, stack.searcher.task.name,
                     " (chat template)" if stack.searcher.settings.chat else "", parallel, gen.n_ctx,
                     min(gen.n_ctx, gen.seq_ctx) - offer.max_tokens, offer.max_n, offer.max_tokens, self.config.max_body,
                     offer.default_strategy, offer.default_why)
        except Exception as exc:  # reported by /health and every request
            log.exception("loading the models failed")
            self.error = f"{type(exc).__name__}: {exc}"

    def _done(self, job: Job, result: SearchResult | None) -> None:
        if result is not None:
            self.metrics.record_search(result)
        elif job.cancel.is_set():
            self.metrics.cancelled.inc()
        if self.engine is not None:
            self.metrics.kv_cells_used.set(self.engine.stack.generator.kv_cells_used)
            self.metrics.kv_cells_cached.set(self.engine.stack.generator.kv_cells_cached)

    def stop(self) -> None:
        self._thread.join()
        if self.engine is not None:
            self.engine.close()
        self._exit.close()

    def ready(self) -> tuple[Engine, ServerSettings]:
        if self.error is not None:
            raise APIError(503, f"the models failed to load: {self.error}", "server_error", "load_failed")
        if self.engine is None or self.settings is None:
            raise APIError(503, "the models are loading; retry shortly", "server_error", "loading",
                           headers={"Retry-After": str(self.config.retry_after_s)})
        return self.engine, self.settings
