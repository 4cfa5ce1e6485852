"""Warm starts: the e and m an encode begins from, one pair per model.

A fresh encode draws e and m at random and spends most of its steps finding the region where
the model reads them as "a text follows". That region is much the same for every text, so a
start learnt once per model (m shared over many texts, e their mean) saves those steps on every
later text (bench/results/speed.md). The start only changes where the optimisation begins:
the encoding still stores its own e and m, and decodes without the start.

A start is a small .safetensors file (e, m and JSON metadata naming the model). The embedded
model's ships with the package (`prototok/data/`); `prototok start train` makes one for any
other model into the cache dir, where it is found before the shipped one. A file is used only
for the model whose embedding matrix it was made with (`LanguageModel.weights_fingerprint`), so a start never
silently goes to another model of the same name.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import CorruptEncoding
from .models import LanguageModel
from .settings import get_settings

SHIPPED = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Start:
    e: torch.Tensor  # (d,) float32
    m: torch.Tensor  # (d,) float32
    meta: dict
    path: Path | None = None


def file_name(lm: LanguageModel) -> str:
    return "start-" + re.sub(r"[^A-Za-z0-9._-]+", "_", lm.name).strip("_") + ".safetensors"


def candidates(lm: LanguageModel) -> list[Path]:
    """Where a start for this model may be: the cache dir (made here), then the package."""
    return [get_settings().cache_dir / "starts" / file_name(lm), SHIPPED / file_name(lm)]


def find_start(lm: LanguageModel) -> Start | None:
    """The first start made for exactly this model's weights, or None (then encodes start at random)."""
    return _find(lm.name, lm.weights_fingerprint, lm.hidden_size, tuple(candidates(lm)))


@lru_cache(maxsize=16)
def _find(name: str, fingerprint: str, d: int, paths: tuple[Path, ...]) -> Start | None:
    for path in paths:
        if path.is_file():
            start = read_start(path)
            if start.meta.get("weights_fingerprint") == fingerprint and start.e.shape == (d,):
                return start
    return None


def read_start(path: Path) -> Start:
    try:
        with safe_open(str(path), "pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            e, m = f.get_tensor("e").float(), f.get_tensor("m").float()
    except Exception as exc:
        raise CorruptEncoding(f"{path} is not a readable start file: {exc}") from exc
    if e.ndim != 1 or e.shape != m.shape or not (torch.isfinite(e).all() and torch.isfinite(m).all()):
        raise CorruptEncoding(f"{path}: e and m must be two finite vectors of one size")
    return Start(e, m, meta, path)


def write_start(path: Path, lm: LanguageModel, e: torch.Tensor, m: torch.Tensor, **meta: object) -> Path:
    """Save a start for `lm`; the metadata says how it was made (texts, steps, seconds, recipe)."""
    meta = {"model": lm.name, "weights_fingerprint": lm.weights_fingerprint, "hidden_size": lm.hidden_size,
            "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"e": e.detach().float().cpu().contiguous(), "m": m.detach().float().cpu().contiguous()}
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in meta.items()})
    _find.cache_clear()
    return path
