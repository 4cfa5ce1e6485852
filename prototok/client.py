"""A Python client for the prototok service: encode, watch the job, fetch, decode, delete.

Example (a service running at the URL; docs/python.md):

    from prototok.client import Client

    with Client("http://127.0.0.1:8000") as client:         # api_key=..., or PROTOTOK_API_KEY
        job = client.encode("The cat sat on the mat.", max_steps=300, seeds=2)
        job.wait(progress=True)                              # a tqdm bar: steps, loss, accuracy, solved
        [emb_id] = job.embeddings()
        print(client.text(emb_id))                           # rebuilt in one forward pass, exact
        client.download(emb_id, "cat.safetensors")          # the same file `prototok encode` writes
        print(client.decode("cat.safetensors").text)
        client.delete(emb_id)

`AsyncClient` is the same with `await`. Every API error is raised as an `ApiError` subclass
chosen by HTTP status, carrying the API's stable `code` and its message; 429 and 503 are
retried with exponential backoff, waiting what `Retry-After` asks when the server says.

Thin on purpose: httpx and tqdm only. It imports neither torch nor FastAPI nor rq, so it runs
where the model does not.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from . import __version__

DEFAULT_URL = "http://127.0.0.1:8000"
OCTET = "application/octet-stream"
ENDED = ("finished", "failed")

# --- errors ----------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer of the API (or a failed job): `status`, the stable `code`, the `message`."""

    def __init__(self, status: int | None, code: str, message: str, body: Mapping[str, Any] | None = None):
        super().__init__(f"[{code}] {message}" + (f" (HTTP {status})" if status else ""))
        self.status, self.code, self.message, self.body = status, code, message, dict(body or {})

    @property
    def caller_fault(self) -> bool:
        """The request was wrong (4xx): sending it again will not help."""
        return self.status is not None and 400 <= self.status < 500 and self.status != 429


class BadRequest(ApiError):
    """400 or 422: malformed JSON, invalid options, empty text, bad vectors, corrupt file, ..."""


class Unauthorized(ApiError):
    """401: no API key, or one the server does not know."""


class Forbidden(ApiError):
    """403: the key may not do this (e.g. another key's job or encoding)."""


class NotFound(ApiError):
    """404: unknown job, encoding or model."""


class Conflict(ApiError):
    """409: model not served, checksum or decode mismatch, wrong model for a file."""


class TooLarge(ApiError):
    """413: text, batch or body over the server's limits."""


class RateLimited(ApiError):
    """429, still after every retry."""


class Unavailable(ApiError):
    """503 (Redis unreachable, not ready), still after every retry."""


class ServerError(ApiError):
    """500 and other 5xx: a bug on the server; see its log."""


class JobFailed(ApiError):
    """The job ended `failed`; `code` is its `error_code` (worker_died, job_timeout, invalid_input, ...)."""

    SERVICE_CODES = ("worker_died", "job_timeout", "job_canceled", "encode_failed")

    @property
    def caller_fault(self) -> bool:
        return self.code not in self.SERVICE_CODES


BY_STATUS: dict[int, type[ApiError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                        409: Conflict, 413: TooLarge, 422: BadRequest, 429: RateLimited,
                                        503: Unavailable}


def raise_for(r: httpx.Response) -> httpx.Response:
    """The response if it is a success, else the typed ApiError its JSON body describes."""
    if r.is_success:
        return r
    try:
        body = r.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("code") or f"http_{r.status_code}")
    message = str(body.get("message") or r.text[:200] or r.reason_phrase)
    cls = BY_STATUS.get(r.status_code, ServerError if r.status_code >= 500 else ApiError)
    raise cls(r.status_code, code, message, body)


# --- retries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    """How 429 (rate limited) and 503 (unavailable) answers are retried."""

    attempts: int = 5  # retries after the first try; then the error is raised
    backoff_s: float = 0.5  # wait before the first retry when the server gives no Retry-After; doubles
    max_wait_s: float = 60.0  # no single wait is longer, whatever Retry-After says

    def delay(self, r: httpx.Response, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        asked = retry_after(r.headers.get("retry-after"))
        if asked is None:
            asked = self.backoff_s * 2**attempt * (0.5 + random.random() / 2)  # jitter: clients spread out
        return max(0.0, min(asked, self.max_wait_s))


RETRIED = (429, 503)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedText:
    """A text the server rebuilt: `decode_ms` is its one forward pass. (Named apart from the core's
    `prototok.Decoded`, which a local decode returns.)"""

    text: str
    model: str
    length: int  # tokens
    decode_ms: float
    accuracy: float | None = None  # of the vectors alone; known for stored or uploaded encodings
    dtype: str | None = None  # the model dtype whose pass rebuilt a stored or uploaded encoding

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> DecodedText:
        return cls(body["text"], body["model"], body["length"], body["decode_ms"], body.get("accuracy"),
                   body.get("dtype"))


def encode_body(text_or_texts: str | Sequence[str], model: str | None, options: Mapping[str, Any]) -> dict:
    if isinstance(text_or_texts, str):
        body: dict[str, Any] = {"text": text_or_texts}
    else:
        body = {"texts": list(text_or_texts)}
    if model is not None:
        body["model"] = model
    body["options"] = {k: v for k, v in options.items() if v is not None}
    return body


def decode_request(source: str | os.PathLike | bytes | Mapping[str, Any], **fields: Any) -> dict:
    """httpx keyword arguments for POST /v1/decode: a file or bytes go up as-is, vectors as JSON."""
    if isinstance(source, Mapping):
        return {"json": {**source, **{k: v for k, v in fields.items() if v is not None}}}
    if any(v is not None for v in fields.values()):
        raise TypeError(f"{', '.join(k for k, v in fields.items() if v is not None)}: only with vectors; "
                        "an encoding file names its own model and layout")
    blob = bytes(source) if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
    return {"content": blob, "headers": {"content-type": OCTET}}


def checked_blob(r: httpx.Response, emb_id: str) -> bytes:
    """The .safetensors bytes of an encoding, verified against the server's checksum header."""
    if not r.headers.get("content-type", "").startswith(OCTET):
        raise ApiError(r.status_code, "unexpected_response", f"expected the .safetensors bytes of '{emb_id}', "
                                                             f"got {r.headers.get('content-type')}")
    digest = r.headers.get("x-checksum-sha256")
    if digest and hashlib.sha256(r.content).hexdigest() != digest:
        raise ApiError(r.status_code, "checksum_mismatch", f"download of '{emb_id}' does not match its sha256")
    return r.content


def write_atomically(path: str | os.PathLike, blob: bytes) -> Path:
    """Never leave a half-written file at `path`: write beside it, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    return path


def headers_for(api_key: str | None) -> dict[str, str]:
    """The key given, else PROTOTOK_API_KEY; sent as `Authorization: Bearer KEY`."""
    key = api_key if api_key is not None else os.environ.get("PROTOTOK_API_KEY", "")
    headers = {"User-Agent": f"prototok-client/{__version__}", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def failed(body: Mapping[str, Any]) -> JobFailed:
    return JobFailed(None, body.get("error_code") or "encode_failed", body.get("error") or "the job failed", body)


# --- progress --------------------------------------------------------------------------------


class Watch:
    """Draws a job's answers on the encode bar (prototok.progressbar), when asked to."""

    def __init__(self, enabled: bool, file: TextIO | None):
        self.enabled, self.file, self.bar = enabled, file, None

    def update(self, body: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from .progressbar import encode_bar, show

        p = body.get("progress") or {}
        if self.bar is None:
            self.bar = encode_bar(p.get("max_steps") or 0, self.file)
        if p.get("max_steps") and p["max_steps"] != self.bar.total:  # the job's own count wins
            self.bar.total = p["max_steps"]
        if p.get("step"):
            show(self.bar, p["step"], p.get("loss"), p.get("accuracy", 0.0), p.get("done", 0), p.get("chunks"))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- the synchronous client ------------------------------------------------------------------


class Client:
    """The service at `url`. Use as a context manager, or call `close()`.

    Args:
        url: the API's base URL.
        api_key: sent as `Authorization: Bearer KEY`; default PROTOTOK_API_KEY; none if neither.
        timeout: seconds per HTTP request (an encode job may take much longer: `Job.wait` polls).
        retry: how 429 and 503 answers are retried.
        poll_s: seconds between two looks at a running job.
    """

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, *, timeout: float = 60.0,
                 retry: Retry = Retry(), poll_s: float = 0.5):
        self.url, self.retry, self.poll_s = url.rstrip("/"), retry, poll_s
        self.http = httpx.Client(base_url=self.url, headers=headers_for(api_key), timeout=timeout)

    def __enter__(self) -> Client:  # noqa: PYI034 - Self needs 3.11
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call; 429/503 retried as `self.retry` says; any other error raised typed."""
        for attempt in range(self.retry.attempts + 1):
            r = self.http.request(method, path, **kwargs)
            if r.status_code not in RETRIED or attempt == self.retry.attempts:
                break
            time.sleep(self.retry.delay(r, attempt))
        return raise_for(r)

    def encode(self, text_or_texts: str | Sequence[str], *, model: str | None = None, **options: Any) -> Job:
        """Queue one job for a text or a batch of texts. Options are the API's: max_steps, seeds,
        seed, lr, recipe, arrangement, method, share, group_size, chunk_tokens, sink, start, storage, rank,
        compact, model_m."""
        r = self.request("POST", "/v1/encode", json=encode_body(text_or_texts, model, options))
        return Job(self, r.json()["job_id"], r.json())

    def job(self, job_id: str) -> Job:
        """A handle on an existing job (checked to exist)."""
        job = Job(self, job_id, {})
        job.refresh()
        return job

    def embedding(self, embedding_id: str) -> dict:
        """A stored encoding as JSON: model, lengths, accuracy, corrections, vectors, ..."""
        return self.request("GET", f"/v1/embeddings/{embedding_id}").json()

    def text(self, embedding_id: str) -> str:
        """The exact text, rebuilt on the server in one forward pass."""
        return self.rebuild(embedding_id).text

    def rebuild(self, embedding_id: str) -> DecodedText:
        """The text with its decode time and the vectors' own accuracy."""
        return DecodedText.from_json(self.request("GET", f"/v1/embeddings/{embedding_id}/text").json())

    def download(self, embedding_id: str, path: str | os.PathLike) -> Path:
        """Save the encoding as a .safetensors file (checksum verified); returns the path."""
        r = self.request("GET", f"/v1/embeddings/{embedding_id}", headers={"Accept": OCTET})
        return write_atomically(path, checked_blob(r, embedding_id))

    def decode(self, path_or_vectors: str | os.PathLike | bytes | Mapping[str, Any], *, model: str | None = None,
               arrangement: str | None = None, sink: bool | None = None) -> DecodedText:
        """Decode a .safetensors file (a path or its bytes) or vectors {"e", "m", "length"} on the server."""
        kwargs = decode_request(path_or_vectors, model=model, arrangement=arrangement, sink=sink)
        return DecodedText.from_json(self.request("POST", "/v1/decode", **kwargs).json())

    def delete(self, embedding_id: str) -> None:
        """Delete a stored encoding (NotFound if it is not there)."""
        self.request("DELETE", f"/v1/embeddings/{embedding_id}")

    def ready(self) -> dict:
        """/readyz: Redis up and the models live workers serve (Unavailable when none)."""
        return self.request("GET", "/readyz").json()


class Job:
    """An encode job on the server. `last` is its latest answer from GET /v1/jobs/{id}."""

    def __init__(self, client: Client, job_id: str, last: Mapping[str, Any]):
        self.client, self.id, self.last = client, job_id, dict(last)

    def __repr__(self) -> str:
        return f"Job({self.id!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        return self.last.get("status", "queued")

    @property
    def progress(self) -> dict:
        return self.last.get("progress") or {}

    def refresh(self) -> dict:
        self.last = self.client.request("GET", f"/v1/jobs/{self.id}").json()
        return self.last

    def wait(self, progress: bool = False, *, timeout: float | None = None, file: TextIO | None = None) -> Job:
        """Poll until the job ends; `progress=True` draws the encode bar (on stderr, or `file`).
        Raises JobFailed if it failed, TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        watch = Watch(progress, file)
        try:
            while True:
                watch.update(self.refresh())
                if self.status in ENDED:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} still {self.status} after {timeout} s")
                time.sleep(self.client.poll_s)
        finally:
            watch.close()
        if self.status == "failed":
            raise failed(self.last)
        return self

    def embeddings(self) -> list[str]:
        """Embedding ids, one per text in order; waits for the job if it is still running."""
        if self.status != "finished":
            self.wait()
        return list(self.last["embedding_ids"])


# --- the asynchronous client -----------------------------------------------------------------


class AsyncClient:
    """`Client` for asyncio: the same methods, awaited. Use `async with`, or `await aclose()`."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, *, timeout: float = 60.0,
                 retry: Retry = Retry(), poll_s: float = 0.5):
        self.url, self.retry, self.poll_s = url.rstrip("/"), retry, poll_s
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers_for(api_key), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:  # noqa: PYI034 - Self needs 3.11
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retry.attempts + 1):
            r = await self.http.request(method, path, **kwargs)
            if r.status_code not in RETRIED or attempt == self.retry.attempts:
                break
            await asyncio.sleep(self.retry.delay(r, attempt))
        return raise_for(r)

    async def encode(self, text_or_texts: str | Sequence[str], *, model: str | None = None,
                     **options: Any) -> AsyncJob:
        r = await self.request("POST", "/v1/encode", json=encode_body(text_or_texts, model, options))
        return AsyncJob(self, r.json()["job_id"], r.json())

    async def job(self, job_id: str) -> AsyncJob:
        job = AsyncJob(self, job_id, {})
        await job.refresh()
        return job

    async def embedding(self, embedding_id: str) -> dict:
        return (await self.request("GET", f"/v1/embeddings/{embedding_id}")).json()

    async def text(self, embedding_id: str) -> str:
        return (await self.rebuild(embedding_id)).text

    async def rebuild(self, embedding_id: str) -> DecodedText:
        return DecodedText.from_json((await self.request("GET", f"/v1/embeddings/{embedding_id}/text")).json())

    async def download(self, embedding_id: str, path: str | os.PathLike) -> Path:
        r = await self.request("GET", f"/v1/embeddings/{embedding_id}", headers={"Accept": OCTET})
        return write_atomically(path, checked_blob(r, embedding_id))

    async def decode(self, path_or_vectors: str | os.PathLike | bytes | Mapping[str, Any], *,
                     model: str | None = None, arrangement: str | None = None, sink: bool | None = None) -> DecodedText:
        kwargs = decode_request(path_or_vectors, model=model, arrangement=arrangement, sink=sink)
        return DecodedText.from_json((await self.request("POST", "/v1/decode", **kwargs)).json())

    async def delete(self, embedding_id: str) -> None:
        await self.request("DELETE", f"/v1/embeddings/{embedding_id}")

    async def ready(self) -> dict:
        return (await self.request("GET", "/readyz")).json()


class AsyncJob(Job):
    """`Job` for AsyncClient: `await job.wait()`, `await job.embeddings()`."""

    client: AsyncClient  # type: ignore[assignment]

    async def refresh(self) -> dict:  # type: ignore[override]
        self.last = (await self.client.request("GET", f"/v1/jobs/{self.id}")).json()
        return self.last

    async def wait(self, progress: bool = False, *, timeout: float | None = None,  # type: ignore[override]
                   file: TextIO | None = None) -> AsyncJob:
        deadline = None if timeout is None else time.monotonic() + timeout
        watch = Watch(progress, file)
        try:
            while True:
                watch.update(await self.refresh())
                if self.status in ENDED:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} still {self.status} after {timeout} s")
                await asyncio.sleep(self.client.poll_s)
        finally:
            watch.close()
        if self.status == "failed":
            raise failed(self.last)
        return self

    async def embeddings(self) -> list[str]:  # type: ignore[override]
        if self.status != "finished":
            await self.wait()
        return list(self.last["embedding_ids"])
