"""prototok: compress a text into two proto-token embeddings of a frozen LLM and rebuild it
in one forward pass (Mezentsev & Oseledets 2025). This package holds the method only:
no web or queue code, so the CLI, the service and the experiments share it.

The method, bottom up (no module imports one that imports it back: tests/test_package.py):
- recipe: the knobs (Recipe, EncodeConfig, checked when built; encode_config for CLI and API)
- models: loading a frozen LM; testing: the tiny random models tests load by name
- layouts: how vectors become input rows ([e, m, ...] arrangements, [mem], the sink)
- problem: what every optimisation problem shares (init, padding, masked loss, seeds);
  one_step and mem: the paper's problem and the [mem] baseline's
- rowadam: AdamW with a step count per row; optimize: the batched loop over any problem
- decoding: the forward passes from vectors back to ids; metrics: C_tokens, H_LM, margins
- storage, size, encoding: how vectors are stored, what they weigh, the file format
- codec: texts in, encodings out, and back (checked); cli, client and experiments on top

Names are imported on first use (PEP 562), so `import prototok.client` (the thin HTTP
client) and the CLI against a server never load torch or transformers.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_WHERE = {
    "Decoded": "codec", "decode": "codec", "decode_vectors": "codec", "encode_texts": "codec",
    "decode_ids": "decoding", "generate": "decoding",
    "Encoding": "encoding",
    "PrototokError": "errors",
    "LanguageModel": "models", "load_model": "models",
    "Progress": "optimize", "Solution": "optimize", "optimize": "optimize",
    **dict.fromkeys(["PAPER", "RECIPES", "TUNED", "Arrangement", "EncodeConfig", "Init", "Method", "Recipe",
                     "Schedule", "ShareMode", "encode_config"], "recipe"),
}

__all__ = [  # the names of _WHERE; a test keeps the two equal
    "PAPER", "RECIPES", "TUNED", "Arrangement", "Decoded", "EncodeConfig", "Encoding", "Init", "LanguageModel",
    "Method", "Progress", "PrototokError", "Recipe", "Schedule", "ShareMode", "Solution", "decode", "decode_ids",
    "decode_vectors", "encode_config", "encode_texts", "generate", "load_model", "optimize",
]


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'prototok' has no attribute '{name}'")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


class _Package(ModuleType):
    """Importing the submodule `prototok.optimize` sets the package attribute `optimize` to that
    module; keep the function of that name there instead, which is what `prototok.optimize` means."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _WHERE and isinstance(value, ModuleType) and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:
    from .codec import Decoded, decode, decode_vectors, encode_texts
    from .decoding import decode_ids, generate
    from .encoding import Encoding
    from .errors import PrototokError
    from .models import LanguageModel, load_model
    from .optimize import Progress, Solution, optimize
    from .recipe import (
        PAPER,
        RECIPES,
        TUNED,
        Arrangement,
        EncodeConfig,
        Init,
        Method,
        Recipe,
        Schedule,
        ShareMode,
        encode_config,
    )
