"""The worker process: a SimpleWorker that keeps one model loaded and proves it is alive.

Why SimpleWorker: RQ's default Worker forks a child per job, which would reload (or
copy-on-write) the model per job and breaks CUDA, which does not survive fork. A
SimpleWorker runs jobs in its own process, so the model loaded at start serves every job.

The price is that nothing outside the job watches it. RQ's forking worker refreshes the
job's execution heartbeat from the parent; here a side thread (`Pulse`) does it, with a
short TTL (PROTOTOK_HEARTBEAT_TTL_S). If the process dies (kill -9, OOM, host lost) the
heartbeat stops, the job's StartedJobRegistry entry expires, and the next
`StartedJobRegistry.cleanup()` (run by the API when asked about the job, by /metrics and
by any live worker's maintenance) marks it failed with AbandonedJobError, or re-queues it
when PROTOTOK_JOB_RETRIES allows. A hung job is ended by the job timeout (SIGALRM, which
works because the job runs in the main thread).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker, WorkerStatus

log = logging.getLogger("prototok.worker")


class Pulse:
    """Call `beat` now and then every `every_s` seconds on a daemon thread, until stopped."""

    def __init__(self, beat: Callable[[], None], every_s: float, name: str = "pulse"):
        self.beat, self.every_s = beat, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - a Redis blip must not kill the heartbeat for good
                log.warning("heartbeat failed: %s", exc)
            if self._stop.wait(self.every_s):
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

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """TTL of the job's started-registry entry: short, because the pulse keeps renewing it."""
        return self.heartbeat_ttl_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        with Pulse(lambda: self.maintain_heartbeats(job, execution), self.heartbeat_ttl_s / 3, "job-heartbeat"):
            self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)
