import pytest
import torch

from prototok import Encoding, decode, encode_texts
from prototok.errors import BadVectors, CorruptEncoding, ModelMismatch


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
