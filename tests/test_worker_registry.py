"""The live-worker registry across a Redis restart, on a Redis this test starts on its own port.

With an append-only Redis, a worker's announcement survives a restart even if the worker does
not (it may have died while Redis was down). It must not count until the worker announces
again to the Redis now running: /readyz answers 503 until then, and 200 after.
"""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest
import redis as redis_lib
from conftest import free_port, redis_answers, wait_for
from redis.backoff import NoBackoff
from redis.retry import Retry

pytestmark = pytest.mark.integration


class PrivateRedis:
    """redis-server on a free port with an append-only file in a temp dir; restartable."""

    def __init__(self, tmp):
        self.port, self.dir = free_port(), tmp
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                        "--appendonly", "yes", "--save", "", "--daemonize", "yes",
                        "--logfile", str(self.dir / "redis.log")], check=True)
        wait_for(lambda: redis_answers(self.port), 20, "the private redis to answer")
        return self

    def _up(self) -> bool:
        """A bare connect: redis-py's default retries would spend seconds on a closed port."""
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        once = redis_lib.Redis(port=self.port, retry=Retry(NoBackoff(), 0))  # not redis-py's 10 retries
        try:
            once.shutdown()  # writes the append-only file out
        except redis_lib.exceptions.ConnectionError:
            pass  # shutdown closes the connection it came on
        wait_for(lambda: not self._up(), 20, "the private redis to stop")


@pytest.fixture
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("this test needs redis-server (apt-get install redis-server)")
    server = PrivateRedis(tmp_path).start()
    yield server
    server.stop()


def test_announcement_from_before_a_redis_restart_does_not_count(private_redis):
    from fastapi.testclient import TestClient

    from app.deps import settings_dep
    from app.main import app
    from service.queues import WORKER_RUNS_KEY, WORKERS_KEY, announce, live_workers, withdraw
    from service.settings import ServiceSettings

    conn = redis_lib.Redis.from_url(private_redis.url)
    app.dependency_overrides[settings_dep] = lambda: ServiceSettings(redis_url=private_redis.url)
    client = TestClient(app, raise_server_exceptions=False)
    try:
        announce(conn, "tiny-llama", "host.1", ttl_s=120)
        assert live_workers(conn) == [("tiny-llama", "host.1")]
        assert client.get("/readyz").status_code == 200

        private_redis.stop()  # the worker is gone too: nobody announces again
        private_redis.start()
        assert conn.zscore(WORKERS_KEY, "tiny-llama\thost.1")  # restored from the append-only file ...
        assert live_workers(conn) == []  # ... but not heard from since the restart
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["code"] == "not_ready" and r.json()["workers"] == []

        announce(conn, "tiny-llama", "host.1", ttl_s=120)  # a worker that survived announces again
        assert live_workers(conn) == [("tiny-llama", "host.1")]
        assert client.get("/readyz").json()["models"] == ["tiny-llama"]

        withdraw(conn, "tiny-llama", "host.1")
        assert live_workers(conn) == [] and not conn.hlen(WORKER_RUNS_KEY)
    finally:
        app.dependency_overrides.clear()
