"""The worker process: a SimpleWorker that keeps one model loaded and proves it is alive.

Why SimpleWorker: RQ's default Worker forks a child per job, which would reload (or
copy-on-write) the model per job and breaks CUDA, which does not survive fork. A
SimpleWorker runs jobs in its own process, so the model loaded at start serves every job.
It runs them in a continuous batch (worker/batch.py): the job RQ hands it, and the queue's
next jobs, which join between optimisation steps while they fit under
PROTOTOK_WORKER_MAX_ROWS rows.

The price is that nothing outside the jobs watches them. RQ's forking worker refreshes a
job's execution heartbeat from the parent; here a side thread (`Pulse`) does it for every job
of the batch, with a short TTL (PROTOTOK_HEARTBEAT_TTL_S). If the process dies (kill -9, OOM,
host lost) the heartbeats stop, the jobs' StartedJobRegistry entries expire, and the next
`StartedJobRegistry.cleanup()` (run by the API when asked about a job, by /metrics and
by any live worker's maintenance) marks each failed with AbandonedJobError, or re-queues it
when PROTOTOK_JOB_RETRIES allows. A job past its time limit fails at the next step; a step
that hangs is ended by SIGALRM (the death penalty, which works because the batch runs in the
main thread).

Redis outages: every Redis call RQ makes around a job (marking it started, finished or
failed, heartbeats, maintenance, suspension checks) is retried with backoff (worker/retry.py)
instead of escaping into RQ's work loop, which would quit on it. The job's own result
stays in memory and is retried the same way (worker/jobs.py). So the process rides out a
Redis restart and goes on taking jobs; dequeueing already retries in RQ itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.worker import SimpleWorker, WorkerStatus

from prototok import LanguageModel, PrototokError, load_model
from prototok.starts import find_start, m_digest
from service import safejob
from service.queues import announce, queue_name
from service.settings import ServiceSettings

from .batch import JobBatch
from .retry import REDIS_DOWN, best_effort, retrying

log = logging.getLogger("prototok.worker")

# Rows of a continuous batch by default, by device and dtype: where a step's rows per second peak
# (bench/results/continuous-step-rows.json: 4 in float32; 8 in bfloat16 with AVX512-BF16, where AMX
# gains 7% more at 16, bench/results/levers.md; a GPU, where a row costs next to nothing beside the
# weight reads, is not measured: docs, "Sizing ...").
CPU_MAX_ROWS = {"float32": 4, "bfloat16": 8}
CUDA_MAX_ROWS = 256


class Pulse:
    """Call `beat` now and then every `every_s` seconds on a daemon thread, until stopped."""

    def __init__(self, beat: Callable[[], None], every_s: float, name: str = "pulse"):
        self.beat, self.every_s = beat, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while True:
            wait = self.every_s
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - a Redis blip must not kill the heartbeat for good
                log.warning("heartbeat failed: %s", exc)
                wait = min(1.0, self.every_s)  # beat again as soon as Redis is back
            if self._stop.wait(wait):
                return

    def __enter__(self) -> Pulse:  # noqa: PYI034 - final class in practice
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every_s + 5)


class ModelWorker(SimpleWorker):
    """SimpleWorker whose running job keeps a short heartbeat, so a dead worker's job fails soon."""

    heartbeat_ttl_s: int = 30
    model: str = ""  # the model it serves (loaded before the first job)
    max_rows: int = 1  # rows of its continuous batch (PROTOTOK_WORKER_MAX_ROWS)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """TTL of the job's started-registry entry: short, because the pulse keeps renewing it."""
        return self.heartbeat_ttl_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run `job` in a continuous batch (worker/batch.py) that takes more of the queue's jobs
        between steps while they fit, until the batch is empty; one pulse renews every job's heartbeat."""
        batch = JobBatch(self, load_model(self.model), self.max_rows)
        batch.join(job, queue)
        with Pulse(batch.heartbeats, self.heartbeat_ttl_s / 3, "job-heartbeat"):
            while batch:
                batch.admit()
                batch.step()
        retrying("worker state", lambda: self.set_state(WorkerStatus.IDLE))

    # RQ's bookkeeping around a job, each retried rather than let a Redis error out of the work loop

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        retrying(f"job {job.id}: marking it started",
                 lambda: super(ModelWorker, self).prepare_job_execution(job, remove_from_intermediate_queue))

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        retrying(f"job {job.id}: ending it", lambda: super(ModelWorker, self).handle_execution_ended(
            job, queue, heartbeat_ttl))

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any, execution: Any) -> None:
        """Mark it finished once Redis answers. If an outage outlasted the heartbeat TTL and a
        registry cleanup took the job for abandoned meanwhile, the result (already stored) wins."""
        retrying(f"job {job.id}: marking it finished", lambda: super(ModelWorker, self).handle_job_success(
            job, queue, started_job_registry, execution))
        registry = FailedJobRegistry(job.origin, connection=self.connection, job_class=type(job),
                                     serializer=self.serializer)
        best_effort(f"job {job.id}: clearing a stale failure", lambda: registry.remove(job))

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = "",
                           execution: Any = None) -> None:
        """RQ logs and drops a failure it cannot write; wait for Redis first so that it can."""
        retrying(f"job {job.id}: marking it failed", self.connection.ping)
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    def check_for_suspension(self, burst: bool) -> None:
        retrying("suspension check", lambda: super(ModelWorker, self).check_for_suspension(burst))

    def run_maintenance_tasks(self) -> None:
        best_effort("registry maintenance", super().run_maintenance_tasks)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:  # only queued into a pipeline: the caller's execute() is what may fail
            super().heartbeat(timeout, pipeline)
            return
        try:
            super().heartbeat(timeout)
        except REDIS_DOWN as exc:
            log.warning("worker heartbeat skipped: Redis unavailable (%s)", exc)


def announce_serving(conn: Redis, lm: LanguageModel, model: str, name: str, ttl_s: float) -> None:
    """One beat of the registry (service/queues.py): this worker serves `model` for ttl_s more
    seconds, and this is the m its model_m jobs would freeze, so that the API can refuse a model_m
    job that no worker could run before it is queued."""
    announce(conn, model, name, ttl_s, start=start_digest(lm))


def start_digest(lm: LanguageModel) -> str | None:
    """sha256 of the shared m of `lm`'s start, "" with no start, None when its start file cannot
    be read (the job then says why)."""
    try:
        start = find_start(lm)
    except PrototokError:
        return None
    return "" if start is None else m_digest(start.m)


def model_worker(conn: Redis, settings: ServiceSettings, model: str, name: str,
                 cls: type[ModelWorker] = ModelWorker) -> ModelWorker:
    """The worker `python -m worker` runs: the model's queue, JSON-only jobs (service/safejob.py), the
    settings' result TTL and heartbeat. `cls` lets the tests run the same worker on a thread."""
    queue = safejob.queue(queue_name(settings, model), conn, default_timeout=settings.job_timeout_s)
    worker = cls([queue], connection=conn, name=name, default_result_ttl=settings.job_result_ttl_s,
                 job_class=safejob.SafeJob, serializer=safejob.SERIALIZER)
    worker.heartbeat_ttl_s = settings.heartbeat_ttl_s
    worker.model, worker.max_rows = model, worker_max_rows(settings, load_model(model))
    return worker


def worker_max_rows(settings: ServiceSettings, lm: LanguageModel) -> int:
    """PROTOTOK_WORKER_MAX_ROWS, or (0) the default for the model's device and dtype."""
    if settings.worker_max_rows > 0:
        return settings.worker_max_rows
    if lm.device.type == "cuda":
        return CUDA_MAX_ROWS
    return CPU_MAX_ROWS.get(str(lm.dtype).removeprefix("torch."), CPU_MAX_ROWS["float32"])
