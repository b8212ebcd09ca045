"""A busy device: edge-adapt beside a process that keeps every core busy.

1. **Budgets that recover**: `edge-adapt serve` on the shipped default models is started while
   the competing process runs (default threads: the server chooses them), then sent the issue's
   request, ``(454+762)*3`` with ``"edge_adapt": {"energy_j": 3}``, 50 times: the first is cold.
   Printed: how many were answered (target >= 48 of 50), their samples and joules, how many ran
   as probes, the energy label, ERROR lines in the server's log, and what a refusal said. Then
   the same with a thread per core (the old default), where the cold first request is dear.
2. **Threads that fit**: `edge-adapt bench` on the same questions idle and beside the competing
   process, default threads both times (the run chooses them), then the same busy run with
   every core's thread (``--threads <all cores>``, what the default was), on fewer questions.
   Printed: wall time of each, the busy/idle ratio (target <= 1.5x), and accuracy idle vs busy
   with the questions only one of them got right (same seeds: a difference is the threads'). Each
   run's CPU seconds say how many cores it had: beside a spinning process per core a lone thread
   gets about its fair share (2/3 of a core on 2 cores), so the idle run at one thread (also
   printed) bounds what any busy run can reach.

The competitor is one Python process per allowed CPU spinning at normal priority (like a
sensor pipeline or a browser tab that never sleeps). Run it alone on the machine:

    python benchmarks/bench_busy_device.py [--parts server bench] [--questions 120] [--out /tmp/busy]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_server import free_port

SPIN = "import time\nwhile True:\n    pass\n"


@contextmanager
def competitor() -> Iterator[None]:
    """A spinning process per allowed CPU, for the block's duration."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in os.sched_getaffinity(0)]
    time.sleep(1.0)  # up and spinning
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def serve(extra: list[str]) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = Path(f"/tmp/edge-adapt-busy-{port}.log")
    proc = subprocess.Popen([sys.executable, "-m", "edge_adapt.cli", "serve", "--port", str(port), *extra],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "250"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"the server did not become ready in 300 s; its log: {log}")


def budget_requests(requests: int, extra: list[str], label: str) -> None:
    with competitor():
        proc, url, log = serve(extra)
        try:
            answered, refusals, joules, samples, sources, probes = 0, [], [], [], set(), 0
            with httpx.Client(timeout=300) as http:
                for i in range(requests):
                    r = http.post(f"{url}/v1/chat/completions", json={
                        "messages": [{"role": "user", "content": "(454+762)*3"}], "edge_adapt": {"energy_j": 3}})
                    if r.status_code == 200:
                        cost = r.json()["edge_adapt"]
                        answered += 1
                        joules.append(cost["joules"])
                        samples.append(cost["samples"])
                        sources.add(cost["energy_source"])
                        probes += any(d["kind"] == "budget_cap" and d["detail"]["limit"] == "probe" for d in cost["decisions"])
                    else:
                        refusals.append((i + 1, r.status_code, r.json()["error"]["message"]))
        finally:
            proc.terminate()
            proc.wait(60)
    threads = next((line.split("INFO", 1)[-1].strip() for line in log.read_text().splitlines() if "threads:" in line),
                   "threads: as told")
    errors = sum("ERROR" in line for line in log.read_text().splitlines())
    print(f"\n{label}: {answered} of {requests} `energy_j: 3` requests answered beside the competitor "
          f"(target >= 48); J per answer: first {joules[0] if joules else float('nan'):.2f}, "
          f"median {sorted(joules)[len(joules) // 2] if joules else float('nan'):.2f}, max "
          f"{max(joules, default=float('nan')):.2f}; "
          f"samples per answer {sorted(set(samples))}; probes {probes}; energy {sorted(sources)}; ERROR lines in the log: "
          f"{errors}; {threads}")
    for number, status, message in refusals[:3]:
        print(f"  refused request {number} ({status}): {message}")


def bench(out: Path, questions: int, extra: list[str]) -> tuple[float, dict[str, bool]]:
    if out.exists():
        shutil.rmtree(out)
    started, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "edge_adapt.cli", "bench", "-o", str(out), "--limit", str(questions),
                    "--no-plots", *extra], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    correct = {}
    with (out / "records.jsonl").open() as f:
        for line in f:
            record = json.loads(line)
            correct[f"{record['strategy']}|{record['question_id']}"] = bool(record["correct"])
    chosen = json.loads((out / "environment.json").read_text())["threads"]["chosen"]
    print(f"  {out.name}: {wall:.1f} s, CPU {cpu:.1f} s ({cpu / wall:.2f} cores), {sum(correct.values())}/{len(correct)} right, "
          f"threads {chosen}", flush=True)
    return wall, correct


def bench_part(out: Path, questions: int, strategies: list[str]) -> None:
    extra = [arg for s in strategies for arg in ("-s", s)]
    print(f"\n`edge-adapt bench --limit {questions}` ({', '.join(strategies) or 'default strategies'}), default threads:")
    idle_s, idle = bench(out / "idle", questions, extra)
    bench(out / "idle-one-thread", questions, [*extra, "--threads", "1"])  # the work one thread does: the busy run's floor
    with competitor():
        busy_s, busy = bench(out / "busy", questions, extra)
        few = max(1, questions // 6)
        every_core_s, _ = bench(out / "busy-every-core", few, [*extra, "--threads", str(len(os.sched_getaffinity(0)))])
    only_idle = sum(idle[k] and not busy.get(k, False) for k in idle)
    only_busy = sum(busy[k] and not idle.get(k, False) for k in busy)
    print(f"busy / idle wall time: {busy_s / idle_s:.2f}x (target <= 1.5x); with a thread per core, busy: "
          f"{every_core_s / few:.2f} s per question against {idle_s / questions:.2f} idle "
          f"({every_core_s / few / (idle_s / questions):.1f}x)")
    print(f"accuracy idle {sum(idle.values())}/{len(idle)}, busy {sum(busy.values())}/{len(busy)}; right only idle "
          f"{only_idle}, only busy {only_busy}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=("server", "bench"), default=["server", "bench"])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--questions", type=int, default=120)
    parser.add_argument("-s", "--strategy", dest="strategies", action="append", default=[],
                        help="bench strategies (default: bench's own)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/edge-adapt-busy"))
    args = parser.parse_args()
    print(f"{len(os.sched_getaffinity(0))} CPUs; competitor: one spinning process per CPU")
    if "server" in args.parts:
        budget_requests(args.requests, [], "default threads")
        every_core = str(len(os.sched_getaffinity(0)))
        budget_requests(args.requests, ["--threads", every_core], f"--threads {every_core} (a thread per core, the old default)")
    if "bench" in args.parts:
        bench_part(args.out, args.questions, args.strategies)


if __name__ == "__main__":
    main()
