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

Lookups are cheap and current: each one stats the (two) candidate files and reads a file only
when that version of it (inode, mtime, size) was not read before. So a worker that is running
while `prototok start train` writes its model's start uses it from the next job, and says so in its
next announcement (worker/runner.py), without a restart. `write_start` replaces the file in one
rename, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
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
    """The first start made for exactly this model's weights, or None (then encodes start at random).
    Looks at the files on every call (a stat each), so a start written since, by any process, counts."""
    for path in candidates(lm):
        version = _version(path)
        if version is not None:
            start = _read(str(path), *version)
            if start.meta.get("weights_fingerprint") == lm.weights_fingerprint and start.e.shape == (lm.hidden_size,):
                return start
    return None


def _version(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime_ns, size) of a regular file, None if there is none: a new or rewritten start
    file is a new version (write_start renames a new file into place: a new inode)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None


@lru_cache(maxsize=16)
def _read(path: str, inode: int, mtime_ns: int, size: int) -> Start:
    """A start file, read once per version of it (CorruptEncoding is not cached: the next call reads again)."""
    return read_start(Path(path))


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
        version = _version(path)
        if version is not None:
            found = _digest_of(str(path), *version)
            if found is not None and found[0] == ref.get("sha256"):
                return found[1]
    raise ModelMMissing(
        f"this encoding was made with model '{lm.name}''s shared m (model_m: m sha256 {ref.get('sha256')}, start file "
        f"'{ref.get('start')}'), and no start here holds that m (looked in {_where(lm)}); put that start file at "
        f"{candidates(lm)[0]} (the one `prototok start train` made where it was encoded, or the one shipped with the "
        "prototok that encoded it), or decode where it is. A start trained since holds another m")


@lru_cache(maxsize=64)
def _digest_of(path: str, inode: int, mtime_ns: int, size: int) -> tuple[str, torch.Tensor] | None:
    """(digest, m) of a start file, computed once per version of the file; None if unreadable."""
    try:
        m = _read(path, inode, mtime_ns, size).m
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
    """Save a start for `lm`; the metadata says how it was made (texts, steps, seconds, recipe).
    Written beside `path` and renamed over it, so a process looking meanwhile sees the old or the new file."""
    meta = {"model": lm.name, "weights_fingerprint": lm.weights_fingerprint, "hidden_size": lm.hidden_size,
            "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"e": e.detach().float().cpu().contiguous(), "m": m.detach().float().cpu().contiguous()}
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(partial), metadata={k: json.dumps(v) for k, v in meta.items()})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    _read.cache_clear()  # in this process, seen even if a coarse clock gave the new file an old version's stamp
    _digest_of.cache_clear()
    return path
