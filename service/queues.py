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
  Another hash records what each worker said of its model's start (`model_m`): the sha256 of
  the shared m its model_m jobs would freeze, or "" for none. Only the worker can tell (the
  start files are on its host and are checked against its loaded weights); the API reads it to
  refuse a model_m job no live worker could run, before it is queued.
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
from .settings import ServiceSettings

WORKERS_KEY = "prototok:workers"
WORKER_RUNS_KEY = "prototok:workers:run"  # member -> Redis run_id when it last announced
WORKER_STARTS_KEY = "prototok:workers:start"  # member -> sha256 of its shared m (model_m), "" for no start
ENCODE_JOB = "worker.jobs.encode_job"  # by name: the API never imports the worker


def queue_name(settings: ServiceSettings, model: str) -> str:
    return f"{settings.queue_name}:{canonical_name(model)}"


def redis_run_id(conn: Redis) -> str | None:
    """The Redis server's run id, new at each start; None where INFO is not allowed."""
    try:
        return conn.info("server").get("run_id")
    except ResponseError:
        return None


def announce(conn: Redis, model: str, worker: str, ttl_s: float, start: str | None = None) -> None:
    """Say 'worker serves model' for the next ttl_s seconds (to this run of Redis). `start`: the
    sha256 of the m its model_m jobs would freeze, "" when it has no start, None to say nothing."""
    member = f"{canonical_name(model)}\t{worker}"
    run_id = redis_run_id(conn)
    with conn.pipeline() as pipe:
        pipe.zadd(WORKERS_KEY, {member: time.time() + ttl_s})
        if run_id:
            pipe.hset(WORKER_RUNS_KEY, member, run_id)
        if start is not None:
            pipe.hset(WORKER_STARTS_KEY, member, start)
        pipe.execute()


def withdraw(conn: Redis, model: str, worker: str) -> None:
    member = f"{canonical_name(model)}\t{worker}"
    with conn.pipeline() as pipe:
        pipe.zrem(WORKERS_KEY, member)
        pipe.hdel(WORKER_RUNS_KEY, member)
        pipe.hdel(WORKER_STARTS_KEY, member)
        pipe.execute()


def live_workers(conn: Redis) -> list[tuple[str, str]]:
    """(model, worker name) of every worker whose announcement has not expired and was made
    to the Redis now running (not restored from before a restart)."""
    now = time.time()
    with conn.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(WORKERS_KEY, "-inf", now)
        pipe.hgetall(WORKER_RUNS_KEY)
        pipe.zrangebyscore(WORKERS_KEY, now, "+inf")
        pipe.hkeys(WORKER_STARTS_KEY)
        _, runs, members, said = pipe.execute()
    for key, entries in ((WORKER_RUNS_KEY, runs), (WORKER_STARTS_KEY, said)):
        stale = set(entries) - set(members)
        if stale:
            conn.hdel(key, *stale)
    run_id = redis_run_id(conn)
    if run_id:
        members = [m for m in members if runs.get(m) in (None, run_id.encode())]
    return [tuple(m.decode().split("\t", 1)) for m in members]  # type: ignore[misc]


def served_models(conn: Redis) -> set[str]:
    return {model for model, _ in live_workers(conn)}


def worker_starts(conn: Redis, model: str) -> list[str | None]:
    """What each live worker of `model` said of its start: the sha256 of its shared m, "" for
    none, None for a worker that said nothing (one from before workers said it)."""
    model = canonical_name(model)
    members = [f"{model}\t{worker}" for served, worker in live_workers(conn) if served == model]
    if not members:
        return []
    return [None if said is None else said.decode() for said in conn.hmget(WORKER_STARTS_KEY, members)]


def config_to_dict(cfg: EncodeConfig) -> dict:
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(cfg).items()} | {
        "recipe": cfg.recipe.to_dict()
    }


def config_from_dict(data: dict) -> EncodeConfig:
    """The config a job was queued with. A job queued by an API older than `Recipe.start` says
    `warm_start` instead: true is start=warm, false start=random (a rolling upgrade loses no job)."""
    recipe = dict(data["recipe"])
    if "warm_start" in recipe:
        recipe.setdefault("start", "warm" if recipe.pop("warm_start") is True else "random")
    rest = {k: v for k, v in data.items() if k != "recipe"}
    return EncodeConfig(recipe=Recipe(**recipe), **rest)
