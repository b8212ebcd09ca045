"""`edge-adapt serve` as a client sees it: the real server in its own process on a free port, the
shipped default models (search with a PRM) and SmolLM2-135M-Instruct (a real chat model, no PRM),
talked to over real HTTP with httpx and the `openai` client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai")

QUESTION = "(454+762)*3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"edge-adapt-serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_adapt.cli", "serve", "--port", str(self.port), "--threads", "1", *args],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                r = httpx.get(f"{self.url}/health", timeout=2)
                if r.status_code == 200:
                    return
                assert r.status_code == 503, r.text
                assert r.json()["status"] == "loading", r.text
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready after {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def metric(self, name: str) -> float:
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in /metrics")


@pytest.fixture(scope="module")
def default_server() -> Iterator[Server]:
    server = Server([])
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def smol_server(smollm2_gguf: Path) -> Iterator[Server]:
    """SmolLM2 served as a chat model with one flag (its own template, no PRM, no data file)."""
    server = Server(["-m", str(smollm2_gguf), "--max-n", "2", "--max-tokens", "96", "--queue", "1", "--no-warm-up",
                     "--ctx", "1024", "--parallel", "1"])
    server.wait_ready()
    yield server
    server.stop()


def chat(server: Server, content: str = QUESTION, **body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": content}], **body},
                      timeout=120)


# -- answers and what they cost ----------------------------------------------------------------


def test_chat_through_the_openai_client_searches_and_reports_the_cost(default_server: Server) -> None:
    client = openai.OpenAI(base_url=f"{default_server.url}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["generator-Q8_0"]
    reply = client.chat.completions.create(model="generator-Q8_0", messages=[{"role": "user", "content": QUESTION}], seed=3)
    assert len(reply.choices) == 1
    assert reply.choices[0].message.content.strip().endswith("A:3648")
    cost = reply.model_extra["edge_adapt"]
    assert cost["mode"] == "search"
    assert cost["strategy"] == "adaptive:price=8"
    assert cost["answer"] == "3648"
    assert cost["samples"] >= 1
    assert cost["prm_calls"] >= 1
    assert cost["prm_tokens"] > 0
    assert cost["energy_source"]
    assert cost["joules"] > 0
    assert cost["energy_estimated"] in (True, False)
    assert 0 <= cost["quantiles"]["q10"] <= cost["quantiles"]["q50"] <= cost["quantiles"]["q90"] <= 1
    assert [d["kind"] for d in cost["decisions"]][-1] == "select"
    assert reply.usage.completion_tokens == cost["generated_tokens"] > 0


def test_n_samples_are_decoded_together_from_one_prompt(default_server: Server) -> None:
    body = chat(default_server, n=4, seed=5, temperature=1.0).json()
    assert len(body["choices"]) == 4
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    cost = body["edge_adapt"]
    assert cost["mode"] == "sample"
    assert cost["samples"] == 4
    assert cost["prm_calls"] == 0
    one = chat(default_server, seed=5, edge_adapt={"strategy": "sample"}).json()
    assert body["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]  # the prompt is prefilled once for all four


def test_streaming_sends_the_same_solution_step_by_step_then_the_cost(default_server: Server) -> None:
    client = openai.OpenAI(base_url=f"{default_server.url}/v1", api_key="unused")
    whole = client.chat.completions.create(model="generator-Q8_0", messages=[{"role": "user", "content": QUESTION}], seed=11)
    chunks = list(client.chat.completions.create(model="generator-Q8_0", messages=[{"role": "user", "content": QUESTION}],
                                                 seed=11, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # steps, not one blob
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.model_extra["edge_adapt"]["answer"] == "3648"


def test_budgets_are_honoured_and_reported(default_server: Server) -> None:
    free = chat(default_server, seed=2, edge_adapt={"strategy": "best_of_n:n=8"}).json()["edge_adapt"]
    capped = chat(default_server, seed=2, edge_adapt={"strategy": "best_of_n:n=8", "tokens": 120}).json()["edge_adapt"]
    assert capped["budget"] == {"tokens": 120}
    assert capped["generated_tokens"] <= 120 < free["generated_tokens"]
    assert capped["samples"] < free["samples"] == 8
    assert any(d["kind"] == "budget_cap" for d in capped["decisions"])
    too_small = chat(default_server, edge_adapt={"energy_j": 1e-6})
    assert too_small.status_code == 400
    assert too_small.json()["error"]["code"] == "budget_too_small"
    # a refusal is a line in the log that says why, not an error with a traceback
    time.sleep(0.5)
    log = default_server.log.read_text()
    assert "budget_too_small" in log
    assert "never retrieved" not in log
    assert "Traceback" not in log


def test_the_completions_endpoint(default_server: Server) -> None:
    body = httpx.post(f"{default_server.url}/v1/completions", json={"prompt": QUESTION, "seed": 1, "stop": ["\n\nA:"]},
                      timeout=60).json()
    assert body["object"] == "text_completion"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "A:" not in choice["text"]
    assert choice["text"].startswith("454+762=1216")


def test_requests_do_not_leak_into_each_other(default_server: Server) -> None:
    """The same seed gives the same answer and cost alone and beside another request."""
    alone = [chat(default_server, seed=s, temperature=1.0, edge_adapt={"strategy": "best_of_n:n=4"}).json() for s in (7, 8)]
    with httpx.Client(timeout=60) as client:
        results: dict[int, dict] = {}

        def send(seed: int) -> None:
            results[seed] = client.post(f"{default_server.url}/v1/chat/completions", json={
                "messages": [{"role": "user", "content": QUESTION}], "seed": seed, "temperature": 1.0,
                "edge_adapt": {"strategy": "best_of_n:n=4"}}).json()

        threads = [threading.Thread(target=send, args=(s,)) for s in (7, 8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for seed, before in zip((7, 8), alone, strict=True):
        after = results[seed]
        assert after["choices"][0]["message"]["content"] == before["choices"][0]["message"]["content"]
        for key in ("generated_tokens", "prm_tokens", "samples"):
            assert after["edge_adapt"][key] == before["edge_adapt"][key]


# -- bad requests: a clean 4xx that names the field --------------------------------------------


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "hello there"}]}, 400, "messages"),  # not a default-task question
    ({"messages": [{"role": "assistant", "content": QUESTION}]}, 400, "messages"),  # the last turn is not the user's
    ({"messages": [{"role": "robot", "content": QUESTION}]}, 400, "messages.0.role"),
    ({"messages": [{"role": "user", "content": QUESTION}], "n": 99}, 400, "n"),
    ({"messages": [{"role": "user", "content": QUESTION}], "n": 0}, 400, "n"),
    ({"messages": [{"role": "user", "content": QUESTION}], "n": 2, "edge_adapt": {"strategy": "best_of_n:n=4"}}, 400, "n"),
    ({"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 10**6}, 400, "max_tokens"),
    ({"messages": [{"role": "user", "content": QUESTION}], "temperature": -1}, 400, "temperature"),
    ({"messages": [{"role": "user", "content": QUESTION}], "top_p": 0}, 400, "top_p"),
    ({"messages": [{"role": "user", "content": QUESTION}], "seed": -4}, 400, "seed"),
    ({"messages": [{"role": "user", "content": QUESTION}], "model": "gpt-4o"}, 404, "model"),
    ({"messages": [{"role": "user", "content": QUESTION}], "edge_adapt": {"strategy": "nope:n=2"}}, 400, "edge_adapt.strategy"),
    ({"messages": [{"role": "user", "content": QUESTION}], "edge_adapt": {"strategy": "best_of_n:n=100"}}, 400,
     "edge_adapt.strategy"),
    ({"messages": [{"role": "user", "content": QUESTION}], "edge_adapt": {"energy_j": -3}}, 400, "edge_adapt.energy_j"),
    ({"messages": [{"role": "user", "content": QUESTION}], "edge_adapt": {"latency_s": 1e9}}, 400, "edge_adapt.latency_s"),
    ({"messages": [{"role": "user", "content": QUESTION}], "edge_adapt": {"tokens": 0}}, 400, "edge_adapt.tokens"),
    ({"messages": [{"role": "user", "content": QUESTION}], "edge_adapt": {"energyj": 3}}, 400, "edge_adapt.energyj"),
    ({"prompt": [QUESTION, QUESTION]}, 400, "prompt"),
])
def test_bad_requests_get_an_openai_error_naming_the_field(default_server: Server, body: dict, status: int, param: str) -> None:
    endpoint = "completions" if "prompt" in body else "chat/completions"
    r = httpx.post(f"{default_server.url}/v1/{endpoint}", json=body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_malformed_bodies_and_unknown_routes(default_server: Server) -> None:
    r = httpx.post(f"{default_server.url}/v1/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(f"{default_server.url}/v1/chat/completions", content=b'{"messages": [{"role": "user", "content": "1+2"}],'
                   b' "temperature": NaN}', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "temperature"
    r = httpx.get(f"{default_server.url}/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"


def test_metrics_count_what_was_served(default_server: Server) -> None:
    before = default_server.metric("edge_adapt_samples_total")
    chat(default_server, seed=1, edge_adapt={"strategy": "best_of_n:n=4"})
    assert default_server.metric("edge_adapt_samples_total") == before + 4
    text = httpx.get(f"{default_server.url}/metrics").text
    for name in ("edge_adapt_generated_tokens_total", "edge_adapt_prm_tokens_total", "edge_adapt_request_seconds_bucket",
                 "edge_adapt_queue_depth", 'edge_adapt_joules_total{estimated="true",source="estimate:cpu-time'):
        assert name in text
    assert default_server.metric("edge_adapt_kv_cells_used") == 0


# -- a real chat model without a PRM ------------------------------------------------------------


def test_a_chat_model_votes_adaptively_on_checkable_questions_and_samples_once_otherwise(smol_server: Server) -> None:
    body = chat(smol_server, "What is 7+4?", seed=0, max_tokens=64).json()
    cost = body["edge_adapt"]
    assert cost["mode"] == "search"
    assert cost["prm"] is False
    assert cost["strategy"].startswith("consistency:")
    assert "Adaptive-Consistency" in cost["why"]
    assert cost["samples"] >= 2
    assert cost["prm_calls"] == 0
    assert cost["quantiles"] is None
    haiku = chat(smol_server, "Write a haiku about rain", seed=0, max_tokens=64).json()
    assert haiku["edge_adapt"]["mode"] == "single"
    assert haiku["edge_adapt"]["samples"] == 1
    assert "cannot be compared" in haiku["edge_adapt"]["why"]
    assert haiku["choices"][0]["message"]["content"].strip()
    # a turn with nothing to vote on, and no keyword to say so: its first two samples decide, and the reply is one of them
    greeting = chat(smol_server, "Hello! Who are you?", seed=0, max_tokens=48).json()
    looked = greeting["edge_adapt"]
    summary = next(d for d in looked["decisions"] if d["kind"] == "adaptive_vote")
    if looked["answer"] is None:  # the usual case: two introductions, no number in either
        assert looked["samples"] == 2
        assert summary["detail"]["stop"] == "no_answer"
    assert looked["mode"] == "search"
    assert greeting["choices"][0]["message"]["content"].strip()
    forced = chat(smol_server, "Write a haiku about rain", max_tokens=32, edge_adapt={"strategy": "majority:n=2"}).json()
    assert forced["edge_adapt"]["mode"] == "single"
    assert forced["choices"][0]["message"]["content"].strip()
    # the chat template wrapped the message, and nothing else did (no prompt wrapper)
    assert 10 < body["usage"]["prompt_tokens"] < 20
    assert body["choices"][0]["message"]["content"]
    judged = chat(smol_server, "What is 7+4?", edge_adapt={"strategy": "best_of_n:n=2"})
    assert judged.status_code == 400
    assert judged.json()["error"]["param"] == "edge_adapt.strategy"
    voted = chat(smol_server, "What is 7+4?", seed=0, max_tokens=64, edge_adapt={"strategy": "majority:n=2"}).json()
    assert voted["edge_adapt"]["mode"] == "search"
    assert voted["edge_adapt"]["samples"] == 2  # a vote needs no PRM
    assert voted["edge_adapt"]["strategy"] == "majority:n=2"  # named as asked, not as the best_of_n it runs as


def test_a_prompt_over_the_context_is_a_400_with_the_numbers(smol_server: Server) -> None:
    r = chat(smol_server, "What is 7+4? " + "Think hard. " * 1500)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["param"] == "messages"
    assert "the context holds 2048" in error["message"]
    assert "at most 1856 tokens" in error["message"]
    streamed = chat(smol_server, "Think hard. " * 1500, stream=True)  # refused before the stream starts
    assert streamed.status_code == 400
    assert streamed.json()["error"]["code"] == "context_length_exceeded"
    # a prompt longer than the old fixed 512-token room fits: the context is sized per request
    long_ok = chat(smol_server, "Think hard. " * 200 + "What is 7+4?", max_tokens=8)
    assert long_ok.status_code == 200
    assert long_ok.json()["usage"]["prompt_tokens"] > 600


def test_parallel_requests_stream_together_each_with_its_own_cost(smollm2_gguf: Path) -> None:
    """--parallel 2: two streaming clients are answered together (both stream before either ends),
    each with its own tokens and joules."""
    server = Server(["-m", str(smollm2_gguf), "--max-n", "2", "--max-tokens", "48", "--no-warm-up", "--parallel", "2"])
    try:
        server.wait_ready()
        body = {"messages": [{"role": "user", "content": "Write a long story about a cat."}], "max_tokens": 48,
                "temperature": 0.0, "stream": True, "seed": 3}
        first: dict[int, float] = {}
        done: dict[int, float] = {}
        content: dict[int, str] = {}
        ends: dict[int, dict] = {}

        def stream(i: int) -> None:
            text = ""
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120) as response:
                for line in response.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    delta = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
                    if delta:
                        first.setdefault(i, time.monotonic())
                        text += delta
                    if chunk.get("edge_adapt", {}).get("generated_tokens") is not None:
                        ends[i] = chunk["edge_adapt"]
            done[i] = time.monotonic()
            content[i] = text

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert max(first.values()) < min(done.values())  # the second streamed before the first ended
        assert content[0] == content[1]
        assert content[0]  # the same request, the same tokens, whoever shared the batch
        for cost in ends.values():
            assert cost["generated_tokens"] > 0
            assert cost["joules"] > 0
    finally:
        server.stop()


def test_a_full_queue_answers_503_with_retry_after(smol_server: Server) -> None:
    """One running and one waiting (--queue 1): the third is turned away at once."""
    slow = {"messages": [{"role": "user", "content": "Write a long story about 7+4."}], "max_tokens": 96, "n": 2,
            "temperature": 1.0}
    with httpx.Client(timeout=120) as client:
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda: statuses.append(client.post(f"{smol_server.url}/v1/chat/completions",
                                                                               json=slow).status_code)) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{smol_server.url}/health").json()["queue"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        third = client.post(f"{smol_server.url}/v1/chat/completions", json=slow)
        for t in threads:
            t.join()
    assert third.status_code == 503
    assert third.headers["retry-after"]
    assert third.json()["error"]["code"] == "busy"
    assert statuses == [200, 200]


def test_a_client_that_disconnects_cancels_its_search_and_frees_the_sequences(smol_server: Server) -> None:
    before = smol_server.metric("edge_adapt_cancelled_total")
    slow = {"messages": [{"role": "user", "content": "Write a long story about 7+4."}], "max_tokens": 96, "n": 2,
            "temperature": 1.0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{smol_server.url}/v1/chat/completions", json=slow, timeout=0.4)
    deadline = time.monotonic() + 30
    while smol_server.metric("edge_adapt_cancelled_total") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert smol_server.metric("edge_adapt_cancelled_total") == before + 1
    assert smol_server.metric("edge_adapt_kv_cells_used") == 0
    assert httpx.get(f"{smol_server.url}/health").json()["queue"] == 0


# -- security and lifecycle ---------------------------------------------------------------------


def test_an_api_key_guards_v1_but_not_health(default_server: Server) -> None:
    server = Server(["--api-key", "s3cret", "--no-warm-up"])
    try:
        server.wait_ready()
        r = httpx.get(f"{server.url}/v1/models")
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="s3cret")
        assert client.chat.completions.create(model="generator-Q8_0", messages=[{"role": "user", "content": QUESTION}]).choices
        assert httpx.get(f"{server.url}/health").status_code == 200
    finally:
        server.stop()
    # without a key (the module's server) the API is open
    assert httpx.get(f"{default_server.url}/v1/models").status_code == 200


def test_head_answers_like_get_without_a_body(default_server: Server) -> None:
    for path in ("/health", "/v1/models", "/v1/models/generator-Q8_0", "/metrics"):
        got, head = httpx.get(f"{default_server.url}{path}"), httpx.head(f"{default_server.url}{path}")
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
    assert httpx.head(f"{default_server.url}/v1/models/another").status_code == 404


def test_a_server_capped_at_one_sample_per_request_still_serves_its_default_search() -> None:
    # --max-n caps a request's n; the stack is sized for the default search as well, so it runs
    server = Server(["--max-n", "1", "--no-warm-up"])
    try:
        server.wait_ready()
        r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]},
                       timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["edge_adapt"]["mode"] == "search"
        assert r.json()["choices"][0]["message"]["content"]
        assert httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}],
                                                                         "n": 2}, timeout=60).status_code == 400
    finally:
        server.stop()


def test_binding_beyond_loopback_needs_a_key() -> None:
    r = subprocess.run([sys.executable, "-m", "edge_adapt.cli", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
                       capture_output=True, text=True, timeout=60, env={k: v for k,
                                                                        v in os.environ.items() if k != "EDGE_ADAPT_API_KEY"})
    assert r.returncode == 2
    assert "--api-key" in r.stderr


def test_models_that_fail_to_load_say_so_on_health_and_every_request(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    server = Server(["--generator", str(broken), "--no-prm", "--no-warm-up"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{server.url}/health", timeout=2)
                if health.json()["status"] == "error":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert health.status_code == 503
        assert "broken.gguf" in health.json()["message"]
        r = chat(server)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "load_failed"
    finally:
        server.stop()


def test_sigterm_finishes_streams_and_requests_in_flight_refuses_new_ones_then_exits_0(smollm2_gguf: Path) -> None:
    server = Server(["-m", str(smollm2_gguf), "--max-n", "2", "--max-tokens", "96", "--no-warm-up"])
    try:
        server.wait_ready()
        answers: list[httpx.Response] = []
        streamed: list[str] = []
        first_chunk = threading.Event()
        slow = {"messages": [{"role": "user", "content": "Write a long story about a cat."}], "max_tokens": 96,
                "temperature": 1.0}

        def read_stream() -> None:
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", json={**slow, "stream": True}, timeout=120) as r:
                for line in r.iter_lines():
                    streamed.append(line)
                    first_chunk.set()

        reader = threading.Thread(target=read_stream)
        sender = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{server.url}/v1/chat/completions", json={**slow, "n": 2}, timeout=120)))
        reader.start()
        assert first_chunk.wait(30)
        sender.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/health").json().get("queue", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        refused = httpx.post(f"{server.url}/v1/chat/completions", json=slow, timeout=30)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "shutting_down"
        reader.join()
        sender.join()
        assert streamed[-2:] == ["data: [DONE]", ""] or "data: [DONE]" in streamed  # the stream ran to its end
        assert answers[0].status_code == 200
        assert len(answers[0].json()["choices"]) == 2
        assert server.proc.wait(30) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/health", timeout=2)
    finally:
        server.stop()
