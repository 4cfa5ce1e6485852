"""Stored encodings: one Redis hash per encoding, never expiring, checksummed.

Key `prototok:emb:{id}` (id: uuid4 hex) holds
    blob     the `.safetensors` bytes of `Encoding.to_bytes()` (vectors + JSON metadata)
    sha256   hex digest of blob, written in the same command, checked on every read
    created  unix time; model, job_id: for listing and audit
    owner    the name of the API key whose job made it ("" with PROTOTOK_AUTH=off); only that key
             and admin keys see it, anyone else gets the same 404 as for an id that does not exist
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
from .keys import SANDBOX, Caller

KEY_PREFIX = "prototok:emb:"
_ID = re.compile(r"^[0-9a-f]{32}$")


def valid_id(some_id: str) -> bool:
    """Ids are uuid4 hex; anything else names nothing, and is never sent to Redis or RQ."""
    return bool(_ID.fullmatch(some_id))


def not_found(emb_id: str) -> EmbeddingNotFound:
    """One answer for 'no such id' and 'not yours', so a key cannot probe for other keys' ids."""
    return EmbeddingNotFound(f"no embedding with id {emb_id[:64]!r}")


@dataclass
class StoredEncoding:
    id: str
    blob: bytes
    sha256: str
    created: float
    job_id: str
    owner: str = ""

    def encoding(self, max_tokens: int | None = None) -> Encoding:
        return Encoding.from_bytes(self.blob, max_tokens)


class EncodingStore:
    def __init__(self, conn: Redis):
        self.conn = conn

    @staticmethod
    def key(emb_id: str) -> str:
        return KEY_PREFIX + emb_id

    def put(self, enc: Encoding, job_id: str = "", owner: str = "", emb_id: str | None = None,
            pipe: Pipeline | None = None) -> str:
        """Store one encoding; `emb_id` and `pipe` let a worker write many, atomically, under ids it chose."""
        blob = enc.to_bytes()
        emb_id = emb_id or uuid.uuid4().hex
        (pipe if pipe is not None else self.conn).hset(self.key(emb_id), mapping={
            "blob": blob, "sha256": hashlib.sha256(blob).hexdigest(), "created": time.time(),
            "model": enc.model, "job_id": job_id, "owner": owner,
        })
        return emb_id

    def get(self, emb_id: str, caller: Caller = SANDBOX) -> StoredEncoding:
        """The stored bytes, if `caller` may see them, verified against their checksum."""
        raw = self.conn.hgetall(self.key(emb_id)) if valid_id(emb_id) else {}
        owner = raw.get(b"owner", b"").decode()
        if not raw or b"blob" not in raw or not caller.owns(owner):
            raise not_found(emb_id)
        blob, digest = raw[b"blob"], raw.get(b"sha256", b"").decode()
        if hashlib.sha256(blob).hexdigest() != digest:
            raise ChecksumMismatch(f"stored embedding '{emb_id}' fails its sha256 check (damaged in storage); "
                                   "it will not be decoded")
        return StoredEncoding(emb_id, blob, digest, float(raw.get(b"created", 0)), raw.get(b"job_id", b"").decode(),
                              owner)

    def delete(self, emb_id: str, caller: Caller = SANDBOX) -> None:
        if not valid_id(emb_id):
            raise not_found(emb_id)
        sha, owner = self.conn.hmget(self.key(emb_id), "sha256", "owner")
        if sha is None or not caller.owns((owner or b"").decode()) or not self.conn.delete(self.key(emb_id)):
            raise not_found(emb_id)

    def existing(self, ids: list[str]) -> list[str]:
        """Those of `ids` still stored (a finished job lists only what was not deleted since)."""
        if not ids:
            return []
        with self.conn.pipeline(transaction=False) as pipe:
            for emb_id in ids:
                pipe.exists(self.key(emb_id))
            found = pipe.execute()
        return [emb_id for emb_id, n in zip(ids, found) if n]
