import pytest
import torch

from prototok import Arrangement, EncodeConfig, Encoding, Method, decode, decode_ids, decode_vectors, encode_texts
from prototok.errors import BadVectors, DecodeMismatch, EmptyText
from prototok.recipe import TUNED

TEXTS = ["hello world", "The cat sat on the mat.", "ü → ∑ ok"]


@pytest.mark.parametrize("sink", [False, True])
@pytest.mark.parametrize("arr", list(Arrangement))
def test_round_trip_is_exact_for_every_arrangement(tiny, quick_cfg, arr, sink):
    cfg = quick_cfg.with_(arrangement=arr, recipe=quick_cfg.recipe.with_(sink=sink))
    encs = encode_texts(tiny, TEXTS, cfg)
    assert all(enc.sink is sink for enc in encs)
    assert [d.text for d in decode(tiny, encs)] == TEXTS


def test_corrections_make_a_barely_trained_encoding_lossless(tiny):
    cfg = EncodeConfig(recipe=TUNED.with_(max_steps=1, seeds=1))
    [enc] = encode_texts(tiny, ["an untrained text"], cfg)
    assert enc.n_corrections > 0  # one step cannot reconstruct 17 random-model tokens
    assert enc.c_tokens + enc.n_corrections == enc.n_tokens  # accuracy is before corrections
    [res] = decode(tiny, [enc])
    assert res.text == "an untrained text" and res.c_tokens == enc.c_tokens


def test_long_text_is_chunked_and_reassembled(tiny, quick_cfg):
    text = "a fairly long text that will not fit in one chunk"
    [enc] = encode_texts(tiny, [text], quick_cfg.with_(chunk_tokens=8))
    assert enc.lengths == [8] * 6 + [1] and enc.vectors["e"].shape == (7, tiny.hidden_size)
    assert decode(tiny, [enc])[0].text == text


def test_batch_decode_of_mixed_methods_and_sinks(tiny, quick_cfg):
    """One decode call over encodings of both methods, with and without a sink: exact."""
    plain = quick_cfg.with_(recipe=quick_cfg.recipe.with_(sink=False))
    one = encode_texts(tiny, TEXTS[:2], quick_cfg) + encode_texts(tiny, TEXTS[:1], plain)
    ar = encode_texts(tiny, TEXTS[2:], quick_cfg.with_(method=Method.AUTOREGRESSIVE))
    ar += encode_texts(tiny, TEXTS[2:], plain.with_(method=Method.AUTOREGRESSIVE))
    assert [e.sink for e in one + ar] == [True, True, False, True, False]
    for enc, res in zip(one + ar, decode(tiny, one + ar)):
        assert res.c_tokens == enc.c_tokens  # decode rebuilds what the optimiser measured
    assert [d.text for d in decode(tiny, one + ar)] == TEXTS[:2] + TEXTS[:1] + TEXTS[2:] * 2


def test_gpt_neox_architecture_works_too(tiny_neox, quick_cfg):
    encs = encode_texts(tiny_neox, TEXTS, quick_cfg)
    assert [d.text for d in decode(tiny_neox, encs)] == TEXTS


def test_metrics_are_sane(tiny, quick_cfg):
    for enc in encode_texts(tiny, TEXTS, quick_cfg):
        assert 0 <= enc.accuracy <= 1 and enc.c_tokens <= enc.n_tokens
        assert enc.h_lm > 0 and enc.steps >= 1 and enc.seconds > 0


@pytest.mark.parametrize("bad", ["", None])
def test_empty_text_is_refused(tiny, quick_cfg, bad):
    with pytest.raises(EmptyText):
        encode_texts(tiny, [bad], quick_cfg)


def test_tampered_vectors_fail_the_checksum_not_silently(tiny, quick_cfg):
    [enc] = encode_texts(tiny, ["checksum me"], quick_cfg)
    enc.vectors["e"] = enc.vectors["e"] + 10.0
    enc.corrections = [[]]
    with pytest.raises(DecodeMismatch):
        decode(tiny, [enc])


def test_decode_vectors_validates_shape_and_values(tiny, quick_cfg):
    [enc] = encode_texts(tiny, ["abc"], quick_cfg)
    e, m = enc.vectors["e"], enc.vectors["m"]
    assert isinstance(decode_vectors(tiny, e, m, enc.lengths), str)
    with pytest.raises(BadVectors):
        decode_vectors(tiny, e[:, :5], m[:, :5], enc.lengths)
    with pytest.raises(BadVectors):
        decode_vectors(tiny, torch.full_like(e, float("nan")), m, enc.lengths)
    with pytest.raises(BadVectors):
        decode_vectors(tiny, e, m, [0])


def test_sink_is_stored_and_used_by_decode(tiny, quick_cfg):
    cfg = quick_cfg.with_(recipe=quick_cfg.recipe.with_(sink=True))
    [enc] = encode_texts(tiny, ["sink first"], cfg)
    again = Encoding.from_bytes(enc.to_bytes())
    assert again.sink and again.metadata()["sink"] is True
    [d] = decode(tiny, [again])
    assert d.text == "sink first" and d.c_tokens == enc.c_tokens  # the vectors alone, as at encode time
    e, m = again.vectors["e"], again.vectors["m"]
    with_sink = decode_ids(tiny, again.arrangement, e, m, again.lengths, sink=True)[0]
    assert sum(a == b for a, b in zip(with_sink, tiny.tokenize("sink first"))) == enc.c_tokens
