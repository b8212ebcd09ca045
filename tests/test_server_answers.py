"""Every request gets an answer: a `--task gsm8k` server sent a turn that is not a GSM8K question
(a haiku) replies with text, stops within a few samples and says why; the HTTP layer's own
refusals are the API's JSON error; nothing a client does is an ERROR in the server's log. The
real server in its own process, SmolLM2-135M-Instruct from its PyPI package."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_server import Server

openai = pytest.importorskip("openai")

HAIKU = {"messages": [{"role": "user", "content": "Write a haiku about rain"}], "max_tokens": 128, "seed": 1}
DATA = Path(__file__).parent / "data" / "gsm8k" / "slice.jsonl"


@pytest.fixture(scope="module")
def gsm8k_server(smollm2_gguf: Path) -> Iterator[Server]:
    server = Server(["--generator", str(smollm2_gguf), "--no-prm", "--task", "gsm8k", "--data", str(DATA),
                     "--prompt-template", "{question}", "--no-warm-up"])
    server.wait_ready()
    yield server
    server.stop()


def test_a_turn_that_is_not_the_tasks_question_is_answered_with_text_within_a_few_samples(gsm8k_server: Server) -> None:
    r = httpx.post(f"{gsm8k_server.url}/v1/chat/completions", json=HAIKU, timeout=120)
    assert r.status_code == 200, r.text
    reply = r.json()
    text, extra = reply["choices"][0]["message"]["content"], reply["edge_adapt"]
    assert text.strip()
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    assert extra["answer"] is None
    assert extra["mode"] == "search"
    assert "answered as chat" in extra["why"]
    assert any("no sample reached a final answer" in note for note in extra["notes"])
    assert 1 <= extra["samples"] <= 4
    gave_up = [d["detail"] for d in extra["decisions"] if d["kind"] == "gave_up"]
    assert gave_up == [{"after": extra["samples"], "give_up_after": 4}]
    assert [d["detail"]["by"] for d in extra["decisions"] if d["kind"] == "select"] == ["no_answer"]
    # streamed, the same search sends the same text
    client = openai.OpenAI(base_url=f"{gsm8k_server.url}/v1", api_key="unused")
    chunks = list(client.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", stream=True, **HAIKU))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


def test_the_tasks_own_question_is_still_searched_to_an_answer(gsm8k_server: Server) -> None:
    question = json.loads(DATA.read_text().splitlines()[1])["question"]
    r = httpx.post(f"{gsm8k_server.url}/v1/chat/completions", timeout=300,
                   json={"messages": [{"role": "user", "content": question}], "max_tokens": 256, "seed": 1})
    assert r.status_code == 200, r.text
    extra = r.json()["edge_adapt"]
    assert extra["answer"] is not None
    assert not [d for d in extra["decisions"] if d["kind"] == "gave_up"]


def test_a_request_the_http_parser_cannot_read_is_the_apis_json_error(gsm8k_server: Server) -> None:
    for request in (b"GET /health?q=" + b"x" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"GARBAGE / NOT-HTTP\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", gsm8k_server.port), timeout=10) as raw:
            raw.sendall(request)
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), head
        assert b"content-type: application/json" in head.lower()
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "malformed_http_request"


def test_nothing_a_client_did_is_an_error_in_the_servers_log(gsm8k_server: Server) -> None:
    logged = gsm8k_server.log.read_text()
    assert "Invalid HTTP request" in logged  # the parser's refusals are logged, at WARNING
    assert [line for line in logged.splitlines() if "ERROR" in line or "Traceback" in line] == []
