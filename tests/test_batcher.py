"""The decode lane (app/batcher.py) on tiny-llama, its passes in the model's decode process:
concurrent decodes share one pass, every answer is the one a pass alone gives, one bad request never fails the others, and a
full queue says so instead of growing. What only the process has (a death, the pipe): test_decode_process.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
import torch

from app.batcher import DecodeBusy, DecodeLane
from app.telemetry import DECODE_BATCH
from prototok import decode_vectors, encode_texts
from prototok.errors import BadVectors, DecodeMismatch
from prototok.recipe import Arrangement
from service.settings import ServiceSettings

TEXTS = ["one", "a second text", "the third, longest text of all", "four"]


@pytest.fixture(scope="module")
def encodings(tiny):
    from prototok.recipe import TUNED, EncodeConfig

    return encode_texts(tiny, TEXTS, EncodeConfig(recipe=TUNED.with_(max_steps=4, seeds=1)))


@pytest.fixture
def lane() -> Iterator[Callable[..., DecodeLane]]:
    """Lanes whose thread is not started yet, so a test can fill the queue first; closed after the
    test (their decode processes exit). One torch thread, as the tests' own."""
    made: list[DecodeLane] = []

    def make(**settings) -> DecodeLane:
        made.append(DecodeLane("tiny-llama", ServiceSettings(decode_threads=1, **settings)))
        return made[-1]

    yield make
    for each in made:
        each.close()


def batches() -> tuple[float, float]:
    """(passes, requests) the lanes of this process have run so far."""
    samples = {s.name: s.value for s in DECODE_BATCH.collect()[0].samples}
    return samples["prototok_decode_batch_requests_count"], samples["prototok_decode_batch_requests_sum"]


def test_waiting_decodes_share_one_pass_and_stay_exact(lane, encodings):
    decodes = lane(decode_batch_wait_ms=50)
    passes, requests = batches()
    futures = [decodes.submit_encoding(enc) for enc in encodings]
    decodes.start()
    assert [f.result(timeout=120).text for f in futures] == TEXTS
    assert batches() == (passes + 1, requests + len(TEXTS))


def test_the_position_budget_splits_batches(lane, encodings):
    decodes = lane(decode_batch_wait_ms=50, decode_batch_tokens=max(e.n_tokens for e in encodings))
    passes, _ = batches()
    futures = [decodes.submit_encoding(enc) for enc in encodings]
    decodes.start()
    assert [f.result(timeout=120).text for f in futures] == TEXTS
    assert batches()[0] - passes >= 2


def test_a_checksum_failure_in_a_batch_fails_only_its_own_request(lane, encodings):
    """The batch fails as a whole; each request is decoded again alone, so the others still get their text."""
    bad = dataclasses.replace(encodings[1], ids_sha256="0" * 64)
    decodes = lane(decode_batch_wait_ms=50)
    futures = [decodes.submit_encoding(enc) for enc in (encodings[0], bad, encodings[2])]
    decodes.start()
    assert futures[0].result(timeout=120).text == TEXTS[0]
    with pytest.raises(DecodeMismatch):
        futures[1].result(timeout=120)
    assert futures[2].result(timeout=120).text == TEXTS[2]


def random_vectors(*rows: int) -> list[tuple[torch.Tensor, torch.Tensor, list[int]]]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(k, 32, generator=gen), torch.randn(k, 32, generator=gen), [5] * k) for k in rows]


def test_vectors_batched_give_what_each_gives_alone(lane, tiny):
    reqs = random_vectors(1, 2, 1)
    decodes = lane(decode_batch_wait_ms=50)
    passes, _ = batches()
    futures = [decodes.submit_vectors(e, m, n, Arrangement.E_MN1, True) for e, m, n in reqs]
    decodes.start()
    alone = [decode_vectors(tiny, e, m, n, Arrangement.E_MN1, sink=True) for e, m, n in reqs]
    assert [f.result(timeout=120).text for f in futures] == alone
    assert batches()[0] == passes + 1


def test_bad_vectors_fail_only_their_own_request(lane, tiny):
    [(e, m, n)] = random_vectors(1)
    decodes = lane(decode_batch_wait_ms=50)
    good = decodes.submit_vectors(e, m, n, Arrangement.E_MN1, True)
    nan = decodes.submit_vectors(torch.full((1, 32), float("nan")), m, n, Arrangement.E_MN1, True)
    decodes.start()
    assert good.result(timeout=120).text == decode_vectors(tiny, e, m, n, Arrangement.E_MN1, sink=True)
    with pytest.raises(BadVectors):
        nan.result(timeout=120)


def test_a_full_queue_is_refused_not_grown(lane, encodings):
    decodes = lane(decode_queue_max=2)
    futures = [decodes.submit_encoding(enc) for enc in encodings[:2]]
    with pytest.raises(DecodeBusy) as refused:
        decodes.submit_encoding(encodings[2])
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
    decodes.start()
    assert [f.result(timeout=120).text for f in futures] == TEXTS[:2]


def test_an_encoding_made_in_another_listed_dtype_decodes_in_that_dtype(lane, tiny):
    """PROTOTOK_API_DECODE_DTYPES: the API keeps a model copy in the encoding's own dtype."""
    from app.decode_pass import lane_dtype
    from prototok import load_model
    from prototok.recipe import TUNED, EncodeConfig

    bf16 = load_model("tiny-llama", dtype="bfloat16")
    [enc] = encode_texts(bf16, ["made in bf16"], EncodeConfig(recipe=TUNED.with_(max_steps=4, seeds=1)))
    assert lane_dtype(["bfloat16"], tiny, enc) == "bfloat16"
    assert lane_dtype([], tiny, enc) is None  # not asked: the API's own dtype
    assert lane_dtype(["bfloat16"], bf16, enc) is None  # already that dtype
    decodes = lane(api_decode_dtypes=["bfloat16"]).start()
    assert decodes.submit_encoding(enc).result(120).text == "made in bf16"
