"""One batch of decodes, as the model's decode process (app/decode_process.py) runs it.

A batch is what the lane (app/batcher.py) gathered: encodings (stored or uploaded) and raw
vectors of one model. `run_batch` splits it into the groups that can share a forward pass
(encodings by the dtype they decode in, vectors by their layout) and runs each group in one
pass: `prototok.decode` for encodings, `decode_ids` for vectors.

Exactness: `prototok.decode` checks each text's token checksum. A pass over many requests can
differ from a pass alone at a low-margin position (batch shape changes float rounding); when a
pass fails in any way, each of its requests is decoded again alone, so one request's failure
(or such a flip) never fails another. Raw vectors carry no checksum: their text is what the
vectors give in the pass they were decoded in.

Nothing here imports the web stack: the decode process imports this module.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from prototok import Encoding, LanguageModel, decode, decode_ids, load_model
from prototok.codec import Decoded, check_vectors, dtype_name
from prototok.recipe import Arrangement
from service.settings import ServiceSettings

log = logging.getLogger("prototok.api")


@dataclass
class VectorsResult:
    text: str
    seconds: float


Outcome = Decoded | VectorsResult | Exception  # one request's answer, or the error it gets


@dataclass
class Job:
    """One decode request: an encoding, or raw vectors with their layout."""

    enc: Encoding | None = None
    e: torch.Tensor | None = None  # (K, d) or (d,) as the client sent them; checked in the pass
    m: torch.Tensor | None = None
    lengths: list[int] = field(default_factory=list)
    arrangement: Arrangement = Arrangement.E_MN1
    sink: bool = False

    @property
    def positions(self) -> int:
        return self.enc.n_tokens if self.enc is not None else sum(self.lengths)


def run_batch(model: str, jobs: list[Job], dtypes: Sequence[str]) -> tuple[list[Outcome], list[int]]:
    """Each job's outcome, in order, and the number of requests in each pass that ran.
    `dtypes`: PROTOTOK_API_DECODE_DTYPES (see `lane_dtype`)."""
    passes: list[int] = []
    try:
        lm = load_model(model)
    except Exception as exc:  # noqa: BLE001 - a model that cannot load fails its requests, not the lane
        return [exc] * len(jobs), passes
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        if job.enc is not None:
            key: tuple = ("encoding", lane_dtype(dtypes, lm, job.enc))
        else:
            key = ("vectors", job.arrangement, job.sink)
        groups.setdefault(key, []).append(i)
    outcomes: list[Outcome] = [RuntimeError("not decoded")] * len(jobs)
    for key, idx in groups.items():
        mine = [jobs[i] for i in idx]
        try:
            group_lm = load_model(model, dtype=key[1]) if key[0] == "encoding" and key[1] else lm
            results = _decode(group_lm, mine, passes)
        except Exception as exc:  # noqa: BLE001 - the dtype copy did not load
            results = [exc] * len(mine)
        for i, out in zip(idx, results):
            outcomes[i] = out
    return outcomes, passes


def _decode(lm: LanguageModel, jobs: list[Job], passes: list[int]) -> list[Outcome]:
    """One pass for jobs that can share it; if it fails, each job alone."""
    passes.append(len(jobs))
    try:
        return list(_pass(lm, jobs))
    except Exception as exc:  # noqa: BLE001 - handed to the request(s), never lost
        if len(jobs) == 1:
            return [exc]
        log.info("a batch of %d decodes failed (%s); decoding each alone", len(jobs), exc)
        return [out for job in jobs for out in _decode(lm, [job], passes)]


def _pass(lm: LanguageModel, jobs: list[Job]) -> list[Decoded] | list[VectorsResult]:
    """One forward pass for jobs of one kind (and, for vectors, one layout)."""
    if jobs[0].enc is not None:
        return decode(lm, [j.enc for j in jobs])  # checks every text's checksum
    rows = [check_vectors(lm, j.e, j.m, j.lengths) for j in jobs]  # each (K_j, d)
    start = time.perf_counter()
    ids = decode_ids(lm, jobs[0].arrangement, torch.cat([e for e, _ in rows]), torch.cat([m for _, m in rows]),
                     [n for j in jobs for n in j.lengths], jobs[0].sink)
    seconds = time.perf_counter() - start
    out, i = [], 0
    for job in jobs:
        mine, i = ids[i : i + len(job.lengths)], i + len(job.lengths)
        out.append(VectorsResult(lm.detokenize([t for chunk in mine for t in chunk]), seconds))
    return out


def lane_dtype(dtypes: Sequence[str], lm: LanguageModel, enc: Encoding) -> str | None:
    """None: decode in the lane's own model. An encoding made in another dtype that
    PROTOTOK_API_DECODE_DTYPES (`dtypes`) lists decodes in a copy of the model in that dtype (loaded once)
    from the start; one made in float32 before the dtype was recorded counts as float32. Either way,
    `prototok.decode` tries the host's other dtypes for an encoding whose checksum fails."""
    made = enc.compute_dtype or "float32"
    if made != dtype_name(lm.dtype) and made in dtypes:
        return made
    return None


def lower_priority(nice: int, whole_process: bool = False) -> None:
    """Renice this thread (Linux: niceness is per thread) to at least `nice`, never higher in
    priority than it runs; threads it starts later inherit it, so called first in the decode
    process it covers torch's workers too. `whole_process`: every thread
    that already exists as well (a spawned child may have started some while importing)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tasks = [threading.get_native_id()]
    if whole_process and os.path.isdir("/proc/self/task"):
        tasks = [int(t) for t in os.listdir("/proc/self/task")]
    for task in tasks:
        try:
            os.setpriority(os.PRIO_PROCESS, task, max(nice, os.getpriority(os.PRIO_PROCESS, task)))
        except OSError as exc:  # a thread that ended meanwhile, or no permission
            log.warning("could not lower the decode passes' priority: %s", exc)


def decode_threads(settings: ServiceSettings) -> int:
    return settings.decode_threads or max(1, (os.cpu_count() or 2) - 1)
