"""Shared fixtures. Unit tests run on tiny random models built in-process (milliseconds);
tests marked `integration` use the embedded SmolLM2, Redis and real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Unit tests pin float32 and one thread, whatever the machine has: the same numbers on every CI
# host. Tests of bfloat16 or threads ask for them explicitly.
os.environ.setdefault("PROTOTOK_DTYPE", "float32")
os.environ.setdefault("PROTOTOK_THREADS", "1")

import httpx
import pytest
import redis as redis_lib
import torch

from prototok import EncodeConfig, load_model
from prototok.recipe import TUNED


@pytest.fixture(scope="session")
def tiny():
    torch.set_num_threads(1)
    return load_model("tiny-llama")


@pytest.fixture(scope="session")
def tiny_neox():
    return load_model("tiny-gpt-neox")


@pytest.fixture
def quick_cfg() -> EncodeConfig:
    """A few steps: enough to exercise every code path, not to converge."""
    return EncodeConfig(recipe=TUNED.with_(max_steps=8, seeds=2))


# --- service: the real Redis, real `python -m worker` processes and the real API over HTTP ---



SERVICE_REDIS_URL = os.environ.get("PROTOTOK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REPO = Path(__file__).resolve().parents[1]


def service_env(**extra: str) -> dict[str, str]:
    """Environment of a service process under test: its own Redis DB, tiny limits, fast heartbeats.
    Auth stays on (the default); the per-key rate and job limits are lifted so that polling tests
    and tests that queue many jobs are not throttled (test_service_access.py sets them low)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTOTOK_")}
    env.update(PROTOTOK_REDIS_URL=SERVICE_REDIS_URL, PROTOTOK_MODEL="tiny-llama", PROTOTOK_HEARTBEAT_TTL_S="4",
               PROTOTOK_PROGRESS_EVERY="5", PROTOTOK_API_PRELOAD="false", PROTOTOK_MAX_TEXT_CHARS="300",
               PROTOTOK_MAX_BODY_BYTES="100000", PROTOTOK_MAX_DECODE_TOKENS="512",
               PROTOTOK_MAX_BATCH_TEXTS="4", PROTOTOK_MAX_STEPS_LIMIT="5000", PROTOTOK_RATE_LIMIT_PER_S="0",
               PROTOTOK_MAX_JOBS_PER_KEY="0", OMP_NUM_THREADS="1", PROTOTOK_THREADS="1", PROTOTOK_DTYPE="float32",
               PYTHONUNBUFFERED="1")
    if "PROTOTOK_CACHE_DIR" in os.environ:
        env["PROTOTOK_CACHE_DIR"] = os.environ["PROTOTOK_CACHE_DIR"]
    env.update(extra)
    return env


class Proc:
    """A service process with its output in a log file, shown when a test fails."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.args, self.env, self.log = args, env, log
        self.popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        out = self.log.open("ab")
        self.popen = subprocess.Popen(self.args, env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, proc: Proc | None = None, every: float = 0.3):
    """Poll check() until it returns something truthy; fail with the process log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and not proc.alive():
            pytest.fail(f"{what}: process exited\n{proc.tail()}")
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{proc.tail() if proc else ''}")


def make_key(redis_url: str, name: str, admin: bool = False) -> str:
    """A new API key in the service's Redis, as `prototok keys create` makes it."""
    from service.keys import KeyStore

    return KeyStore(redis_lib.Redis.from_url(redis_url)).create(name, admin=admin)


class Api:
    """The API as a uvicorn subprocess on a free port; restartable. Unless it runs with
    PROTOTOK_AUTH=off, it gets a key of its own (`key_name`) that its client sends."""

    def __init__(self, log: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)]
        self.env = service_env(**env)
        self.proc = Proc(args, self.env, log)
        self.http = httpx.Client(base_url=self.url, timeout=120)
        self.key_name = ""
        if self.env.get("PROTOTOK_AUTH", "on").lower() not in ("off", "false", "0", "no"):
            self.key_name = f"tests-{self.port}"
            key = make_key(self.env["PROTOTOK_REDIS_URL"], self.key_name)
            self.http.headers["Authorization"] = f"Bearer {key}"

    def _up(self) -> bool:
        try:
            return self.http.get("/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> Api:
        self.proc.start()
        wait_for(self._up, 180, "the API to answer /healthz", self.proc)
        return self

    def restart(self) -> None:
        self.proc.stop()
        self.start()

    def served(self) -> list[str]:
        r = self.http.get("/readyz")
        return r.json().get("models", []) if r.status_code in (200, 503) else []


def start_worker(tmp: Path, model: str, **env: str) -> Proc:
    proc = Proc([sys.executable, "-m", "worker"], service_env(PROTOTOK_MODEL=model, **env),
                tmp / f"worker-{model}-{time.monotonic_ns()}.log").start()
    return proc


def wait_served(api: Api, model: str, proc: Proc, timeout: float = 600) -> None:
    wait_for(lambda: model in api.served(), timeout, f"a worker to serve {model}", proc, every=1)


def wait_job(api: Api, job_id: str, timeout: float, proc: Proc | None = None, every: float = 0.25) -> dict:
    """Poll a job to an end state; return the last answer and the steps seen on the way."""
    seen: list[int] = []

    def ended():
        body = api.http.get(f"/v1/jobs/{job_id}").json()
        seen.append(body["progress"]["step"])
        return body if body["status"] in ("finished", "failed") else None

    body = wait_for(ended, timeout, f"job {job_id} to end", proc, every=every)
    body["_steps_seen"] = seen
    return body


@pytest.fixture(scope="session")
def service_redis():
    """The real Redis (started by .ci/run or scripts/redis_up.sh), DB 15, emptied before and after."""
    conn = redis_lib.Redis.from_url(SERVICE_REDIS_URL)
    try:
        conn.ping()
    except redis_lib.exceptions.ConnectionError as exc:
        pytest.fail(f"service tests need Redis at {SERVICE_REDIS_URL} (bash scripts/redis_up.sh): {exc}")
    conn.flushdb()
    yield conn
    conn.flushdb()


@pytest.fixture(scope="session")
def service_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
def api(service_redis, service_logs):
    server = Api(service_logs / "api.log").start()
    yield server
    server.proc.stop()
    server.http.close()


@pytest.fixture(scope="session")
def tiny_worker(api, service_logs):
    """One worker serving tiny-llama for the whole session."""
    proc = start_worker(service_logs, "tiny-llama")
    wait_served(api, "tiny-llama", proc)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def api_key(api) -> str | None:
    """The API key service tests send, or None while the API runs without keys: whatever the
    session API's own client sends as `Authorization: Bearer KEY`, else PROTOTOK_TEST_API_KEY."""
    auth = api.http.headers.get("authorization", "")
    return auth.removeprefix("Bearer ").strip() or os.environ.get("PROTOTOK_TEST_API_KEY") or None


@pytest.fixture(scope="session")
def api_headers(api_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}

