import json

import pytest
import torch

from prototok import Encoding, decode, encode_texts
from prototok.errors import BadVectors, CorruptEncoding, ModelMismatch, TooManyTokens


@pytest.fixture
def enc(tiny, quick_cfg):
    return encode_texts(tiny, ["file format"], quick_cfg)[0]


def test_bytes_round_trip_keeps_vectors_and_metadata(enc, tmp_path):
    path = tmp_path / "x.safetensors"
    enc.save(path)
    back = Encoding.load(path)
    assert back.metadata() == enc.metadata()
    assert all(torch.equal(back.vectors[k], enc.vectors[k]) for k in enc.vectors)


def test_metadata_has_what_the_issue_lists(enc):
    meta = enc.metadata()
    for key in ("model", "tokenizer_fingerprint", "arrangement", "lengths", "dtype", "corrections", "accuracy",
                "c_tokens", "h_lm", "steps", "seconds", "seeds", "ids_sha256"):
        assert key in meta


@pytest.mark.parametrize("blob", [b"", b"garbage!", b"\xff" * 64])
def test_garbage_is_corrupt(blob):
    with pytest.raises(CorruptEncoding):
        Encoding.from_bytes(blob)


def test_truncated_file_is_corrupt(enc):
    with pytest.raises(CorruptEncoding):
        Encoding.from_bytes(enc.to_bytes()[:-10])


def test_nan_and_wrong_shape_are_refused(enc):
    enc.vectors["e"] = torch.full_like(enc.vectors["e"], float("nan"))
    with pytest.raises(BadVectors):
        Encoding.from_bytes(enc.to_bytes())
    enc.vectors["e"] = torch.zeros(1, 7)
    with pytest.raises(BadVectors):
        Encoding.from_bytes(enc.to_bytes())


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(CorruptEncoding):
        Encoding.load(tmp_path / "absent.safetensors")


def test_other_model_is_refused(enc, tiny_neox):
    with pytest.raises(ModelMismatch):
        decode(tiny_neox, [enc])


def forged(enc: Encoding, **meta) -> bytes:
    """enc's bytes with some metadata replaced, as an attacker would upload them."""
    from safetensors.torch import save as st_save

    return st_save({k: v.contiguous() for k, v in enc.vectors.items()},
                   metadata={"prototok": json.dumps({**enc.metadata(), **meta})})


@pytest.mark.parametrize("lengths", [[10**9], [1] * 4097, [2048, 2049]])
def test_too_many_positions_are_refused_from_the_header(enc, lengths):
    """Judged from the JSON header: nothing is sized from the claimed lengths first."""
    with pytest.raises(TooManyTokens, match="PROTOTOK_MAX_DECODE_TOKENS"):
        Encoding.from_bytes(forged(enc, lengths=lengths), max_tokens=4096)


@pytest.mark.parametrize("lengths", [None, "12", [1.5], [True]])
def test_lengths_that_are_not_integers_are_corrupt(enc, lengths):
    with pytest.raises(CorruptEncoding):
        Encoding.from_bytes(forged(enc, lengths=lengths), max_tokens=4096)


def test_within_the_limit_still_decodes(tiny, enc):
    back = Encoding.from_bytes(enc.to_bytes(), max_tokens=enc.n_tokens)
    assert decode(tiny, [back])[0].text == "file format"


def test_a_chunk_longer_than_the_model_is_refused_before_decoding(tiny, enc):
    """No cap given (the CLI): a forged length is still an error, not a huge allocation."""
    back = Encoding.from_bytes(forged(enc, lengths=[10**9]))
    with pytest.raises(CorruptEncoding, match="longer than model"):
        decode(tiny, [back])
