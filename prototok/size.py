"""What an encoding weighs, beside what ordinary compressors make of the same text.

One function, `size_report`, gives the numbers every caller shows (`prototok encode --json`,
the API's embedding metadata, `bench.size`), so they cannot drift apart. The yardsticks are
gzip -9 (stdlib, mtime 0: the same bytes on every run) and zstd -19 (`zstandard`) of the
text's UTF-8 bytes, each with its own container header, as a user would store them.

`bits_per_char` and `bits_per_token` count the stored vectors (`vectors_bytes`): what the
method itself costs per character. The file adds its JSON metadata (model name, checksum,
recipe, ...), a fixed cost of about a kilobyte that `file_bytes` shows whole.
"""

from __future__ import annotations

import gzip

import torch
import zstandard

GZIP_LEVEL = 9
ZSTD_LEVEL = 19


def gzip_bytes(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))


def zstd_bytes(data: bytes) -> int:
    return len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data))


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of the tensors' data as stored (the safetensors payload, without its header)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def size_report(text: str, n_tokens: int, vectors_bytes: int, file_bytes: int) -> dict:
    """What an encoding weighs beside the text and its usual compressions: vectors_bytes, file_bytes,
    text_bytes, gzip_bytes, zstd_bytes, bits_per_char and bits_per_token."""
    raw = text.encode("utf-8")
    return {
        "vectors_bytes": int(vectors_bytes),
        "file_bytes": int(file_bytes),
        "text_bytes": len(raw),
        "gzip_bytes": gzip_bytes(raw),
        "zstd_bytes": zstd_bytes(raw),
        "bits_per_char": round(8 * vectors_bytes / max(1, len(text)), 4),
        "bits_per_token": round(8 * vectors_bytes / max(1, n_tokens), 4),
    }
