"""Continuous batching of encodes: many requests' rows in one optimisation batch.

A worker that optimises one request at a time leaves most of a step's cost unshared: a step
of one ~20-token row is bound by reading the weights, and rows added to the same forward
pass cost far less than steps of their own (on a GPU, almost nothing). `ContinuousBatch`
steps the current run of every request it holds in one forward and backward pass
(`optimize.step_runs`); between steps, requests join and leave. Every row keeps its own
vectors, Adam moments, step count and schedule (`rowadam.RowAdamW`), so a request's
optimisation is what it would be alone, up to the rounding of a different batch shape, and a
solve is judged in the shape of its text's decode before it counts (`optimize.Run`).

Nothing here knows of queues: the worker (worker/batch.py) decides which requests join.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .codec import EncodeTask
from .models import LanguageModel
from .optimize import step_runs


@dataclass
class Outcome:
    """What one step ended: the requests whose encodings are ready, and those that failed."""

    finished: list[EncodeTask] = field(default_factory=list)
    failed: list[tuple[EncodeTask, Exception]] = field(default_factory=list)


class ContinuousBatch:
    """Encode requests of one model stepped together, joining and leaving between steps."""

    def __init__(self, lm: LanguageModel):
        self.lm = lm
        self.tasks: list[EncodeTask] = []

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def rows(self) -> int:
        """Rows the next step trains, over every request held."""
        return sum(task.rows for task in self.tasks)

    def between_batches(self) -> list[EncodeTask]:
        """Requests waiting to start their next optimisation batch (`EncodeTask.start_next`), oldest first."""
        return [task for task in self.tasks if task.run is None and not task.done]

    def add(self, task: EncodeTask) -> None:
        self.tasks.append(task)

    def remove(self, task: EncodeTask) -> None:
        self.tasks.remove(task)

    def step(self) -> Outcome:
        """One step of every request; a request whose own work fails (its progress callback, its
        packaging) leaves with its error, and only it. An error of the shared pass itself (out of
        memory, say) propagates: every request held was in that pass."""
        step_runs(self.lm, [task.run for task in self.tasks if task.run is not None])
        out = Outcome()
        for task in list(self.tasks):
            try:
                task.advance()
            except Exception as exc:  # noqa: BLE001 - this request's failure, handed to its owner
                out.failed.append((task, exc))
                self.tasks.remove(task)
                continue
            if task.done:
                out.finished.append(task)
                self.tasks.remove(task)
        return out
