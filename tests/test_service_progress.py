"""The job's progress as the web page draws it: history, token strip, and what they end at.

Against the real Redis, the API and a tiny-llama worker in this process. tiny-llama's tokenizer is
byte-level, so its tokens of an ASCII text are its characters.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from conftest import wait_job

from prototok import Progress
from service.safejob import SafeJob as Job
from worker.progress import HISTORY_POINTS, ProgressReporter

pytestmark = pytest.mark.integration

TEXT = "progress, step by step"


@pytest.fixture(scope="module")
def job(api, tiny_worker, api_headers) -> dict:
    r = api.http.post("/v1/encode", json={"text": TEXT, "options": {"max_steps": 300, "seeds": 2}},
                      headers=api_headers)
    assert r.status_code == 202, r.text
    return wait_job(api, r.json()["job_id"], 300, tiny_worker, every=0.05)


def test_history_is_the_whole_run_in_order(job):
    assert job["status"] == "finished", job
    history = job["progress"]["history"]
    steps = [p["step"] for p in history]
    assert steps[0] == 1 and steps == sorted(set(steps)), steps
    assert steps[-1] == job["progress"]["step"]  # the last step is saved even between two reports
    assert all(0 <= p["accuracy"] <= 1 and p["loss"] >= 0 for p in history)
    assert history[-1]["accuracy"] == max(p["accuracy"] for p in history)  # best-so-far never falls


def test_token_strip_ends_where_the_encoding_ends(api, job, api_headers):
    """The strip's last state is the stored encoding: its wrong positions are its corrections."""
    progress = job["progress"]
    assert "".join(progress["tokens"]) == TEXT
    assert len(progress["correct"]) == len(progress["tokens"]) == len(TEXT)
    emb = api.http.get(f"/v1/embeddings/{job['embedding_ids'][0]}", headers=api_headers).json()
    assert progress["correct"].count(False) == emb["corrections"]
    assert progress["correct"].count(True) == emb["c_tokens"]


def report(step: int, predicted: list[int], loss: float = 1.0) -> Progress:
    acc = sum(p == t for p, t in zip(predicted, [1, 2, 3])) / 3
    return Progress(step, 5000, loss, [acc], 0, torch.tensor([predicted]))


def test_reporter_thins_history_and_counts_on_across_batches(service_redis):
    """Saved every step for 1300 steps, then a second optimisation call: the history stays
    bounded, covers the whole run, and the strip keeps the first call's (first text's) state."""
    job = Job.create("worker.jobs.encode_job", connection=service_redis)
    job.save()
    rep = ProgressReporter(job, every=1, first=[[1, 2, 3]])
    for step in range(1, 1301):
        rep(report(step, [1, 2, 9] if step < 1300 else [1, 2, 3]))
    rep(report(1, [7, 7, 7]))  # next batch of chunks: steps restart
    rep(report(2, [7, 7, 7]))
    rep.flush()
    saved = Job.fetch(job.id, connection=service_redis).meta["progress"]
    steps = [p["step"] for p in saved["history"]]
    assert len(steps) <= HISTORY_POINTS and steps == sorted(set(steps))
    assert steps[0] == 1 and steps[-1] == 1302 and saved["step"] == 2
    assert max(b - a for a, b in pairwise(steps)) <= 4  # thinned evenly, no hole
    assert saved["correct"] == [True, True, True]  # from step 1300 of the first call
