"""prototok.client against the API (uvicorn on a thread of this process), the real Redis and a
tiny-llama worker on a thread.

Rate limiting (429 + Retry-After) is checked against a small real HTTP server that answers
429 on purpose, since the API under test here has no rate limits of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from prototok.client import (
    ApiError,
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    NotFound,
    RateLimited,
    Retry,
    TooLarge,
    Unavailable,
    retry_after,
)

TEXT = "the client, start to end"


def test_client_imports_neither_torch_nor_the_service():
    code = ("import sys, prototok.client; "
            "print(sorted(m for m in ('torch', 'transformers', 'fastapi', 'starlette', 'rq', 'redis') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0  # 07:27:50 then
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0  # already past
    assert retry_after(None) is None and retry_after("soon") is None


@pytest.fixture
def client(api, tiny_worker, api_key):
    with Client(api.url, api_key=api_key, poll_s=0.1) as c:
        yield c


@pytest.mark.integration
def test_encode_wait_text_download_decode_delete(client, tmp_path, api):
    job = client.encode(TEXT, max_steps=300, seeds=2)
    assert job.status == "queued" and len(job.id) == 32
    bar = io.StringIO()
    assert job.wait(progress=True, file=bar) is job and job.status == "finished"
    drawn = bar.getvalue()
    assert "encode" in drawn and "acc=" in drawn and f"{job.progress['step']}/{job.progress['max_steps']}" in drawn, drawn
    [emb_id] = job.embeddings()
    assert client.text(emb_id) == TEXT
    rebuilt = client.rebuild(emb_id)
    assert rebuilt.text == TEXT and rebuilt.decode_ms > 0 and rebuilt.model == "tiny-llama"

    path = client.download(emb_id, tmp_path / "enc.safetensors")
    emb = client.embedding(emb_id)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == emb["sha256"]
    from prototok import Encoding, decode, load_model

    [local] = decode(load_model("tiny-llama"), [Encoding.load(path)])  # the file works without the server
    assert local.text == TEXT
    assert client.decode(path).text == TEXT == client.decode(path.read_bytes()).text
    vectors = {"e": emb["vectors"]["e"], "m": emb["vectors"]["m"], "length": emb["length"]}
    alone = client.decode(vectors, model="tiny-llama", sink=emb["sink"])
    assert alone.length == emb["length"] and alone.accuracy is None  # the vectors alone: no corrections

    client.delete(emb_id)
    with pytest.raises(NotFound) as err:
        client.text(emb_id)
    assert err.value.code == "embedding_not_found" and err.value.status == 404


@pytest.mark.integration
def test_a_batch_is_one_job(client):
    texts = ["first of two", "second of two"]
    ids = client.encode(texts, max_steps=5, seeds=1).embeddings()  # waits for the job
    assert [client.text(i) for i in ids] == texts


@pytest.mark.integration
@pytest.mark.parametrize("call,cls,code", [
    (lambda c: c.encode(""), BadRequest, "empty_text"),
    (lambda c: c.encode("x", max_steps=0), BadRequest, "invalid_request"),
    (lambda c: c.encode("x", bogus=1), BadRequest, "invalid_request"),
    (lambda c: c.encode("x" * 301), TooLarge, "text_too_long"),
    (lambda c: c.encode("x", model="some-org/not-served"), Conflict, "model_not_served"),
    (lambda c: c.encode("x", model="no-such-model"), NotFound, "unknown_model"),
    (lambda c: c.job("no-such-job"), NotFound, "job_not_found"),
    (lambda c: c.decode(b"not a safetensors file"), BadRequest, "corrupt_encoding"),
    (lambda c: c.delete("0" * 32), NotFound, "embedding_not_found"),
])
def test_api_errors_are_typed_and_carry_the_code(client, call, cls, code):
    with pytest.raises(cls) as err:
        call(client)
    assert err.value.code == code and err.value.message and err.value.caller_fault
    assert err.value.body["code"] == code


@pytest.mark.integration
def test_async_client(api, tiny_worker, api_key, tmp_path):
    async def run() -> tuple[str, str, str]:
        async with AsyncClient(api.url, api_key=api_key, poll_s=0.1) as c:
            job = await c.encode("asynchronous", max_steps=20, seeds=1)
            await job.wait()
            [emb_id] = await job.embeddings()
            path = await c.download(emb_id, tmp_path / "a.safetensors")
            out = (await c.text(emb_id), (await c.decode(path)).text)
            await c.delete(emb_id)
            try:
                await c.text(emb_id)
            except NotFound as exc:
                return (*out, exc.code)
            return (*out, "")

    assert asyncio.run(run()) == ("asynchronous", "asynchronous", "embedding_not_found")


@pytest.mark.integration
def test_503_is_retried_then_raised_with_its_code(service_logs):
    """An API whose Redis is down answers 503 redis_unavailable: retried, then raised."""
    from conftest import LocalApi

    down = LocalApi(service_logs / "api-redis-down.log", PROTOTOK_REDIS_URL="redis://127.0.0.1:9/0",
                    PROTOTOK_AUTH="off")
    sent = []
    try:
        # max_wait_s caps the 5 s Retry-After of the API (that it is honoured: test_429_waits_what_retry_after_says)
        with Client(down.url, retry=Retry(attempts=2, backoff_s=0.05, max_wait_s=0.05)) as c:
            c.http.event_hooks["request"].append(sent.append)
            with pytest.raises(Unavailable) as err:
                c.encode("hi")
    finally:
        down.close()
    assert err.value.code == "redis_unavailable" and err.value.status == 503 and not err.value.caller_fault
    assert len(sent) == 3  # the first try and two retries


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next (status, headers, body) of the server's script."""

    def do_GET(self) -> None:
        server = self.server
        server.seen.append((time.monotonic(), dict(self.headers)))
        status, headers, body = server.script.pop(0) if server.script else server.last
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in {**headers, "Content-Type": "application/json", "Content-Length": str(len(data))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.script, server.seen = [], []
    server.last = (429, {"Retry-After": "0"}, {"code": "rate_limited", "message": "slow down"})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_429_waits_what_retry_after_says(scripted):
    limited = (429, {"Retry-After": "1"}, {"code": "rate_limited", "message": "10 requests a minute"})
    scripted.script = [limited, (200, {}, {"status": "ready", "models": ["m"]})]
    with Client(f"http://127.0.0.1:{scripted.server_port}", api_key="k-123") as c:
        assert c.ready()["models"] == ["m"]
    (t0, first), (t1, second) = scripted.seen
    assert t1 - t0 >= 0.95  # waited the second the server asked for, not the 0.5 s default backoff
    assert first["Authorization"] == second["Authorization"] == "Bearer k-123"


def test_429_gives_up_after_the_retries(scripted, monkeypatch):
    monkeypatch.setenv("PROTOTOK_API_KEY", "from-env")
    with Client(f"http://127.0.0.1:{scripted.server_port}", retry=Retry(attempts=3)) as c, \
            pytest.raises(RateLimited) as err:
        c.ready()
    assert len(scripted.seen) == 4 and err.value.code == "rate_limited" and err.value.message == "slow down"
    assert not err.value.caller_fault and isinstance(err.value, ApiError)
    assert scripted.seen[0][1]["Authorization"] == "Bearer from-env"  # PROTOTOK_API_KEY is the default key
