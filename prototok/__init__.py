"""prototok: compress a text into two proto-token embeddings of a frozen LLM and rebuild it
in one forward pass (Mezentsev & Oseledets 2025). This package holds the method only:
no web or queue code, so the CLI, the service and the experiments share it."""

from .codec import Decoded, decode, decode_ids, decode_vectors, encode_texts
from .encoding import Encoding
from .errors import PrototokError
from .models import LanguageModel, load_model
from .optimize import Progress, Solution, optimize
from .recipe import PAPER, RECIPES, TUNED, Arrangement, EncodeConfig, Init, Method, Recipe, Schedule, ShareMode

__version__ = "0.1.0"

__all__ = [
    "PAPER",
    "RECIPES",
    "TUNED",
    "Arrangement",
    "Decoded",
    "EncodeConfig",
    "Encoding",
    "Init",
    "LanguageModel",
    "Method",
    "Progress",
    "PrototokError",
    "Recipe",
    "Schedule",
    "ShareMode",
    "Solution",
    "decode",
    "decode_ids",
    "decode_vectors",
    "encode_texts",
    "load_model",
    "optimize",
]
