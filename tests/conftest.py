"""Shared fixtures. Unit tests run on tiny random models built in-process (milliseconds);
tests marked `integration` use the embedded SmolLM2, Redis and real processes."""

from __future__ import annotations

import pytest
import torch

from prototok import EncodeConfig, load_model
from prototok.recipe import TUNED


@pytest.fixture(scope="session")
def tiny():
    torch.set_num_threads(1)
    return load_model("tiny-llama")


@pytest.fixture(scope="session")
def tiny_neox():
    return load_model("tiny-gpt-neox")


@pytest.fixture
def quick_cfg() -> EncodeConfig:
    """A few steps: enough to exercise every code path, not to converge."""
    return EncodeConfig(recipe=TUNED.with_(max_steps=8, seeds=2))
