"""``edge-adapt serve``: the OpenAI-compatible local server (needs the [server] extra)."""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edge_adapt.budget.guard import Budget
from edge_adapt.cli.console import err_console
from edge_adapt.cli.options import (
    FiniteFloat,
    budget_options,
    calibration_option,
    model_options,
    no_prm_option,
    prompt_options,
    resolve_models,
)
from edge_adapt.defaults import DEFAULT_SPEC, Defaults, choose, runs_without_prm, unservable
from edge_adapt.errors import EdgeAdaptError, MissingDependencyError
from edge_adapt.generator import SamplingParams
from edge_adapt.generator.config import default_parallel
from edge_adapt.search.spec import parse_spec
from edge_adapt.search.strategy import MAX_LIVE_PATHS
from edge_adapt.settings import MeterSettings, ModelSettings, PromptSettings, RunSettings
from edge_adapt.tasks import TASK_NAMES, Task, get_task

if TYPE_CHECKING:
    from edge_adapt.server import ServeConfig

log = logging.getLogger(__name__)

def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; any but loopback needs --api-key.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", envvar="EDGE_ADAPT_API_KEY",
              help="Require 'Authorization: Bearer KEY' on /v1 (or $EDGE_ADAPT_API_KEY).")
@click.option("--task", "task_name", type=click.Choice(TASK_NAMES),
              help="How turns are prompted and answered [default: chat for a model given with -m, else default (the "
                   "shipped arithmetic models)].")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSONL file for --task gsm8k/math (its first question warms the server up).")
@click.option("-s", "--strategy", "spec", metavar="SPEC",
              help=f"The search a checkable question gets when the request names none [default: {DEFAULT_SPEC} with a PRM, "
                   "adaptive_vote where the generator was calibrated with that PRM; without one the generator's "
                   "calibrated adaptive_vote, else consistency].")
@click.option("--max-n", type=click.IntRange(1, MAX_LIVE_PATHS), default=8, show_default=True,
              help="Most samples (n) a request may ask for; sizes the KV cache with --max-tokens.")
@click.option("--max-tokens", type=click.IntRange(1, 32768), help="Most tokens one solution may have [default: 512].")
@click.option("--ctx", type=click.IntRange(256, 1 << 20),
              help="KV cells for prompts and samples together [default: the model's training context, up to 8192, "
                   "and at least what --max-n x --max-tokens needs].")
@click.option("--max-body", type=click.IntRange(1024, 1 << 30), default=4 * 2**20, show_default=True,
              help="Largest request body (bytes); larger ones get 413 before they are read.")
@click.option("--drain", "drain_s", type=FiniteFloat(min=0), default=30.0, show_default=True,
              help="Seconds SIGTERM waits for requests in flight (streams included) before stopping.")
@click.option("--queue", "max_waiting", type=click.IntRange(0, 1024), default=8, show_default=True,
              help="Requests that may wait while --parallel run; past it, 503 with Retry-After.")
@click.option("-np", "--parallel", type=click.IntRange(1, 64),
              help="Requests searched at once, their decodes batched together (llama-server's -np) "
                   "[default: 16 with GPU offload, 4 on a CPU].")
@click.option("--temperature", type=FiniteFloat(min=0), default=0.7, show_default=True, help="When a request sets none.")
@click.option("--no-warm-up", is_flag=True, help="Skip measuring this device's costs before serving.")
@click.option("--no-prompt-cache", is_flag=True,
              help="Evaluate every prompt whole. By default the last prompt's KV cells are kept and a prompt that starts "
                   "the same way (a chat's earlier turns) evaluates only what differs; like llama-server's cache_prompt, "
                   "that may change a seeded sample's tokens (logits of a batch of one differ in the last bits).")
@model_options
@no_prm_option
@calibration_option
@prompt_options
@budget_options
def serve_cmd(host: str, port: int, api_key: str | None, task_name: str | None, data: Path | None, spec: str | None,
              max_n: int, max_tokens: int | None, ctx: int | None, max_body: int, drain_s: float, max_waiting: int,
              parallel: int | None, temperature: float, no_warm_up: bool, no_prompt_cache: bool, generator_path: Path | None,
              prm_path: Path | None, models: Path | None, threads: int | None, gpu_layers: int, no_prm: bool,
              calibration: Path | None, prompt: PromptSettings, budget: Budget, meter: MeterSettings) -> None:
    """Serve a model over an OpenAI-compatible HTTP API, searching adaptively where it pays.

    `edge-adapt serve -m model.gguf` serves any chat GGUF with its own template: turns answered
    as typed, questions with a checkable answer (a number, a math result) searched adaptively,
    other turns answered with one sample, streamed token by token. Without -m it serves the
    shipped arithmetic models (adaptive search with their PRM).

    POST /v1/chat/completions and /v1/completions take the usual fields and an "edge_adapt"
    object (a strategy spec, budgets); responses say what the search did and spent. GET
    /v1/models, /health, /metrics. The reference: docs/SERVER.md.

    \b
    Examples:
      edge-adapt serve -m SmolLM2-135M-Instruct.gguf
      edge-adapt serve
      edge-adapt serve --host 0.0.0.0 --api-key "$KEY" --energy 20
    """
    try:
        import uvicorn  # noqa: F401  (the extra's check, before loading anything)

        from edge_adapt.server import Offer, ServeConfig
    except ImportError as exc:
        raise MissingDependencyError(f"edge-adapt serve needs the server extra ({exc.name} is missing): "
                                     "pip install 'edge-adapt[server]'") from None
    if not is_loopback(host) and not api_key:
        raise click.UsageError(f"binding {host} exposes the server beyond this machine: pass --api-key (or set "
                               "EDGE_ADAPT_API_KEY), or bind 127.0.0.1")
    if prompt.max_new_tokens is not None and max_tokens is not None and prompt.max_new_tokens != max_tokens:
        raise click.UsageError("--max-new-tokens is another name for --max-tokens; give one")
    max_tokens = max_tokens or prompt.max_new_tokens or 512
    prompt = replace(prompt, max_new_tokens=None)  # the cap is each request's (max_tokens, up to this default)
    mine = generator_path is not None
    chosen = resolve_models(generator_path, prm_path, models, runs_without_prm(no_prm, mine, prm_path is not None),
                            threads=threads, gpu_layers=gpu_layers, calibration=calibration)
    defaults = choose("serve", chosen, own_generator=mine, task=task_name, strategies=(spec,) if spec else ())
    _check_startup(defaults, chosen, given=spec is not None, max_tokens=max_tokens, ctx=ctx)
    task = _task(defaults, data, prompt)
    from edge_adapt.assembly import StackSettings

    if parallel is None:
        parallel = default_parallel(chosen.gpu_layers, serving=True)[0]
    run = RunSettings(chosen, prompt, SamplingParams(temperature=temperature), budget=budget, meter=meter)
    stack = StackSettings(run, task, (), context=ctx, context_from_model=0 if ctx else 8192, prompt_cache=not no_prompt_cache,
                          parallel=parallel)
    why = "the server's default strategy (--strategy)" if spec else defaults.why
    offer = Offer(chosen.generator.stem, defaults.strategies[0], why, max_n=max_n, max_tokens=max_tokens)
    config = ServeConfig(stack=stack, offer=offer, max_waiting=max_waiting, api_key=api_key or None, warm_up=not no_warm_up,
                         max_body=max_body, drain_s=drain_s)
    prm = "no PRM" if chosen.prm is None else chosen.prm
    err_console.print(f"serving {chosen.generator.name} ({prm}), task {defaults.task}, on http://{host}:{port}"
                      f"{' (API key required)' if api_key else ''}; loading...", highlight=False)
    _run(config, host, port)


def _check_startup(defaults: Defaults, models: ModelSettings, *, given: bool, max_tokens: int, ctx: int | None) -> None:
    """Flags that would leave the server unable to serve its own default refuse to start (exit 2),
    before any model loads."""
    problem = unservable(defaults.strategies[0], models, flag="--strategy" if given else "the default search")
    if problem is not None:
        raise click.UsageError(problem)
    if ctx is not None and ctx <= max_tokens:
        raise click.UsageError(f"--ctx {ctx} cannot hold --max-tokens {max_tokens} and a prompt: use --ctx "
                               f"{max_tokens + 1024} or more, or a smaller --max-tokens")


def _task(defaults: Defaults, data: Path | None, prompt: PromptSettings) -> Task:
    """The server's task, and its default strategy checked, before anything loads."""
    try:
        task = get_task(defaults.task, data, prompt.prompt_template)
        parse_spec(defaults.strategies[0])
    except EdgeAdaptError as exc:
        raise click.UsageError(str(exc)) from None
    return task


def _run(config: ServeConfig, host: str, port: int) -> None:
    """Serve until SIGTERM or Ctrl-C (a SIGTERM drains first: see DrainingServer)."""
    import uvicorn

    from edge_adapt.server import create_app
    from edge_adapt.server.drain import DrainingServer
    from edge_adapt.server.http_protocol import JSONErrorsProtocol
    from edge_adapt.server.memory import hold_malloc_steady

    for name in ("edge_adapt.server", "edge_adapt.cores"):  # the ready line, and the threads chosen (and changed)
        logging.getLogger(name).setLevel(min(logging.INFO, logging.getLogger().level))
    hold_malloc_steady()
    app = create_app(config)
    server = DrainingServer(uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=5, http=JSONErrorsProtocol,
                                           log_level=os.environ.get("EDGE_ADAPT_LOG_LEVEL", "info")),
                            app.state.edge_adapt.traffic, config.drain_s)
    server.run()
