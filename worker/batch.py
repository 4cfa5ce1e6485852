"""The worker's continuous batch: every RQ job it holds optimised in one batch of rows.

RQ hands a worker one job at a time (it has no batch dequeue). `JobBatch` takes the first job
RQ gives the worker, then, between optimisation steps, takes more jobs from the worker's queue
while they fit under PROTOTOK_WORKER_MAX_ROWS rows (`prototok.continuous.ContinuousBatch` runs
the steps). Each job keeps RQ's whole lifecycle, through the worker's own methods: an execution
and a place in the started registry while it runs, heartbeats (one pulse renews them all),
finished or failed with its result or error, its own time limit, retries. A job whose rows are
all done is checked, stored and finished at once; the others go on. A job's failure (a cancel,
its time limit, a text the tokenizer refuses) ends that job only.

Admission is fair in turn: a job's optimisation batches hold at most the cap's rows (a larger
job is optimised a cap's worth at a time), and when rows are free, a request waiting to start
its next optimisation batch and the job at the head of the queue take turns, so a long request
cannot keep new ones out, nor they it. A batch that cannot be split (a sharing group) runs when
the batch is empty. `1` = one job at a time, each with its own optimisation batches as before.

A step that hangs (alive, never returning) is ended by the death penalty after the longest
time any held job has left; every job in the batch then fails with its time limit.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field

from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import JobTimeoutException
from rq.utils import now

from prototok import LanguageModel
from prototok.codec import chunk, chunk_size
from prototok.continuous import ContinuousBatch
from service.queues import config_from_dict

from .jobs import EncodeJob
from .retry import REDIS_DOWN, retrying

log = logging.getLogger("prototok.worker")


ADMITTED, NO_ROOM, NOTHING = "admitted", "no room", "nothing"  # what one admission source did
QUIET_S = 2.0  # seconds without looking at the queue after Redis failed to answer


class BatchStalled(BaseException):
    """A step outlived every held job's time limit (a BaseException: no job's own handler takes it)."""


@dataclass
class Member:
    """One RQ job in the batch."""

    job: Job
    queue: Queue
    execution: Execution
    work: EncodeJob
    deadline: float  # time.monotonic() past which the job has outrun its time limit
    timeout: int = field(default=0)


class JobBatch:
    """The jobs one worker optimises together, for as long as it has any."""

    def __init__(self, worker, lm: LanguageModel, max_rows: int):
        self.worker, self.lm, self.max_rows = worker, lm, max(1, max_rows)
        self.engine = ContinuousBatch(lm)
        # a job's optimisation batches are at most the cap, so a large job takes turns with new ones;
        # at 1 (one job at a time) a job keeps its own batches, as a worker without batching runs it
        self.job_rows = self.max_rows if self.max_rows > 1 else None
        self.members: dict[int, Member] = {}  # id(task) -> member
        self.turn_to_queue = True  # whose turn the next free rows are: the queue's, or a waiting request's
        self.lock = threading.Lock()  # the pulse's heartbeats never renew a job the batch is ending
        self.quiet_until = 0.0  # after Redis failed the queue, steps go on without asking it for a while
        self.head_rows: dict[str, int] = {}  # the queue's head job -> the rows of its first optimisation batch

    def __bool__(self) -> bool:
        return bool(self.members)

    def join(self, job: Job, queue: Queue) -> None:
        """Start `job` as RQ does (execution, started registry), build its task, add it to the batch;
        a job that cannot even start fails at once, alone."""
        execution = retrying(f"job {job.id}: starting", lambda: self.worker.prepare_execution(job))
        try:
            self.worker.prepare_job_execution(job, remove_from_intermediate_queue=len(self.worker.queues) == 1)
            job.started_at = now()
            job.check_record()  # JSON record, the encode function, or refused before anything runs
            work = EncodeJob(job, self.lm, self.job_rows)
        except Exception:  # noqa: BLE001 - this job's failure
            self.worker._finalize_failure(job, queue, execution, sys.exc_info())
            return
        timeout = job.timeout or queue.DEFAULT_TIMEOUT
        self.members[id(work.task)] = Member(job, queue, execution, work, time.monotonic() + timeout, timeout)
        self.engine.add(work.task)
        log.info("job %s joins the batch: %d job(s), %d row(s)", job.id, len(self.members), self.engine.rows)

    def heartbeats(self) -> None:
        """Renew every held job's execution heartbeat (the worker's pulse calls this)."""
        with self.lock:
            for member in list(self.members.values()):
                self.worker.maintain_heartbeats(member.job, member.execution)

    # --- admission ---

    def admit(self) -> None:
        """Fill free rows. The queue's next job and the oldest request waiting for its next
        optimisation batch take turns: the one whose turn it is goes first, and if it does not fit
        it waits for rows to free, overtaken by no one. Nothing from the queue while the worker is
        asked to stop; with Redis away, nothing from the queue until it is back."""
        while True:
            sources = [self._from_queue, self._next_batch]
            for source in sources if self.turn_to_queue else sources[::-1]:
                got = source()
                if got == ADMITTED:
                    self.turn_to_queue = source == self._next_batch  # the other one's turn next
                    break
                if got == NO_ROOM:
                    return
            else:
                return  # neither has anything

    def _fits(self, rows: int) -> bool:
        used = self.engine.rows
        return used == 0 or used + rows <= self.max_rows

    def _next_batch(self) -> str:
        waiting = self.engine.between_batches()
        if not waiting:
            return NOTHING
        if not self._fits(waiting[0].next_rows):
            return NO_ROOM
        waiting[0].start_next()
        return ADMITTED

    def _from_queue(self) -> str:
        """Dequeue the queue's next job and join it if its first optimisation batch fits (else it
        stays queued, first in line)."""
        if self.worker._stop_requested or time.monotonic() < self.quiet_until:
            return NOTHING
        try:
            for queue in self.worker.queues:
                head = queue.get_job_ids(0, 1)
                if not head:
                    continue
                if not self._fits(self._first_rows(head[0], queue)):
                    return NO_ROOM
                taken = Queue.dequeue_any([queue], None, connection=self.worker.connection,
                                          job_class=self.worker.job_class, serializer=self.worker.serializer)
                if taken is None:
                    continue  # another worker took it meanwhile
                self.join(*taken)
                return ADMITTED
        except REDIS_DOWN as exc:
            log.warning("no new jobs for %g s: Redis unavailable (%s); the batch goes on", QUIET_S, exc)
            self.quiet_until = time.monotonic() + QUIET_S
        return NOTHING

    def _first_rows(self, job_id: str, queue: Queue) -> int:
        """Rows of a queued job's first optimisation batch: its chunks, times its restarts (capped
        like the task's own batches), worked out once per job. A record that cannot be read counts
        as one row: it is taken, and refused when it joins."""
        if job_id not in self.head_rows:
            self.head_rows = {job_id: self._count_rows(job_id, queue)}  # only the head's is ever asked again
        return self.head_rows[job_id]

    def _count_rows(self, job_id: str, queue: Queue) -> int:
        try:
            job = queue.fetch_job(job_id)
            texts, _, config = job.args
            cfg = config_from_dict(config)
            size = chunk_size(self.lm, cfg)
            chunks = sum(len(chunk(self.lm.tokenize(t), size)) for t in texts)
            per_batch = max(1, min(cfg.max_batch_rows, self.job_rows or cfg.max_batch_rows) // cfg.recipe.seeds)
            return min(chunks, per_batch) * cfg.recipe.seeds
        except Exception:  # noqa: BLE001 - not ours to judge here; join() refuses it properly
            return 1

    # --- stepping ---

    def step(self) -> None:
        """Fail the jobs past their time limit, run one step, and end the jobs it ended."""
        clock = time.monotonic()
        for member in [m for m in self.members.values() if clock > m.deadline]:
            self._fail(member, JobTimeoutException(f"Task exceeded maximum timeout value ({member.timeout} seconds)"))
        if not self.members:
            return
        left = max(m.deadline for m in self.members.values()) - clock
        try:
            with self.worker.death_penalty_class(max(1, math.ceil(left)), BatchStalled):
                outcome = self.engine.step()
        except BatchStalled:
            for member in list(self.members.values()):
                self._fail(member, JobTimeoutException(
                    f"Task exceeded maximum timeout value ({member.timeout} seconds) in a step that did not end"))
            return
        for task, exc in outcome.failed:
            self._fail(self.members[id(task)], exc)
        for task in outcome.finished:
            self._finish(self.members[id(task)])

    def _finish(self, member: Member) -> None:
        """Check and store a job whose rows have all left; its heartbeat is renewed until it ends
        (the check can load the model in another dtype, and the store waits out a Redis outage)."""
        try:
            ids = member.work.finish()
        except Exception as exc:  # noqa: BLE001 - a cancel after optimising, an encoding that does not decode
            self._fail(member, exc)
            return
        with self.lock:
            del self.members[id(member.work.task)]
        self.worker._finalize_success(member.job, member.queue, member.execution, ids)

    def _fail(self, member: Member, exc: BaseException) -> None:
        with self.lock:
            del self.members[id(member.work.task)]
        if member.work.task in self.engine.tasks:
            self.engine.remove(member.work.task)
        member.work.record_failure(exc)
        try:
            raise exc
        except BaseException:  # noqa: BLE001 - RQ's failure path wants exc_info
            self.worker._finalize_failure(member.job, member.queue, member.execution, sys.exc_info())
