"""Continuous batching in the core (prototok/continuous.py): requests stepped together learn as
they would alone, join and leave between steps, fail alone, and every encoding rebuilds its
text exactly from its own file, decoded alone."""

from __future__ import annotations

import pytest
import torch

from prototok import Encoding, decode, encode_texts
from prototok.codec import EncodeTask
from prototok.continuous import ContinuousBatch
from prototok.recipe import TUNED, EncodeConfig, Method

TEXTS = ["hello world", "The cat sat on the mat.", "a somewhat longer line of text, in two chunks of it"]
CONFIGS = [  # per-request options that share a batch: steps, restarts, lr, margin, storage, chunking
    EncodeConfig(recipe=TUNED.with_(max_steps=30, seeds=2), chunk_tokens=24),
    EncodeConfig(recipe=TUNED.with_(max_steps=20, seeds=1, lr=0.05, margin=0.5), storage="int8"),
    EncodeConfig(recipe=TUNED.with_(max_steps=25, seeds=1), chunk_tokens=16, rank=8),
]


def drive(batch: ContinuousBatch, joins: dict[int, EncodeTask]) -> tuple[list[EncodeTask], list, list[int]]:
    """Step until empty, adding joins[step] before that step; (finished, failed, batch size per step)."""
    finished, failed, sizes, step = [], [], [], 0
    while batch.tasks or any(s >= step for s in joins):
        if step in joins:
            batch.add(joins[step])
        sizes.append(len(batch))
        out = batch.step()
        finished += out.finished
        failed += out.failed
        step += 1
    return finished, failed, sizes


def exact_alone(lm, enc: Encoding, text: str) -> bool:
    """The encoding's own file, decoded by itself: the exact text."""
    return decode(lm, [Encoding.from_bytes(enc.to_bytes())])[0].text.encode() == text.encode()


def test_requests_that_join_between_steps_learn_as_they_would_alone(tiny):
    alone = [encode_texts(tiny, [t], c)[0] for t, c in zip(TEXTS, CONFIGS)]
    batch = ContinuousBatch(tiny)
    tasks = [EncodeTask(tiny, [t], c) for t, c in zip(TEXTS, CONFIGS)]
    finished, failed, sizes = drive(batch, {0: tasks[0], 4: tasks[1], 9: tasks[2]})
    assert failed == [] and {id(t) for t in finished} == {id(t) for t in tasks}
    assert max(sizes) == 3 and sizes[0] == 1  # all three stepped together for a while
    for task, own, text in zip(tasks, alone, TEXTS):
        [enc] = task.encodings
        assert exact_alone(tiny, enc, text)
        assert enc.steps == own.steps  # each row keeps its own schedule and step count
        for name in enc.vectors:  # the same optimisation, up to a batch shape's rounding
            assert torch.allclose(enc.vectors[name], own.vectors[name], atol=1e-3), name


def test_a_request_that_fails_leaves_alone_and_the_others_finish(tiny):
    class Canceled(Exception):
        pass

    def cancel_at_5(p):
        if p.step == 5:
            raise Canceled("asked to stop")

    batch = ContinuousBatch(tiny)
    doomed = EncodeTask(tiny, ["stop me"], CONFIGS[0], progress=cancel_at_5)
    others = [EncodeTask(tiny, [t], c) for t, c in zip(TEXTS[:2], CONFIGS[:2])]
    finished, failed, _ = drive(batch, {0: doomed, 1: others[0], 2: others[1]})
    assert [(id(t), type(e)) for t, e in failed] == [(id(doomed), Canceled)]
    assert {id(t) for t in finished} == {id(t) for t in others}
    for task, text in zip(others, TEXTS):
        assert exact_alone(tiny, task.encodings[0], text)


def test_a_mem_request_steps_beside_a_one_step_request_and_both_decode_exactly(tiny):
    mem = EncodeTask(tiny, ["[mem] baseline"], EncodeConfig(recipe=TUNED.with_(max_steps=10, seeds=1),
                                                          method=Method.AUTOREGRESSIVE))
    one = EncodeTask(tiny, [TEXTS[0]], CONFIGS[0])
    batch = ContinuousBatch(tiny)
    batch.add(mem)
    batch.add(one)
    finished, failed, _ = drive(batch, {})
    assert failed == [] and len(finished) == 2
    assert exact_alone(tiny, mem.encodings[0], "[mem] baseline") and exact_alone(tiny, one.encodings[0], TEXTS[0])


def test_a_request_waits_between_its_optimisation_batches_until_started(tiny):
    cfg = CONFIGS[0].with_(max_batch_rows=2)  # seeds 2: one chunk per optimisation batch
    task = EncodeTask(tiny, [TEXTS[2]], cfg)
    assert len(task.pieces[0]) == 3 and task.rows == 2 and task.next_rows == 0
    batch = ContinuousBatch(tiny)
    batch.add(task)
    while task.run is not None:
        batch.step()
    assert batch.between_batches() == [task] and task.next_rows == 2 and task.rows == 0
    batch.step()  # nothing of it steps while it waits
    assert task.run is None and not task.done
    while not task.done:
        if task.run is None:
            task.start_next()
        out = batch.step()
    assert out.finished == [task] and exact_alone(tiny, task.encodings[0], TEXTS[2])


@pytest.mark.parametrize("bad", [{"texts": ["ok", ""]}, {"texts": ["x"], "cfg": CONFIGS[0].with_(rank=999)}])
def test_a_bad_request_fails_when_built_before_it_joins(tiny, bad):
    from prototok.errors import PrototokError

    with pytest.raises(PrototokError):
        EncodeTask(tiny, bad["texts"], bad.get("cfg"))
