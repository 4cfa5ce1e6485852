"""What the API and the workers agree on in Redis, besides stored encodings.

- One RQ queue per model, `{queue_name}:{model}`: a job can only reach a worker that has
  that model loaded, and adding GPUs for one model is adding workers on its queue.
- A registry of live workers: a sorted set whose members are `model<TAB>worker name` and
  whose scores are the time each entry expires. A worker re-announces itself every
  `heartbeat_ttl_s / 3` seconds; one that dies simply drops out. The API reads it to answer
  `model_not_served` and `/readyz` without a SCAN, from any host. Beside it, a hash records
  the Redis `run_id` (it changes at every Redis start) each entry was written under: after a
  Redis restart, entries restored from its append-only file name workers that have not been
  heard from since, possibly dead ones, and they do not count until they announce again.
- The job payload: an `EncodeConfig` as plain JSON-able data, so a job says exactly what
  it will run, whatever defaults the worker's version has.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from enum import Enum

from redis import Redis
from redis.exceptions import ResponseError

from prototok.models import canonical_name
from prototok.recipe import EncodeConfig, Recipe
from prototok.settings import Settings

WORKERS_KEY = "prototok:workers"
WORKER_RUNS_KEY = "prototok:workers:run"  # member -> Redis run_id when it last announced
ENCODE_JOB = "worker.jobs.encode_job"  # by name: the API never imports the worker


def queue_name(settings: Settings, model: str) -> str:
    return f"{settings.queue_name}:{canonical_name(model)}"


def redis_run_id(conn: Redis) -> str | None:
    """The Redis server's run id, new at each start; None where INFO is not allowed."""
    try:
        return conn.info("server").get("run_id")
    except ResponseError:
        return None


def announce(conn: Redis, model: str, worker: str, ttl_s: float) -> None:
    """Say 'worker serves model' for the next ttl_s seconds (to this run of Redis)."""
    member = f"{canonical_name(model)}\t{worker}"
    run_id = redis_run_id(conn)
    with conn.pipeline() as pipe:
        pipe.zadd(WORKERS_KEY, {member: time.time() + ttl_s})
        if run_id:
            pipe.hset(WORKER_RUNS_KEY, member, run_id)
        pipe.execute()


def withdraw(conn: Redis, model: str, worker: str) -> None:
    member = f"{canonical_name(model)}\t{worker}"
    with conn.pipeline() as pipe:
        pipe.zrem(WORKERS_KEY, member)
        pipe.hdel(WORKER_RUNS_KEY, member)
        pipe.execute()


def live_workers(conn: Redis) -> list[tuple[str, str]]:
    """(model, worker name) of every worker whose announcement has not expired and was made
    to the Redis now running (not restored from before a restart)."""
    now = time.time()
    with conn.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(WORKERS_KEY, "-inf", now)
        pipe.hgetall(WORKER_RUNS_KEY)
        pipe.zrangebyscore(WORKERS_KEY, now, "+inf")
        _, runs, members = pipe.execute()
    stale = set(runs) - set(members)
    if stale:
        conn.hdel(WORKER_RUNS_KEY, *stale)
    run_id = redis_run_id(conn)
    if run_id:
        members = [m for m in members if runs.get(m) in (None, run_id.encode())]
    return [tuple(m.decode().split("\t", 1)) for m in members]  # type: ignore[misc]


def served_models(conn: Redis) -> set[str]:
    return {model for model, _ in live_workers(conn)}


def config_to_dict(cfg: EncodeConfig) -> dict:
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(cfg).items()} | {
        "recipe": cfg.recipe.to_dict()
    }


def config_from_dict(data: dict) -> EncodeConfig:
    rest = {k: v for k, v in data.items() if k != "recipe"}
    return EncodeConfig(recipe=Recipe(**data["recipe"]), **rest)
