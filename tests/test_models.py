import os

import pytest
import torch

from prototok import load_model
from prototok.errors import InvalidInput, UnknownModel
from prototok.testing import byte_tokenizer


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
    assert load_model("tiny-llama").dtype == torch.float32  # the tests pin PROTOTOK_DTYPE=float32
    with pytest.raises(InvalidInput, match="unknown dtype"):  # exit 2 on the CLI, a 4xx in the API
        load_model("tiny-llama", dtype="int3")


def test_auto_dtype_follows_the_hardware():
    from prototok.models import cpu_bf16_flags, resolve_dtype

    native = bool(cpu_bf16_flags())
    assert resolve_dtype(torch.device("cpu"), "auto") == (torch.bfloat16 if native else torch.float32)
    assert resolve_dtype(torch.device("cuda"), "auto") == torch.bfloat16


def test_threads_setting_is_applied_once(monkeypatch):
    from prototok.models import configure_threads

    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_threads(0) >= 1  # 0 = every core this process may use
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to tell the counts apart")
def test_load_model_keeps_a_callers_own_thread_count_and_otherwise_takes_every_core():
    """A benchmark that pins one thread must get one thread: two such processes side by side with
    every core each ran about 20x slower per step (bench/results/threads.md) (OpenMP barriers waiting for a descheduled sibling)."""
    import subprocess
    import sys

    code = ("import torch; from prototok import load_model; {set} load_model('tiny-llama'); "
            "print(torch.get_num_threads())")
    env = {**os.environ, "PROTOTOK_THREADS": "0"}
    env.pop("OMP_NUM_THREADS", None)
    counts = [int(subprocess.run([sys.executable, "-c", code.format(set=s)], env=env, capture_output=True, text=True,
                                 check=True).stdout) for s in ("torch.set_num_threads(1);", "")]
    assert counts == [1, len(os.sched_getaffinity(0))]


def test_test_models_load_by_name_but_are_not_offered():
    """known_models() is what a service offers; the tiny random models load by name for tests only."""
    from prototok.models import DEFAULT_MODEL, is_builtin, known_models

    assert known_models() == [DEFAULT_MODEL]
    assert is_builtin("tiny-llama") and is_builtin("smollm2") and not is_builtin("some-org/model")
    assert load_model("tiny-gpt-neox").name == "tiny-gpt-neox"


def test_the_api_decodes_only_with_the_models_its_settings_name():
    """PROTOTOK_MODEL and PROTOTOK_API_DECODE_MODELS (aliases canonical); not a built-in model
    nor one a worker serves (the API reads no Redis for it: tests/test_service_access.py)."""
    from app import decoding
    from service.settings import ServiceSettings

    real = ServiceSettings(model="smollm2-135m-instruct")
    with pytest.raises(UnknownModel):
        decoding.allowed_model("tiny-llama", real)
    assert decoding.allowed_model("smollm2", real) == "smollm2-135m-instruct"
    assert decoding.allowed_model(None, real) == "smollm2-135m-instruct"
    tiny = ServiceSettings(model="tiny-llama")
    assert decoding.allowed_model("tiny-llama", tiny) == "tiny-llama"
    with pytest.raises(UnknownModel, match="this service decodes with: tiny-llama$"):
        decoding.allowed_model("smollm2-135m-instruct", tiny)
    assert decoding.allowed_model("tiny-gpt-neox", real.model_copy(update={"api_decode_models": ["tiny-gpt-neox"]})
                                  ) == "tiny-gpt-neox"
    assert decoding.allowed_models(tiny.model_copy(update={"api_decode_models": ["default"]})) == {
        "tiny-llama", "smollm2-135m-instruct"}


def test_a_bad_device_is_invalid_input():
    from prototok.models import resolve_device

    with pytest.raises(InvalidInput, match="device"):
        resolve_device("bogus")
