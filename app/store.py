"""Stored encodings: one Redis hash per encoding, never expiring, checksummed.

Key `prototok:emb:{id}` (id: uuid4 hex) holds
    blob     the `.safetensors` bytes of `Encoding.to_bytes()` (vectors + JSON metadata)
    sha256   hex digest of blob, written in the same command, checked on every read
    created  unix time; model, job_id: for listing and audit
No TTL is ever set: an encoding lives until DELETE, independent of RQ's result TTL, and
Redis persistence (append-only in docker-compose) carries it across restarts. The API and
the workers both use this class; nothing else touches these keys.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline

from prototok.encoding import Encoding

from .errors import ChecksumMismatch, EmbeddingNotFound

KEY_PREFIX = "prototok:emb:"
_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class StoredEncoding:
    id: str
    blob: bytes
    sha256: str
    created: float
    job_id: str

    def encoding(self, max_tokens: int | None = None) -> Encoding:
        return Encoding.from_bytes(self.blob, max_tokens)


class EncodingStore:
    def __init__(self, conn: Redis):
        self.conn = conn

    @staticmethod
    def key(emb_id: str) -> str:
        return KEY_PREFIX + emb_id

    def put(self, enc: Encoding, job_id: str = "", emb_id: str | None = None, pipe: Pipeline | None = None) -> str:
        """Store one encoding; `emb_id` and `pipe` let a worker write many, atomically, under ids it chose."""
        blob = enc.to_bytes()
        emb_id = emb_id or uuid.uuid4().hex
        (pipe if pipe is not None else self.conn).hset(self.key(emb_id), mapping={
            "blob": blob, "sha256": hashlib.sha256(blob).hexdigest(), "created": time.time(),
            "model": enc.model, "job_id": job_id,
        })
        return emb_id

    def get(self, emb_id: str) -> StoredEncoding:
        """The stored bytes, verified against their checksum."""
        raw = self.conn.hgetall(self.key(emb_id)) if _ID.match(emb_id) else {}
        if not raw or b"blob" not in raw:
            raise EmbeddingNotFound(f"no embedding with id '{emb_id}'")
        blob, digest = raw[b"blob"], raw.get(b"sha256", b"").decode()
        if hashlib.sha256(blob).hexdigest() != digest:
            raise ChecksumMismatch(f"stored embedding '{emb_id}' fails its sha256 check (damaged in storage); "
                                   "it will not be decoded")
        return StoredEncoding(emb_id, blob, digest, float(raw.get(b"created", 0)), raw.get(b"job_id", b"").decode())

    def delete(self, emb_id: str) -> None:
        if not _ID.match(emb_id) or not self.conn.delete(self.key(emb_id)):
            raise EmbeddingNotFound(f"no embedding with id '{emb_id}'")
