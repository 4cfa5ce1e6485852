"""An encoding and its file format: one .safetensors blob, vectors plus JSON metadata.

Tensors: `e` and `m` (K, d) for K chunks (one-step), or `mem` (K, k, d) (autoregressive). A file
made with the model's shared m (`model_m`) holds `e` alone and names its m in `m_ref`; decode
finds that m among the model's start files (codec.attach_m, starts.find_m).
Metadata key "prototok" holds everything else as JSON, so the file is self-describing
and `safetensors` tools can read it. The same bytes are what the service stores.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import storage as st
from .errors import BadVectors, CorruptEncoding, PrototokError, TooManyTokens
from .recipe import Arrangement, Method
from .size import size_report, tensor_bytes

FORMAT_VERSION = 1
META_KEY = "prototok"
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def ids_digest(ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


@dataclass
class Encoding:
    """Proto-tokens of one text (one entry per chunk) and what they achieved."""

    model: str
    tokenizer_fingerprint: str
    hidden_size: int
    method: Method
    arrangement: Arrangement
    lengths: list[int]  # tokens per chunk
    vectors: dict[str, torch.Tensor]  # e, m: (K, d) | mem: (K, k, d); float32
    corrections: list[list[tuple[int, int]]]  # per chunk: (position, token id) the vectors miss
    c_tokens: int  # positions right from the vectors alone, before corrections
    h_lm: float  # nats, teacher-forced under the same model
    steps: int
    seconds: float
    seeds: list[int]  # the restart that won, per chunk
    ids_sha256: str
    share: str = "none"
    sink: bool = False  # a frozen BOS embedding stands before [e, m, ...] (decode must add it too)
    recipe: dict = field(default_factory=dict)
    # The model's dtype when the encoding was made (None: a file from before it was recorded).
    # Decoding uses it by default: another dtype perturbs logits and may flip low-margin tokens.
    compute_dtype: str | None = None
    min_margin: float | None = None  # smallest lead (nats) of a right token in the reference decode
    format_version: int = FORMAT_VERSION
    # How the file holds e and m (prototok/storage.py): precision, and rank coefficients in the basis
    # drawn from basis_seed (rank 0: full vectors). Files from before these were recorded are float32, rank 0.
    storage: str = "float32"
    rank: int = 0
    basis_seed: int = 0
    # What it weighs (prototok/size.py); None for files from before it was recorded.
    size: dict | None = None
    # The tensors as the file holds them (int8 + scales, coefficients, ...); None: `vectors` in float32.
    # `vectors` is always what they unpack to, i.e. what decode sees.
    stored: dict[str, torch.Tensor] | None = None
    # model_m: the shared m this encoding was made with, {"sha256": digest of its float32 bytes, "start":
    # file name}; the file holds e only, and `vectors` has m once it is attached (codec.attach_m). None: m stored.
    m_ref: dict | None = None

    @property
    def n_tokens(self) -> int:
        return sum(self.lengths)

    @property
    def accuracy(self) -> float:
        return self.c_tokens / self.n_tokens

    @property
    def n_corrections(self) -> int:
        return sum(len(c) for c in self.corrections)

    def metadata(self) -> dict:
        """Everything but the tensors, JSON-ready."""
        meta = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in ("vectors", "stored")}
        meta["corrections"] = [[list(pt) for pt in c] for c in self.corrections]
        meta["method"], meta["arrangement"] = self.method.value, self.arrangement.value
        meta["dtype"] = self.storage  # how the file stores the vectors
        meta.update(n_tokens=self.n_tokens, accuracy=self.accuracy, n_corrections=self.n_corrections)
        if self.m_ref is None:  # files that store m stay as they were
            del meta["m_ref"]
        return meta

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the file holds: the stored tensors, or the vectors in float32."""
        if self.stored is not None:
            return self.stored
        if not st.is_plain(self.storage, self.rank) or self.m_ref is not None:
            raise ValueError("an encoding with storage options needs its stored tensors (codec.store_vectors)")
        return {k: v.detach().float().contiguous().cpu() for k, v in self.vectors.items()}

    def to_bytes(self) -> bytes:
        return st_save(self.tensors(), metadata={META_KEY: json.dumps(self.metadata())})

    def weigh(self, text: str) -> None:
        """Record `size` for this text; file_bytes is the file's own length, size included
        (the length is monotone in its own digits, so iterating from 0 reaches the fixed point)."""
        file_bytes = 0
        for _ in range(16):
            self.size = size_report(text, self.n_tokens, tensor_bytes(self.tensors()), file_bytes)
            n = len(self.to_bytes())
            if n == file_bytes:
                return
            file_bytes = n
        raise RuntimeError("file size did not settle")  # unreachable: see the docstring

    @classmethod
    def from_bytes(cls, blob: bytes, max_tokens: int | None = None) -> Encoding:
        """Parse a blob; with `max_tokens`, refuse one whose chunk lengths add up to more,
        judged from the JSON header before any tensor or list is built from it."""
        meta, tensors = _parse(blob, max_tokens)
        try:
            storage, rank = str(meta.get("storage", "float32")), int(meta.get("rank", 0))
            st.check_storage(storage, rank, int(meta["hidden_size"]))
            if not 0 <= int(meta.get("basis_seed", 0)) < 2**63:
                raise ValueError("basis_seed must be in [0, 2**63)")
            size = meta.get("size")
            if size is not None and not (isinstance(size, dict) and all(isinstance(v, (int, float))
                                                                         for v in size.values())):
                raise ValueError("size must be an object of numbers")
            enc = cls(
                model=meta["model"], tokenizer_fingerprint=meta["tokenizer_fingerprint"],
                hidden_size=int(meta["hidden_size"]), method=Method(meta["method"]),
                arrangement=Arrangement(meta["arrangement"]), lengths=[int(n) for n in meta["lengths"]],
                vectors=tensors, corrections=[[(int(p), int(t)) for p, t in c] for c in meta["corrections"]],
                c_tokens=int(meta["c_tokens"]), h_lm=float(meta["h_lm"]), steps=int(meta["steps"]),
                seconds=float(meta["seconds"]), seeds=[int(s) for s in meta["seeds"]],
                ids_sha256=str(meta["ids_sha256"]), share=meta.get("share", "none"),
                sink=bool(meta.get("sink", False)),
                recipe=meta.get("recipe", {}), format_version=int(meta.get("format_version", 1)),
                compute_dtype=_optional(meta.get("compute_dtype"), str),
                min_margin=_optional(meta.get("min_margin"), float),
                storage=storage, rank=rank, basis_seed=int(meta.get("basis_seed", 0)), size=size,
                m_ref=_m_ref(meta.get("m_ref")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptEncoding(f"encoding metadata is incomplete or malformed: {exc}") from exc
        if not st.is_plain(storage, rank) or enc.m_ref is not None:
            _unpack_into(enc, tensors)
        validate_vectors(enc)
        return enc

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> Encoding:
        p = Path(path)
        if not p.is_file():
            raise CorruptEncoding(f"no such file: {p}")
        return cls.from_bytes(p.read_bytes())


def _unpack_into(enc: Encoding, tensors: dict[str, torch.Tensor]) -> None:
    """A file with storage options: check its tensors, keep them, and rebuild e and m from them."""
    if enc.method is not Method.ONE_STEP:
        raise CorruptEncoding("storage options and model_m are for one-step encodings only")
    if enc.m_ref is not None and enc.rank:
        raise CorruptEncoding("model_m files store full-rank e")
    names = ("e",) if enc.m_ref is not None else ("e", "m")
    st.check_stored(tensors, names, enc.storage, enc.rank, len(enc.lengths), enc.hidden_size)
    enc.stored = tensors
    enc.vectors = st.unpack(tensors, names, enc.storage, enc.rank, enc.basis_seed, enc.hidden_size)


def _m_ref(value: object) -> dict | None:
    """A file's m_ref as written by codec.package: a 64-hex sha256 and the start's file name."""
    if value is None:
        return None
    digest = value.get("sha256") if isinstance(value, dict) else None
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise ValueError("m_ref must be an object with a 64-hex-digit sha256")
    return {"sha256": digest, "start": str(value.get("start"))}


def _optional(value: object, kind: type) -> object:
    return None if value is None else kind(value)


def check_positions(lengths: object, max_tokens: int, what: str = "this decode") -> None:
    """Refuse a decode of more than `max_tokens` positions, given its chunk lengths as sent.

    Runs on untrusted input before anything is sized from it, so it accepts any JSON value."""
    if not isinstance(lengths, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in lengths):
        raise CorruptEncoding("chunk lengths must be a list of integers")
    total = sum(lengths)
    if len(lengths) > max_tokens or total > max_tokens:
        raise TooManyTokens(f"{what} asks for {total} positions in {len(lengths)} chunk(s); the limit is "
                            f"{max_tokens} (PROTOTOK_MAX_DECODE_TOKENS)")


def _parse(blob: bytes, max_tokens: int | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    if len(blob) < 8:
        raise CorruptEncoding("not a safetensors file (too short)")
    n = int.from_bytes(blob[:8], "little")
    if n <= 0 or 8 + n > len(blob):
        raise CorruptEncoding("not a safetensors file (bad header length)")
    try:
        header = json.loads(blob[8 : 8 + n])
        meta = json.loads(header["__metadata__"][META_KEY])
        if max_tokens is not None:
            check_positions(meta.get("lengths") if isinstance(meta, dict) else None, max_tokens, "the encoding")
        tensors = st_load(blob)
    except PrototokError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CorruptEncoding(f"not a prototok encoding: {exc}") from exc
    except Exception as exc:  # safetensors raises its own SafetensorError on damaged data
        raise CorruptEncoding(f"damaged safetensors data: {exc}") from exc
    return meta, tensors


def validate_vectors(enc: Encoding) -> None:
    """Shapes agree with the metadata, values are finite: refuse anything else up front."""
    k, d = len(enc.lengths), enc.hidden_size
    if enc.method is Method.ONE_STEP:
        # A model_m file's m is the model's, attached at decode (codec.attach_m); until then e stands alone.
        expected = {"e": (k, d)} if enc.m_ref is not None and "m" not in enc.vectors else {"e": (k, d), "m": (k, d)}
    else:
        mem = enc.vectors.get("mem")
        expected = {"mem": (k, mem.shape[1] if mem is not None and mem.dim() == 3 else -1, d)}
    if set(enc.vectors) != set(expected):
        raise BadVectors(f"expected tensors {sorted(expected)}, got {sorted(enc.vectors)}")
    for name, shape in expected.items():
        got = tuple(enc.vectors[name].shape)
        if got != shape:
            raise BadVectors(f"tensor '{name}' has shape {list(got)}, expected {list(shape)}")
        if not torch.isfinite(enc.vectors[name]).all():
            raise BadVectors(f"tensor '{name}' contains NaN or inf")
    if len(enc.corrections) != k or any(not 0 <= p < n for c, n in zip(enc.corrections, enc.lengths) for p, _ in c):
        raise CorruptEncoding("corrections do not match the chunk lengths")
    if enc.compute_dtype is not None and enc.compute_dtype not in COMPUTE_DTYPES:
        raise CorruptEncoding(f"unknown compute_dtype '{enc.compute_dtype}' ({', '.join(COMPUTE_DTYPES)})")
    if any(n < 1 for n in enc.lengths) or not math.isfinite(enc.h_lm):
        raise CorruptEncoding("chunk lengths must be positive and h_lm finite")
