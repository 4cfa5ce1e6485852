"""What routes get through `Depends`: settings, the Redis connection, the store, queues, the decoder.

Tests and deployments change behaviour through PROTOTOK_* variables or
`app.dependency_overrides[settings_dep]` (or `[decoder_dep]`); nothing reads the environment elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request
from redis import Redis
from rq import Queue

from service import safejob
from service.queues import queue_name
from service.settings import ServiceSettings, get_settings
from service.store import EncodingStore

from .decoding import Decoder


def settings_dep() -> ServiceSettings:
    return get_settings()


@lru_cache(maxsize=8)
def redis_for(url: str) -> Redis:
    """One pooled client per URL and process; short timeouts so /readyz answers when Redis is down."""
    return Redis.from_url(url, socket_connect_timeout=3, socket_timeout=15, health_check_interval=30)


def redis_dep(settings: Annotated[ServiceSettings, Depends(settings_dep)]) -> Redis:
    return redis_for(settings.redis_url)


def store_dep(conn: Annotated[Redis, Depends(redis_dep)]) -> EncodingStore:
    return EncodingStore(conn)


def queues_dep(conn: Annotated[Redis, Depends(redis_dep)],
               settings: Annotated[ServiceSettings, Depends(settings_dep)]) -> Callable[[str], Queue]:
    """model name -> that model's queue (the model comes from the body, so a factory)."""
    return lambda model: safejob.queue(queue_name(settings, model), conn, default_timeout=settings.job_timeout_s)


def decoder_dep(request: Request) -> Decoder:
    """The app's decoder, made at start-up (app/main.py, lifespan)."""
    return request.app.state.decoder


SettingsDep = Annotated[ServiceSettings, Depends(settings_dep)]
RedisDep = Annotated[Redis, Depends(redis_dep)]
StoreDep = Annotated[EncodingStore, Depends(store_dep)]
QueuesDep = Annotated[Callable[[str], Queue], Depends(queues_dep)]
DecoderDep = Annotated[Decoder, Depends(decoder_dep)]
