import pytest
import torch

from prototok import load_model
from prototok.errors import InvalidInput, UnknownModel
from prototok.models import byte_tokenizer


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt-neox"])
def test_tiny_models_are_frozen_and_cached(name):
    lm = load_model(name)
    assert lm is load_model(name)
    assert not lm.model.training
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert lm.hidden_size == 32 and lm.embedding_std > 0


def test_byte_tokenizer_round_trips_anything():
    tok = byte_tokenizer()
    for text in ["plain", "  spaces  ", "ünïcödé ✓ 漢字", "\n\ttabs"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids, clean_up_tokenization_spaces=False) == text


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(UnknownModel):
        load_model(str(tmp_path / "no-such-model"))
    with pytest.raises(UnknownModel):
        load_model(str(tmp_path / "missing.gguf"))


def test_dtype_is_a_setting():
    lm = load_model("tiny-llama", dtype="bfloat16")
    assert lm.dtype == torch.bfloat16 and lm is not load_model("tiny-llama")  # cached per dtype
    assert load_model("tiny-llama").dtype == torch.float32  # auto on cpu
    with pytest.raises(InvalidInput, match="unknown dtype"):  # exit 2 on the CLI, a 4xx in the API
        load_model("tiny-llama", dtype="int3")
