"""Warm starts: the e and m an encode begins from, one pair per model.

A fresh encode draws e and m at random and spends most of its steps finding the region where
the model reads them as "a text follows". That region is much the same for every text, so a
start learnt once per model (m shared over many texts, e their mean) saves those steps on every
later text (bench/results/speed.md). The start only changes where the optimisation begins:
the encoding still stores its own e and m, and decodes without the start.

A start's m is also the model's *shared m* (`EncodeConfig.model_m`): frozen, every text trains
only its own e, and the file stores e plus `m_ref` (the sha256 of m's float32 bytes and the start's
file name). Decoding finds m again among the model's start files by that digest (`find_m`), so an
encoding made with one start never decodes with another. Retraining must not orphan those files,
so `write_start` never drops an m: the file it replaces is first kept beside it, under a name
that carries its m's digest (`start-M.<sha256[:16]>.safetensors`, see `kept_paths`). Encodes
only ever begin from the current start; decodes also look in the kept ones. A start whose m no
file holds any more (removed by hand) is a clear `ModelMMissing`, not a wrong text.

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

Kept files can pile up (one per retrain), so a digest lookup stays cheap with many of them: it
tries the current files, then the kept names the digest itself gives (a stat each), and lists
the directory only when none of those holds the m. A name is only a hint: a file counts when its
m's sha256 is the one asked for and it was made for these weights; one that does not load is
skipped. What a file holds is computed once per version of it, so a repeated miss only stats.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    e: torch.Tensor  # (d,) float32; (S, d), one per sequence, when an encoder predicted it
    m: torch.Tensor  # (d,) float32; likewise
    meta: dict
    path: Path | None = None


def file_name(lm: LanguageModel, kind: str = "start") -> str:
    """`<kind>-<the model's name made file-safe>.safetensors`: a start's, or (kind="encoder") a head's."""
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9._-]+", "_", lm.name).strip("_") + ".safetensors"


def candidates(lm: LanguageModel) -> list[Path]:
    """Where a start for this model may be: the cache dir (made here), then the package."""
    return [get_settings().cache_dir / "starts" / file_name(lm), SHIPPED / file_name(lm)]


def find_start(lm: LanguageModel) -> Start | None:
    """The first start made for exactly this model's weights, or None (then encodes start at random).
    Looks at the files on every call (a stat each), so a start written since, by any process, counts."""
    for path in candidates(lm):
        version = file_version(path)
        if version is not None:
            start = _read(str(path), *version)
            if start.meta.get("weights_fingerprint") == lm.weights_fingerprint and start.e.shape == (lm.hidden_size,):
                return start
    return None


def file_version(path: Path) -> tuple[int, int, int] | None:
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
    """The (d,) m whose digest a model_m file records, from this model's start files (current or
    kept); else ModelMMissing naming the m and how to get it. Digest only: the m is the same m
    whichever file (cache dir or package, current or kept) holds it, and in whatever dtype the
    model is loaded."""
    found = locate_m(lm, ref)
    if found is None:
        raise ModelMMissing(
            f"this encoding was made with model '{lm.name}''s shared m (model_m: m sha256 {ref.get('sha256')}, start "
            f"file '{ref.get('start')}'), and no start here holds that m (looked in {_where(lm)}, and the older starts "
            f"kept beside them); put that start file at {candidates(lm)[0]} or beside it as "
            f"{candidates(lm)[0].stem}.<anything>.safetensors (the one `prototok start train` made where it was "
            "encoded, or the one shipped with the prototok that encoded it), or decode where it is")
    return found[1]


def locate_m(lm: LanguageModel, ref: dict) -> tuple[Path, torch.Tensor] | None:
    """(file, m) of the first start file of this model's weights whose m has the digest `ref`
    records, or None. Files are tried cheapest first (`_m_files`); each is read at most once per
    version to learn its digest, and the m handed out is checked against the digest again."""
    digest = ref.get("sha256")
    for path in _m_files(lm, str(digest)):
        version = file_version(path)
        if version is None or _held(str(path), *version) != (digest, lm.weights_fingerprint):
            continue
        try:
            m = _read(str(path), *version).m
        except CorruptEncoding:  # replaced by an unreadable file since it was hashed
            continue
        if m_digest(m) == digest:  # the very bytes handed out, not what a file held before
            return path, m
    return None


def _m_files(lm: LanguageModel, digest: str) -> Iterator[Path]:
    """The files that may hold the m of `digest`, cheapest first: the current starts, the kept
    names the digest gives (no listing), then every other kept file (a listing per directory,
    only when those missed: a kept file renamed by hand still counts)."""
    current = candidates(lm)
    yield from current
    for path in current:
        yield from kept_paths(path, digest)
    hinted = {k for path in current for k in kept_paths(path, digest)}
    for path in current:
        yield from (k for k in kept_files(path) if k not in hinted)


def kept_paths(path: Path, digest: str) -> list[Path]:
    """Where the start at `path` is kept once replaced, if its m has `digest`: the short name, and
    the full digest for the (unlikely) case that the short one holds another m."""
    return [path.with_name(f"{path.stem}.{digest[:16]}.safetensors"),
            path.with_name(f"{path.stem}.{digest}.safetensors")]


def kept_files(path: Path) -> list[Path]:
    """Every file beside `path` named `<its stem>.<anything>.safetensors`, sorted by name."""
    prefix = path.stem + "."
    try:
        names = [entry.name for entry in os.scandir(path.parent)]
    except OSError:
        return []
    return [path.with_name(n) for n in sorted(names)
            if n.startswith(prefix) and n.endswith(".safetensors") and n != path.name]


def kept_starts(lm: LanguageModel) -> list[Start]:
    """The kept (replaced) starts of this model's weights, newest first: what `prototok start
    show` lists. Reads every kept file; unreadable ones are left out."""
    kept = []
    for path in (k for current in candidates(lm) for k in kept_files(current)):
        try:
            start = read_start(path)
        except CorruptEncoding:
            continue
        if start.meta.get("weights_fingerprint") == lm.weights_fingerprint:
            kept.append(start)
    return sorted(kept, key=lambda s: str(s.meta.get("made", "")), reverse=True)


@lru_cache(maxsize=4096)
def _held(path: str, inode: int, mtime_ns: int, size: int) -> tuple[str, str | None] | None:
    """(m digest, weights fingerprint) of a start file, computed once per version of it; None if
    unreadable. Two short strings an entry, so a directory of many kept files is hashed once."""
    try:
        start = read_start(Path(path))  # not _read: scanning many files would evict the current starts
    except CorruptEncoding:
        return None
    return m_digest(start.m), start.meta.get("weights_fingerprint")


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
    Written beside `path` and renamed over it, so a process looking meanwhile sees the old or the new
    file. A start already at `path` is kept first (`keep_replaced`): model_m files name its m."""
    meta = {"model": lm.name, "weights_fingerprint": lm.weights_fingerprint, "hidden_size": lm.hidden_size,
            "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"e": e.detach().float().cpu().contiguous(), "m": m.detach().float().cpu().contiguous()}
    with _locked(path.parent):  # two trainers at once: each keeps what the other wrote
        keep_replaced(path, m_digest(tensors["m"]))
        header = {k: json.dumps(v) for k, v in meta.items()}
        write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    _read.cache_clear()  # in this process, seen even if a coarse clock gave the new file an old version's stamp
    _held.cache_clear()
    return path


def keep_replaced(path: Path, new_digest: str) -> Path | None:
    """Copy the start at `path` to its kept name before a start with m `new_digest` replaces it, so
    the model_m files made with it still decode; the kept path, or None when nothing needs keeping
    (no file, an unreadable one that no encode could have used, or the same m again)."""
    digest = _digest_or_none(path) if file_version(path) else None
    if digest is None or digest == new_digest:
        return None
    names = kept_paths(path, digest)
    for kept in names:
        if file_version(kept) is None:
            return write_atomically(kept, lambda tmp: shutil.copyfile(path, tmp))
        if _digest_or_none(kept) == digest:
            return kept  # an identical m is kept already
    return write_atomically(names[-1], lambda tmp: shutil.copyfile(path, tmp))  # both names hold another m


def _digest_or_none(path: Path) -> str | None:
    try:
        return m_digest(read_start(path).m)
    except CorruptEncoding:
        return None


def write_atomically(path: Path, write: Callable[[str], object]) -> Path:
    """`write` a temporary file beside `path`, then rename it over `path` (one step for readers)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(str(partial))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive flock on the starts directory, between processes writing starts in it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
