"""Cancelling a job: a flag in Redis that the API sets and the worker reads.

RQ's own stop command kills a forked work horse, which a SimpleWorker (one process that
keeps the model loaded) does not have. So `DELETE /v1/jobs/{id}` sets `prototok:cancel:{id}`,
and the worker looks at it at each progress report (every PROTOTOK_PROGRESS_EVERY steps),
before the job starts and once more before it stores anything: the job stops at its next
report, fails with code `canceled`, and nothing partial is stored. A job still in the queue
is also canceled in RQ at once, so no worker takes it.
"""

from __future__ import annotations

from redis import Redis

PREFIX = "prototok:cancel:"


def request(conn: Redis, job_id: str, ttl_s: int) -> None:
    """Ask for the job to stop; the flag outlives any run of the job (job timeout + margin)."""
    conn.set(PREFIX + job_id, b"1", ex=ttl_s)


def requested(conn: Redis, job_id: str) -> bool:
    return bool(conn.exists(PREFIX + job_id))
