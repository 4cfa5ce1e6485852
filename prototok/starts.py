"""Warm starts: the e and m an encode begins from, one pair per model.

A fresh encode draws e and m at random and spends most of its steps finding the region where
the model reads them as "a text follows". That region is much the same for every text, so a
start learnt once per model (m shared over many texts, e their mean) saves those steps on every
later text (bench/results/speed.md). The start only changes where the optimisation begins:
the encoding still stores its own e and m, and decodes without the start.

A start's m is also the model's *shared m* (`EncodeConfig.model_m`): frozen, every text trains
only its own e, and the file stores e plus `m_ref` (the sha256 of m's float32 bytes and the start's
file name). Decoding finds m again among the model's start files by that digest (`find_m`), so an
encoding made with one start never decodes with another: a start that was retrained or removed
is a clear `ModelMMissing`, not a wrong text.

A start is a small .safetensors file (e, m and JSON metadata naming the model). The embedded
model's ships with the package (`prototok/data/`); `prototok start train` makes one for any
other model into the cache dir, where it is found before the shipped one. A file is used only
for the model whose embedding matrix it was made with (`LanguageModel.weights_fingerprint`), so a start never
silently goes to another model of the same name.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import CorruptEncoding, ModelMMissing
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


def m_digest(m: torch.Tensor) -> str:
    """sha256 of m's float32 little-endian bytes: the identity of a shared m, whatever file holds it."""
    data = m.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()
    return hashlib.sha256(data).hexdigest()


def m_ref(start: Start) -> dict:
    """What a model_m file records of the m it was made with (the file name is a hint for people)."""
    return {"sha256": m_digest(start.m), "start": start.path.name if start.path else None}


def shared_start(lm: LanguageModel) -> Start:
    """The start whose m a model_m encode freezes; ModelMMissing before any work when there is none."""
    start = find_start(lm)
    if start is None:
        raise ModelMMissing(f"model_m: no start (shared m) for model '{lm.name}' on this host; make one with "
                            f"`prototok start train --model {lm.name}` (looked in {_where(lm)})")
    return start


def find_m(lm: LanguageModel, ref: dict) -> torch.Tensor:
    """The (d,) m whose digest a model_m file records, from this model's start files; else
    ModelMMissing naming the m and how to get it. Digest only: the m is the same m whichever
    file (cache dir or package) holds it, and in whatever dtype the model is loaded."""
    for path in candidates(lm):
        if path.is_file():
            stat = path.stat()
            found = _digest_of(str(path), stat.st_mtime_ns, stat.st_size)
            if found is not None and found[0] == ref.get("sha256"):
                return found[1]
    raise ModelMMissing(
        f"this encoding was made with model '{lm.name}''s shared m (model_m: m sha256 {ref.get('sha256')}, start file "
        f"'{ref.get('start')}'), and no start here holds that m (looked in {_where(lm)}); put that start file at "
        f"{candidates(lm)[0]} (the one `prototok start train` made where it was encoded, or the one shipped with the "
        "prototok that encoded it), or decode where it is. A start trained since holds another m")


@lru_cache(maxsize=64)
def _digest_of(path: str, mtime_ns: int, size: int) -> tuple[str, torch.Tensor] | None:
    """(digest, m) of a start file, read once per version of the file; None if unreadable."""
    try:
        m = read_start(Path(path)).m
    except CorruptEncoding:
        return None
    return m_digest(m), m


def _where(lm: LanguageModel) -> str:
    return ", ".join(map(str, candidates(lm)))


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
