"""How the proto-token vectors are stored: precision (float32, float16, bfloat16, int8 with a
per-vector absmax scale) and, optionally, as `rank` coefficients in a fixed basis.

The basis is a matrix of signs (+1/-1) drawn from a recorded integer seed by torch's CPU
generator, divided by sqrt(rank): the same numbers on every machine, with no floating-point
factorisation (a QR or SVD may differ by an ulp between BLAS builds). Its rows are nearly
orthogonal for rank << hidden size, and a coefficient of the embedding's scale gives a vector
of the embedding's scale, so the recipe's init and learning rate carry over unchanged.

`unpack` is the one way stored tensors become the (K, d) float32 vectors that are decoded:
encode runs it on what it is about to store and decodes that (corrections and checksum come
from it), and decode runs it on what the file holds, so both see identical vectors. The
basis product is taken in float64, where sums of float32 (or int8 x scale) values times
signs are exact for any realistic range, so the order of the additions does not matter.
"""

from __future__ import annotations

import math

import torch

from .errors import BadVectors, CorruptEncoding

STORAGES = ("float32", "float16", "bfloat16", "int8")
FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BASIS_SEED = 20251125  # recorded in every low-rank file; a file's own seed is what decodes it
MAX_HIDDEN = 16_384  # hidden sizes a file may claim (judged before a basis is built from it)
MAX_BASIS = 2**23  # rank x hidden entries a file may ask to build
INT8_MAX = 127


def check_storage(storage: str, rank: int, hidden_size: int | None = None) -> None:
    """ValueError for an option that does not fit (the callers turn it into InvalidInput)."""
    if storage not in STORAGES:
        raise ValueError(f"unknown storage '{storage}' (choose from {', '.join(STORAGES)})")
    if not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank must be an integer >= 0 (0 = full vectors), got {rank!r}")
    if hidden_size is not None and rank > hidden_size:
        raise ValueError(f"rank {rank} is larger than the model's hidden size {hidden_size}")


def is_plain(storage: str, rank: int) -> bool:
    """float32 full vectors: the format of every file before storage options existed."""
    return storage == "float32" and rank == 0


def signs(seed: int, rank: int, hidden_size: int) -> torch.Tensor:
    """(rank, d) int8 +1/-1, from the seed alone (CPU generator)."""
    gen = torch.Generator().manual_seed(int(seed))
    return (torch.randint(0, 2, (rank, hidden_size), generator=gen, dtype=torch.int64) * 2 - 1).to(torch.int8)


def basis(seed: int, rank: int, hidden_size: int) -> torch.Tensor:
    """(rank, d) float32 signs / sqrt(rank): the optimiser's basis (e = coefficients @ basis)."""
    return signs(seed, rank, hidden_size).to(torch.float32) / math.sqrt(rank)


def _int8_scale(x: torch.Tensor) -> torch.Tensor:
    """(n,) absmax / 127 per row, 1 for an all-zero row (nothing to scale)."""
    absmax = x.detach().abs().amax(-1)
    return torch.where(absmax > 0, absmax / INT8_MAX, torch.ones_like(absmax))


def quantize(x: torch.Tensor, storage: str) -> torch.Tensor:
    """x (n, w) float32 -> the float32 values `storage` keeps of it (no gradient)."""
    if storage == "int8":
        scale = _int8_scale(x)[..., None]
        return torch.round(x / scale).clamp(-INT8_MAX, INT8_MAX) * scale
    return x.to(FLOAT_DTYPES[storage]).to(torch.float32)


def straight_through(x: torch.Tensor, storage: str) -> torch.Tensor:
    """The stored value in the forward pass, the gradient to the float master (STE)."""
    if storage == "float32":
        return x
    return x + (quantize(x, storage) - x).detach()


def pack(rows: dict[str, torch.Tensor], storage: str) -> dict[str, torch.Tensor]:
    """Float32 rows per name, (K, w) -> the tensors the file holds."""
    out = {}
    for name, x in rows.items():
        x = x.detach().float().cpu().contiguous()
        if storage == "int8":
            scale = _int8_scale(x)
            out[name] = torch.round(x / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8).contiguous()
            out[f"{name}_scale"] = scale.contiguous()
        else:
            out[name] = x.to(FLOAT_DTYPES[storage]).contiguous()
    return out


def check_stored(stored: dict[str, torch.Tensor], names: tuple[str, ...], storage: str, rank: int,
                 k: int, hidden_size: int) -> None:
    """Names, dtypes and shapes of a file's tensors agree with its storage: refuse anything else."""
    if hidden_size > MAX_HIDDEN or rank * hidden_size > MAX_BASIS:
        raise CorruptEncoding(f"hidden size {hidden_size} at rank {rank} is beyond what a file may ask to build")
    width = rank or hidden_size
    expected = {n: ((k, width), FLOAT_DTYPES.get(storage, torch.int8)) for n in names}
    if storage == "int8":
        expected |= {f"{n}_scale": ((k,), torch.float32) for n in names}
    if set(stored) != set(expected):
        raise BadVectors(f"expected tensors {sorted(expected)}, got {sorted(stored)}")
    for name, (shape, dtype) in expected.items():
        t = stored[name]
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise BadVectors(f"tensor '{name}' is {str(t.dtype).removeprefix('torch.')} {list(t.shape)}, "
                             f"expected {str(dtype).removeprefix('torch.')} {list(shape)}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise BadVectors(f"tensor '{name}' contains NaN or inf")


def unpack(stored: dict[str, torch.Tensor], names: tuple[str, ...], storage: str, rank: int, seed: int,
           hidden_size: int) -> dict[str, torch.Tensor]:
    """The file's tensors -> (K, d) float32 vectors per name, exactly as encode decoded them."""
    b = signs(seed, rank, hidden_size).double() if rank else None
    out = {}
    for name in names:
        x = stored[name]
        x = x.float() * stored[f"{name}_scale"][:, None] if storage == "int8" else x.float()
        out[name] = ((x.double() @ b) / math.sqrt(rank)).float() if b is not None else x
    return out
