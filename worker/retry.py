"""Redis calls a worker must not lose to an outage, retried with backoff.

Unguarded, a Redis restart, failover or network blip would kill the worker: a write raises,
RQ's failure handling writes to Redis again, raises again, and the worker quits with its
finished result unsaved. So every write that matters is retried until Redis answers,
waiting 0.5 s, 1 s, 2 s, ... up to PROTOTOK_REDIS_RETRY_MAX_S between tries; writes
that do not matter (progress, metrics) try briefly and move on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from service.settings import get_settings

log = logging.getLogger("prototok.worker")

T = TypeVar("T")
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)  # incl. "LOADING" after a restart


def connect(url: str) -> redis.Redis:
    """The worker's client: few retries of its own (ours wrap it) and timeouts, so a dead Redis fails fast."""
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_keepalive=True, health_check_interval=30,
                                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2))


def retrying(what: str, call: Callable[[], T], attempts: int | None = None) -> T:
    """call() until it does not fail for want of Redis; after `attempts` tries (None: forever) re-raise."""
    wait, tries = 0.5, 0
    while True:
        try:
            return call()
        except REDIS_DOWN as exc:
            tries += 1
            if attempts is not None and tries >= attempts:
                raise
            log.warning("%s: Redis unavailable (%s); try %d again in %.1f s", what, exc, tries + 1, wait)
            time.sleep(wait)
            wait = min(wait * 2, get_settings().redis_retry_max_s)


def best_effort(what: str, call: Callable[[], object]) -> bool:
    """call() once; a Redis outage is logged, not raised. True when it went through."""
    try:
        call()
        return True
    except REDIS_DOWN as exc:
        log.warning("%s skipped: Redis unavailable (%s)", what, exc)
        return False
