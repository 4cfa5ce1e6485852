"""Per-key limits kept in Redis, so that every API replica enforces the same numbers.

- requests per second: a fixed one-second window per key (`INCR` + `EXPIRE`); simple, and at
  worst lets a key through twice its rate across a window edge, which is fine for a guard
  against floods;
- jobs at once: a sorted set of the key's job ids (scored by when each was reserved), pruned of
  ended or expired jobs on each request, then added to and counted in one step, so two racing
  requests cannot both slip in;
- the encode budget of one job: arithmetic on the request, before anything is queued.
"""

from __future__ import annotations

import math
import time

from redis import Redis
from rq.job import Job

from service.settings import ServiceSettings

from .errors import EncodeBudgetExceeded, RateLimited, TooManyJobs
from .keys import Caller

RATE_PREFIX = "prototok:rate:"
ACTIVE_PREFIX = "prototok:active:"
ACTIVE_STATES = {b"queued", b"started", b"deferred", b"scheduled"}
RESERVED_GRACE_S = 60  # a reserved id with no job record yet is being enqueued by a request in flight


def check_rate(conn: Redis, caller: Caller, per_s: int) -> None:
    """Count this request in the key's current one-second window; 429 once it is over."""
    if per_s <= 0:
        return
    now = time.time()
    key = f"{RATE_PREFIX}{caller.name}:{int(now)}"
    with conn.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.expire(key, 2)
        count, _ = pipe.execute()
    if count > per_s:
        retry = max(1, math.ceil(int(now) + 1 - now))
        raise RateLimited(f"more than {per_s} requests per second with this key (PROTOTOK_RATE_LIMIT_PER_S); "
                          f"retry in {retry} s", retry_after=retry)


def active_key(caller: Caller) -> str:
    return ACTIVE_PREFIX + caller.name


def prune_active(conn: Redis, caller: Caller) -> None:
    """Drop the key's jobs that ended, were canceled or whose record expired."""
    key = active_key(caller)
    reserved = [(i.decode(), at) for i, at in conn.zrange(key, 0, -1, withscores=True)]
    if not reserved:
        return
    with conn.pipeline(transaction=False) as pipe:
        for job_id, _ in reserved:
            pipe.hget(Job.key_for(job_id), "status")
        states = pipe.execute()
    now = time.time()
    ended = [job_id for (job_id, at), state in zip(reserved, states)
             if state not in ACTIVE_STATES and not (state is None and now - at < RESERVED_GRACE_S)]
    if ended:
        conn.zrem(key, *ended)


def reserve_job(conn: Redis, caller: Caller, job_id: str, limit: int) -> None:
    """Count `job_id` against the key's jobs at once, or refuse it (429 too_many_jobs)."""
    if limit <= 0:
        return
    prune_active(conn, caller)
    key = active_key(caller)
    with conn.pipeline() as pipe:  # MULTI: add and count together
        pipe.zadd(key, {job_id: time.time()})
        pipe.zcard(key)
        _, count = pipe.execute()
    if count > limit:
        conn.zrem(key, job_id)
        raise TooManyJobs(f"this key has {limit} jobs queued or running, the most it may (PROTOTOK_MAX_JOBS_PER_KEY); "
                          "wait for one to end")


def release_job(conn: Redis, caller: Caller, job_id: str) -> None:
    """Undo `reserve_job` for a job that was never queued."""
    conn.zrem(active_key(caller), job_id)


def encode_cost(texts: list[str], steps: int, seeds: int) -> int:
    """Upper bound on the job's token-steps: every token is at least one UTF-8 byte for the
    byte-level tokenizers these models use, so bytes bound tokens without loading a tokenizer."""
    return sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) * steps * seeds


def check_budget(texts: list[str], steps: int, seeds: int, settings: ServiceSettings) -> None:
    cost = encode_cost(texts, steps, seeds)
    if settings.max_encode_budget > 0 and cost > settings.max_encode_budget:
        raise EncodeBudgetExceeded(
            f"this job would cost {cost:,} token-steps (text bytes {cost // (steps * seeds):,} x max_steps {steps} x "
            f"seeds {seeds}); the limit per job is {settings.max_encode_budget:,} (PROTOTOK_MAX_ENCODE_BUDGET): "
            "send fewer or shorter texts, or fewer steps or seeds")
