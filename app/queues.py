"""What the API and the workers agree on in Redis, besides stored encodings.

- One RQ queue per model, `{queue_name}:{model}`: a job can only reach a worker that has
  that model loaded, and adding GPUs for one model is adding workers on its queue.
- A registry of live workers: a sorted set whose members are `model<TAB>worker name` and
  whose scores are the time each entry expires. A worker re-announces itself every
  `heartbeat_ttl_s / 3` seconds; one that dies simply drops out. The API reads it to answer
  `model_not_served` and `/readyz` without a SCAN, from any host.
- The job payload: an `EncodeConfig` as plain JSON-able data, so a job says exactly what
  it will run, whatever defaults the worker's version has.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from enum import Enum

from redis import Redis

from prototok.models import canonical_name
from prototok.recipe import EncodeConfig, Recipe
from prototok.settings import Settings

WORKERS_KEY = "prototok:workers"
ENCODE_JOB = "worker.jobs.encode_job"  # by name: the API never imports the worker


def queue_name(settings: Settings, model: str) -> str:
    return f"{settings.queue_name}:{canonical_name(model)}"


def announce(conn: Redis, model: str, worker: str, ttl_s: float) -> None:
    """Say 'worker serves model' for the next ttl_s seconds."""
    conn.zadd(WORKERS_KEY, {f"{canonical_name(model)}\t{worker}": time.time() + ttl_s})


def withdraw(conn: Redis, model: str, worker: str) -> None:
    conn.zrem(WORKERS_KEY, f"{canonical_name(model)}\t{worker}")


def live_workers(conn: Redis) -> list[tuple[str, str]]:
    """(model, worker name) of every worker whose announcement has not expired."""
    now = time.time()
    conn.zremrangebyscore(WORKERS_KEY, "-inf", now)
    members = conn.zrangebyscore(WORKERS_KEY, now, "+inf")
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
