import pytest
import torch

from prototok import Arrangement, EncodeConfig, Method, decode, decode_vectors, encode_texts
from prototok.errors import BadVectors, DecodeMismatch, EmptyText
from prototok.recipe import TUNED

TEXTS = ["hello world", "The cat sat on the mat.", "ü → ∑ ok"]


@pytest.mark.parametrize("arr", list(Arrangement))
def test_round_trip_is_exact_for_every_arrangement(tiny, quick_cfg, arr):
    encs = encode_texts(tiny, TEXTS, quick_cfg.with_(arrangement=arr))
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


def test_batch_decode_of_mixed_methods(tiny, quick_cfg):
    one = encode_texts(tiny, TEXTS[:2], quick_cfg)
    ar = encode_texts(tiny, TEXTS[2:], quick_cfg.with_(method=Method.AUTOREGRESSIVE))
    assert [d.text for d in decode(tiny, one + ar)] == TEXTS


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
