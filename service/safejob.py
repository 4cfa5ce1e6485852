"""RQ jobs as this service keeps them: JSON only, one function, no callbacks, no webhooks.

By default RQ pickles a job's data, meta and result, and a job hash names the function a
worker imports and calls, plus optional callbacks (imported and called by a worker, and by
anyone's `StartedJobRegistry.cleanup()`, the API included) and webhook URLs. So whoever could
write to Redis could run code in the API and in every worker. `SafeJob` closes each door:

- data, meta and results go through RQ's `JSONSerializer`, whatever the caller passes;
- a worker calls `worker.jobs.encode_job` and nothing else: any other name fails the job
  before anything is imported;
- a worker checks the whole record (`check_record`) before it calls the function, so a job
  whose meta is not JSON fails without running;
- callbacks and webhooks are never looked up.

RQ keeps a job's results apart from its hash, in a stream (`rq:results:{id}`); a result read
from there that this service did not write (not JSON, not RQ's form, not a stream) raises
RefusedJob as a bad hash does.

Every Queue, registry and job fetch in the API and the worker goes through `queue()`,
`registry()` and `fetch()` here; `check_record` is how the API refuses a record that is not
valid JSON (`corrupt_job_record`) instead of showing half of it. RefusedJob is a
CorruptJobRecord, so wherever it comes up in the API it answers that code.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError
from rq import Queue
from rq.exceptions import DeserializationError
from rq.job import Job
from rq.registry import BaseRegistry, StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from .errors import CorruptJobRecord
from .queues import ENCODE_JOB

log = logging.getLogger("prototok.jobs")

SERIALIZER = JSONSerializer

# What reading a result that RQ (with SERIALIZER) did not write raises: ValueError for JSON, UTF-8,
# base64, a number or a result type that is none of RQ's; OverflowError for a time out of range;
# KeyError for a missing field; zlib.error for an exception text that is not compressed;
# ResponseError (WRONGTYPE) when the key is not a stream.
UNREADABLE_RESULT = (ValueError, OverflowError, KeyError, zlib.error, ResponseError)


class RefusedJob(CorruptJobRecord):
    """A job record this service did not write (another function, or not JSON): never run or shown."""


class SafeJob(Job):
    def __init__(self, id: str | None = None, connection: Redis | None = None, serializer: Any = None):
        super().__init__(id, connection, serializer=SERIALIZER)

    @property
    def func(self):
        """The encode job, and only it; checked by name before anything is imported."""
        try:
            name = self.func_name
        except DeserializationError as exc:
            raise RefusedJob(f"job {self.id}: its data is not valid JSON; refused") from exc
        if name != ENCODE_JOB:
            raise RefusedJob(f"job {self.id} names '{name}'; this service runs only {ENCODE_JOB}")
        return super().func

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, *args: Any, **kwargs: Any) -> None:
        """Never: a URL read from Redis is not a place this service sends requests to."""

    def latest_result(self, timeout: int = 0) -> Result | None:
        """RQ's latest result of this job (what `return_value()` reads too); RefusedJob when the
        results stream holds one this service did not write."""
        try:
            return super().latest_result(timeout)
        except UNREADABLE_RESULT as exc:
            raise RefusedJob(f"job {self.id}: its latest result is not one this service wrote "
                             f"({type(exc).__name__})") from exc

    def check_record(self) -> None:
        """Raise RefusedJob unless data, meta and the latest result are JSON and the function is ours."""
        if set(self.meta) == {"unserialized"}:  # RQ's placeholder for meta its serializer could not read
            raise RefusedJob(f"job {self.id}: its meta is not valid JSON")
        self.func  # noqa: B018 - the check is in the property
        self.latest_result()

    def perform(self) -> Any:
        """Check the whole record, then run the job. RQ reads meta it cannot deserialize as a
        placeholder and would call the function anyway, which would fail only at its first save."""
        self.check_record()
        return super().perform()


def queue(name: str, conn: Redis, **kwargs: Any) -> Queue:
    return Queue(name, connection=conn, job_class=SafeJob, serializer=SERIALIZER, **kwargs)


def registry(cls: type[BaseRegistry], name: str, conn: Redis) -> BaseRegistry:
    return cls(name, connection=conn, job_class=SafeJob, serializer=SERIALIZER)


def cleanup_abandoned(conn: Redis, queue_name: str, heartbeat_ttl_s: float) -> None:
    """Fail (or re-queue) the running jobs whose worker stopped renewing their heartbeat, unless
    Redis itself restarted less than a heartbeat TTL ago: then every heartbeat looks stale
    although the workers are alive and about to reconnect, so give them that TTL first."""
    if float(conn.info("server").get("uptime_in_seconds", heartbeat_ttl_s)) < heartbeat_ttl_s:
        return
    registry(StartedJobRegistry, queue_name, conn).cleanup()


def fetch(job_id: str, conn: Redis) -> SafeJob:
    """The job (NoSuchJobError if absent), its record checked: RefusedJob if it is not ours."""
    job = SafeJob.fetch(job_id, connection=conn)
    try:
        job.check_record()
    except RefusedJob:
        log.exception("job %s: refusing a record this service did not write", job_id)
        raise
    return job
