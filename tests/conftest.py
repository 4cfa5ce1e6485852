"""Shared fixtures. Unit tests run on tiny random models built in-process (milliseconds);
tests marked `integration` use the real Redis, and the service's API and workers.

The service under test runs in this process for most tests (`LocalApi`, `LocalWorker`): the
real app, the real ModelWorker, the real Redis, without starting processes. A few tests start
real `uvicorn` and `python -m worker` processes (`Api`, `start_worker`): what only processes
show (kill -9 of a worker, an API restart, a Redis outage, the embedded model end to end)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
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
from service.settings import clear_cache, get_settings


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


# --- the service under test: the real Redis; the app and workers in this process, or as processes ---


SERVICE_REDIS_URL = os.environ.get("PROTOTOK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REPO = Path(__file__).resolve().parents[1]


def service_env(**extra: str) -> dict[str, str]:
    """Environment of the service under test: its own Redis DB, tiny limits, fast heartbeats.
    Auth stays on (the default); the per-key rate and job limits are lifted so that polling tests
    and tests that queue many jobs are not throttled (test_service_access.py sets them low).
    One torch thread for the decode processes. The in-process APIs (LocalApi) share one decoder per
    settings for the session (`Decoders`): a decode process per test module would add its start-up
    (seconds, and far more on a busy host) to each module's first decode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTOTOK_")}
    env.update(PROTOTOK_REDIS_URL=SERVICE_REDIS_URL, PROTOTOK_MODEL="tiny-llama", PROTOTOK_HEARTBEAT_TTL_S="4",
               PROTOTOK_PROGRESS_EVERY="5", PROTOTOK_API_PRELOAD="false", PROTOTOK_MAX_TEXT_CHARS="300",
               PROTOTOK_MAX_BODY_BYTES="100000", PROTOTOK_MAX_DECODE_TOKENS="512",
               PROTOTOK_MAX_BATCH_TEXTS="4", PROTOTOK_MAX_STEPS_LIMIT="5000", PROTOTOK_RATE_LIMIT_PER_S="0",
               PROTOTOK_MAX_JOBS_PER_KEY="0", OMP_NUM_THREADS="1", PROTOTOK_THREADS="1", PROTOTOK_DTYPE="float32",
               PROTOTOK_DECODE_THREADS="1", PYTHONUNBUFFERED="1")
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


def redis_answers(port: int) -> bool:
    """The Redis on this port answers PING: its port open is not enough, a restarted Redis answers
    "loading" until it has read its data. One try (redis-py's retries would spend seconds)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    conn = redis_lib.Redis(port=port, retry=Retry(NoBackoff(), 0), socket_connect_timeout=1)
    try:
        return bool(conn.ping())
    except redis_lib.exceptions.RedisError:  # BusyLoadingError included
        return False
    finally:
        conn.close()


def wait_for(check, timeout: float, what: str, proc=None, every: float = 0.3):
    """Poll check() until it returns something truthy; fail with the process log otherwise.
    `proc` (a Proc or a LocalWorker) must stay alive meanwhile."""
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


def auth_on(env: dict[str, str]) -> bool:
    return env.get("PROTOTOK_AUTH", "on").lower() not in ("off", "false", "0", "no")


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
        if auth_on(self.env):
            self.key_name = f"tests-{self.port}"
            key = make_key(self.env["PROTOTOK_REDIS_URL"], self.key_name)
            self.http.headers["Authorization"] = f"Bearer {key}"

    @property
    def log(self) -> Path:
        return self.proc.log

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

    def close(self) -> None:
        self.proc.stop()
        self.http.close()


def start_worker(tmp: Path, model: str, **env: str) -> Proc:
    proc = Proc([sys.executable, "-m", "worker"], service_env(PROTOTOK_MODEL=model, **env),
                tmp / f"worker-{model}-{time.monotonic_ns()}.log").start()
    return proc


def wait_served(api: Api, model: str, proc: Proc, timeout: float = 600) -> None:
    wait_for(lambda: model in api.served(), timeout, f"a worker to serve {model}", proc, every=1)


def wait_job(api, job_id: str, timeout: float, proc=None, every: float = 0.25) -> dict:
    """Poll a job to an end state; return the last answer and the steps seen on the way."""
    seen: list[int] = []

    def ended():
        body = api.http.get(f"/v1/jobs/{job_id}").json()
        seen.append(body["progress"]["step"])
        return body if body["status"] in ("finished", "failed") else None

    body = wait_for(ended, timeout, f"job {job_id} to end", proc, every=every)
    body["_steps_seen"] = seen
    return body


# --- the service in this process ---


def use_settings(patch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Make `env`'s PROTOTOK_* variables this process's settings, as they would be a process's."""
    for name in [n for n in os.environ if n.startswith("PROTOTOK_") and not n.startswith("PROTOTOK_TEST_")]:
        if name not in env:
            patch.delenv(name)
    for name, value in env.items():
        if name.startswith("PROTOTOK_"):
            patch.setenv(name, value)
    clear_cache()


class ApiLogFormat(logging.Formatter):
    """What the API's records read like in a process's log; uvicorn's access lines end in the
    status and its phrase ('500 Internal Server Error'), as uvicorn writes them."""

    def __init__(self):
        from uvicorn.logging import AccessFormatter

        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.access = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False)

    def format(self, record: logging.LogRecord) -> str:
        return self.access.format(record) if record.name == "uvicorn.access" else super().format(record)


WORKER_THREADS = ("local-worker", "job-heartbeat", "announce")  # LocalWorker's threads and ModelWorker's


def not_the_worker(record: logging.LogRecord) -> bool:
    """The API's log leaves out what a worker in this process logs (its own log, as a process)."""
    return not (record.threadName in WORKER_THREADS or record.name.split(".")[0] == "rq"
                or record.name.startswith("prototok.worker"))


class Decoders:
    """What the in-process APIs (LocalApi) decode with: one Decoder (app/decoding.py) per distinct
    service settings, kept for the whole session, so that its lanes (and decode processes) start
    once, not once per test module. Each is the app's own kind, made from the settings in force
    when it is first asked for, as an API process started with them would make it at start-up.
    Installed as the app's `decoder_dep`."""

    def __init__(self):
        self.made: dict[str, object] = {}
        self._lock = threading.Lock()

    def __call__(self):
        from app.decoding import Decoder

        settings = get_settings()
        key = settings.model_dump_json()
        with self._lock:
            if key not in self.made:
                self.made[key] = Decoder(settings)
            return self.made[key]

    def close(self, keep: set[str] = frozenset()) -> None:
        """Close every decoder but those under `keep` (their lanes stop, their processes exit)."""
        with self._lock:
            gone = [self.made.pop(key) for key in list(self.made) if key not in keep]
        for decoder in gone:
            decoder.close()


DECODERS = Decoders()


class LocalApi:
    """The API (app.main:app) in this process, configured as `Api` configures its process (the
    PROTOTOK_* variables of service_env, read through get_settings), against the real Redis.

    `http` is a FastAPI TestClient: each request runs the real app (middleware, routes, error
    handlers, decode lanes) with no server. It decodes with the session's decoder for its settings
    (`Decoders`), or, with `own_decoder`, with the one the app's start-up made, which its
    shut-down closes. `url`, `port` and `net` (an httpx client on `url`)
    serve the same app with uvicorn on a thread, for what needs a socket: the Python client, the
    CLI, a browser, schemathesis, a raw keep-alive connection, a streamed upload. What the app
    logs goes to the file `log`, as a process's output would.
    """

    def __init__(self, log: Path, own_decoder: bool = False, **env: str):
        from fastapi.testclient import TestClient

        from app.deps import decoder_dep
        from app.main import app

        self.app, self.log, self.env, self.own_decoder = app, log, service_env(**env), own_decoder
        if own_decoder:
            app.dependency_overrides.pop(decoder_dep, None)
        else:
            app.dependency_overrides[decoder_dep] = DECODERS
        self._patch = pytest.MonkeyPatch()
        use_settings(self._patch, self.env)
        self._handler = logging.FileHandler(log, encoding="utf-8")
        self._handler.setFormatter(ApiLogFormat())
        self._handler.addFilter(not_the_worker)
        logging.getLogger().addHandler(self._handler)
        self.http = TestClient(app, raise_server_exceptions=False)
        self.http.__enter__()  # one event loop for every request (and the app's lifespan, as at start-up)
        self.key_name = ""
        if auth_on(self.env):
            self.key_name = f"tests-local-{time.monotonic_ns()}"
            key = make_key(self.env["PROTOTOK_REDIS_URL"], self.key_name)
            self.http.headers["Authorization"] = f"Bearer {key}"
        self._server = self._net = None
        self._thread: threading.Thread | None = None
        self._port = 0

    @contextlib.contextmanager
    def configured(self, **env: str) -> Iterator[LocalApi]:
        """Other settings for a while, as another API process started with them would have
        (with its own decoder, made for these settings and closed after)."""
        before = set(DECODERS.made)
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            clear_cache()
            try:
                yield self
            finally:
                DECODERS.close(keep=before)
                clear_cache()
        clear_cache()

    @property
    def decoder(self):
        """The Decoder this API's routes decode with now."""
        return self.app.state.decoder if self.own_decoder else DECODERS()

    @property
    def port(self) -> int:
        self.serve()
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def net(self) -> httpx.Client:
        if self._net is None:
            self._net = httpx.Client(base_url=self.url, timeout=120)
            if "authorization" in self.http.headers:
                self._net.headers["Authorization"] = self.http.headers["authorization"]
        return self._net

    def serve(self) -> None:
        """The app under uvicorn on a thread of this process, on a free port (once)."""
        if self._server is not None:
            return
        import uvicorn

        self._port = free_port()
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self._port, log_config=None,
                                                     log_level="info"))
        self._thread = threading.Thread(target=self._server.run, name="uvicorn", daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started or not self._thread.is_alive(), 60, "uvicorn on a thread", every=0.02)
        assert self._server.started, f"uvicorn did not start\n{self.log.read_text(errors='replace')[-4000:]}"

    def served(self) -> list[str]:
        r = self.http.get("/readyz")
        return r.json().get("models", []) if r.status_code in (200, 503) else []

    def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(30)
        if self._net is not None:
            self._net.close()
        self.http.__exit__(None, None, None)
        logging.getLogger().removeHandler(self._handler)
        self._handler.close()
        self._patch.undo()
        clear_cache()
        if self.own_decoder:
            from app.deps import decoder_dep

            self.app.dependency_overrides[decoder_dep] = DECODERS


class LocalWorker:
    """`python -m worker` in this process: the same ModelWorker (worker/runner.py) on the model this
    process has loaded already (load_model caches it), announced as serving it until `stop`.

    `start` runs it on a thread, taking jobs as they come, for tests that watch a job while it runs.
    Two things differ from the process there, both because only the main thread may handle
    signals: RQ installs no signal handlers (`stop` asks the loop to end), and a job's time limit
    is a timer (rq's TimerDeathPenalty), not SIGALRM. `burst` runs what is queued now in the main
    thread, exactly as the process runs it, SIGALRM included, and returns.
    """

    def __init__(self, model: str = "tiny-llama"):
        from worker.retry import connect
        from worker.runner import Pulse, announce_serving

        self.model, self.pid = model, os.getpid()
        self.conn = connect(get_settings().redis_url)
        self.name = f"tests.{os.getpid()}.{time.monotonic_ns()}"
        ttl, lm = get_settings().heartbeat_ttl_s, load_model(model)

        def beat() -> None:  # what `python -m worker` announces: its model, and its start's m (model_m)
            announce_serving(self.conn, lm, model, self.name, ttl)

        beat()  # served from now on, before the pulse's first beat
        self._announce = Pulse(beat, ttl / 3, "announce").__enter__()
        self._thread: threading.Thread | None = None
        self._worker = self._burst_worker = None
        self._failure = io.StringIO()

    def start(self) -> LocalWorker:
        from rq.timeouts import TimerDeathPenalty

        from worker.runner import ModelWorker, model_worker

        class ThreadWorker(ModelWorker):
            death_penalty_class = TimerDeathPenalty

            def _install_signal_handlers(self) -> None:
                """Only the main thread may; `stop` sets the flag RQ's SIGINT handler would."""

            def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
                """Wait for a job a second at a time, looking at the stop flag in between (RQ's
                SIGINT handler interrupts the wait instead; a thread gets no signal)."""
                while not self._stop_requested:
                    found = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=1)
                    if found is not None:
                        return found
                return None

        self._worker = model_worker(self.conn, get_settings(), self.model, self.name, cls=ThreadWorker)

        def run() -> None:
            try:
                self._worker.work(with_scheduler=False, logging_level="WARNING")
            except BaseException as exc:  # shown by tail() when a test finds the thread dead
                self._failure.write(repr(exc))
                raise

        self._thread = threading.Thread(target=run, name="local-worker", daemon=True)
        self._thread.start()
        return self

    def burst(self) -> None:
        """Run every job now queued for the model, in this thread, with the same worker each time."""
        from worker.runner import model_worker

        if self._burst_worker is None:
            self._burst_worker = model_worker(self.conn, get_settings(), self.model, self.name + ".burst")
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._burst_worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def tail(self) -> str:
        return self._failure.getvalue()

    def stop(self) -> None:
        from service.queues import withdraw

        if self._thread is not None:
            self._worker._stop_requested = True  # what RQ's SIGINT handler sets: end after the running job
            self._thread.join(120)
        self._announce.__exit__()
        withdraw(self.conn, self.model, self.name)


# --- fixtures ---


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


@pytest.fixture(scope="session", autouse=True)
def shared_decoders() -> Iterator[Decoders]:
    """The in-process APIs' decoders; closed at the end of the session."""
    yield DECODERS
    DECODERS.close()


@pytest.fixture(scope="session")
def service_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="module")
def api(service_redis, service_logs, request) -> Iterator[LocalApi]:
    """The API in this process for the tests of one module (their settings stay theirs)."""
    server = LocalApi(service_logs / f"api-{request.module.__name__}.log")
    yield server
    server.close()


@pytest.fixture(scope="module")
def tiny_worker(api) -> Iterator[LocalWorker]:
    """A worker serving tiny-llama in this process, on a thread, for one module's tests."""
    worker = LocalWorker("tiny-llama").start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def process_api(service_redis, service_logs) -> Iterator[Api]:
    """The API as a uvicorn process, for the end-to-end tests (with `start_worker` processes). It
    decodes with SmolLM2 besides tiny-llama: test_service_e2e.py's encodings are made with it."""
    server = Api(service_logs / "api-process.log", PROTOTOK_API_DECODE_MODELS='["smollm2-135m-instruct"]').start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def api_key(api) -> str | None:
    """The API key service tests send, or None while the API runs without keys: whatever the
    module API's own client sends as `Authorization: Bearer KEY`, else PROTOTOK_TEST_API_KEY."""
    auth = api.http.headers.get("authorization", "")
    return auth.removeprefix("Bearer ").strip() or os.environ.get("PROTOTOK_TEST_API_KEY") or None


@pytest.fixture(scope="module")
def api_headers(api_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@pytest.fixture
def start_cache(tmp_path, monkeypatch):
    """PROTOTOK_CACHE_DIR in a fresh directory, where `prototok start train` writes a model's start."""
    monkeypatch.setenv("PROTOTOK_CACHE_DIR", str(tmp_path))
    clear_cache()
    yield tmp_path
    clear_cache()
