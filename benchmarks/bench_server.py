"""`edge-adapt serve` under load, and what HTTP adds to a search.

Starts the server on the shipped default models, then:

1. **Load**: K concurrent clients (1, 4, 16 by default) send a fixed number of chat requests
   (default-task test questions, the server's default adaptive search); a client told 503 waits
   the Retry-After it was given and sends again. Reported per K: requests completed and failed,
   503s seen, p50/p95 latency, generated tokens per second, joules per answer (with the meter).
2. **Overhead** at K = 1: the same questions and seeds through the library directly (an
   in-process stack built by the same composition root) and through the server, interleaved
   A/B, min and median wall time per request and their ratio (target: server / library <= 1.10).

    python benchmarks/bench_server.py [--requests 48] [--clients 1 4 16] [--overhead-requests 40]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx

from edge_adapt import StackSettings, open_stack
from edge_adapt.models import load_default_models
from edge_adapt.search.spec import DEFAULT_SPEC, parse_spec
from edge_adapt.tasks import ArithmeticTask
from edge_adapt.tasks.expressions import to_conventional

STRATEGY = DEFAULT_SPEC  # the server's default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(threads: int | None, queue: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "edge_adapt.cli", "serve", "--port", str(port), "--queue", str(queue), "-s", STRATEGY]
    if threads:
        args += ["--threads", str(threads)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ,
                                                                                            "EDGE_ADAPT_LOG_LEVEL": "warning"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("the server did not become ready in 120 s")


def questions(n: int) -> list[str]:
    task = ArithmeticTask()
    return [to_conventional(p.question) for p in task.problems("test", -(-n // len(task.levels)))][:n]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load(url: str, clients: int, asks: list[str]) -> dict:
    todo = list(enumerate(asks))
    lock = threading.Lock()
    latencies: list[float] = []
    tokens = joules = 0.0
    failed = busy = 0
    sources: set[str] = set()

    def client() -> None:
        nonlocal tokens, joules, failed, busy
        with httpx.Client(timeout=300) as http:
            while True:
                with lock:
                    if not todo:
                        return
                    i, question = todo.pop(0)
                started = time.perf_counter()
                while True:
                    r = http.post(f"{url}/v1/chat/completions",
                                  json={"messages": [{"role": "user", "content": question}], "seed": i})
                    if r.status_code != 503:
                        break
                    with lock:
                        busy += 1
                    time.sleep(float(r.headers.get("retry-after", "1")))
                with lock:
                    if r.status_code != 200:
                        failed += 1
                        continue
                    latencies.append(time.perf_counter() - started)
                    cost = r.json()["edge_adapt"]
                    tokens += cost["generated_tokens"]
                    joules += cost["joules"] or 0.0
                    sources.add(f"{cost['energy_source']}{' (estimated)' if cost['energy_estimated'] else ''}")

    started = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - started
    done = len(latencies)
    return {"clients": clients, "completed": done, "failed": failed, "busy": busy, "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95), "tokens_per_s": tokens / wall, "joules": joules / max(1, done),
            "source": ", ".join(sorted(sources)), "wall": wall}


def overhead(url: str, asks: list[str], threads: int | None) -> tuple[list[float], list[float]]:
    """Per-request wall time through the library and through the server, interleaved A/B."""
    defaults = load_default_models(None)
    strategy = parse_spec(STRATEGY)
    task = ArithmeticTask()
    settings = StackSettings(defaults.generator, defaults.prm, task, (strategy,), threads=threads)
    library: list[float] = []
    server: list[float] = []
    with open_stack(settings) as stack, httpx.Client(timeout=300) as http:
        stack.searcher.warm_up(task.warm_up_problem())
        for i, question in enumerate(asks):
            problem = task.parse_question(question)
            started = time.perf_counter()
            stack.searcher.run(strategy, problem, seed=i)
            library.append(time.perf_counter() - started)
            started = time.perf_counter()
            r = http.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": question}], "seed": i})
            server.append(time.perf_counter() - started)
            r.raise_for_status()
    return library, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--overhead-requests", type=int, default=40)
    parser.add_argument("--threads", type=int, help="generator and PRM threads, server and library alike (default: all)")
    args = parser.parse_args()
    proc, url = start_server(args.threads, queue=max(args.clients))
    try:
        print(f"default models, {STRATEGY}, {args.requests} requests per row, {os.cpu_count()} CPUs")
        print("| clients | completed | failed | 503 seen | p50 s | p95 s | tokens/s | J/answer | energy |")
        print("|---|---|---|---|---|---|---|---|---|")
        for k in args.clients:
            row = load(url, k, questions(args.requests))
            print(f"| {row['clients']} | {row['completed']} | {row['failed']} | {row['busy']} | {row['p50']:.3f} | "
                  f"{row['p95']:.3f} | {row['tokens_per_s']:.0f} | {row['joules']:.2f} | {row['source']} |", flush=True)
        library, server = overhead(url, questions(args.overhead_requests), args.threads)
        ratio_min, ratio_median = min(server) / min(library), statistics.median(server) / statistics.median(library)
        print(f"\noverhead at K = 1, {len(library)} requests interleaved: library min {min(library) * 1e3:.1f} ms, "
              f"median {statistics.median(library) * 1e3:.1f} ms; server min {min(server) * 1e3:.1f} ms, "
              f"median {statistics.median(server) * 1e3:.1f} ms; server / library: min {ratio_min:.2f}x, "
              f"median {ratio_median:.2f}x (target <= 1.10x)")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
