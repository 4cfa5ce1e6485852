"""API keys: created, listed and revoked by name, stored hashed in Redis.

Only Redis and the standard library here, no FastAPI: `prototok keys ...` imports this module
and must not pull in the web stack.

A key is 32 random bytes (`ptk_` + url-safe base64), shown once when it is created. Redis
keeps only its sha256: a plain digest is enough for a random 256-bit secret (no dictionary to
attack, so no slow password hash is needed), and whoever reads Redis cannot call the API with
what they find. Layout:

    prototok:keys      hash  sha256(key) -> {"name", "admin", "created"} (JSON)
    prototok:keynames  hash  name -> sha256(key)

What a key owns (its jobs and embeddings) is recorded by the key's *name*. Revoking a name and
creating it again is how a key is rotated: the new key sees what the old one made.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass

from redis import Redis

from prototok.errors import InvalidInput

KEYS = "prototok:keys"
NAMES = "prototok:keynames"
PREFIX = "ptk_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class KeyExists(InvalidInput):
    code = "key_exists"


class NoSuchKey(InvalidInput):
    code = "no_such_key"


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a key's name, or the sandbox caller when PROTOTOK_AUTH=off."""

    name: str
    admin: bool = False

    def owns(self, owner: str | None) -> bool:
        """Whether this caller may see something recorded as made by `owner`."""
        return self.admin or (owner or "") == self.name


SANDBOX = Caller(name="", admin=True)  # PROTOTOK_AUTH=off: one open sandbox, everything visible


@dataclass(frozen=True)
class KeyInfo:
    name: str
    admin: bool
    created: float


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(f"key name {name[:80]!r} must be 1-64 letters, digits or _.@- (starting with a "
                           "letter or digit)")
    return name


class KeyStore:
    def __init__(self, conn: Redis):
        self.conn = conn

    def create(self, name: str, admin: bool = False) -> str:
        """A new key for `name`; the only time the key itself is seen."""
        check_name(name)
        key = PREFIX + secrets.token_urlsafe(32)
        sha = digest(key)
        if not self.conn.hsetnx(NAMES, name, sha):
            raise KeyExists(f"a key named '{name}' exists; revoke it first to replace it")
        self.conn.hset(KEYS, sha, json.dumps({"name": name, "admin": admin, "created": time.time()}))
        return key

    def lookup(self, key: str) -> Caller | None:
        """The caller a presented key stands for, or None for an unknown or revoked key."""
        if not key.startswith(PREFIX) or len(key) > 128:
            return None
        raw = self.conn.hget(KEYS, digest(key))
        if raw is None:
            return None
        info = json.loads(raw)
        return Caller(name=str(info["name"]), admin=bool(info.get("admin")))

    def list(self) -> list[KeyInfo]:
        infos = [json.loads(v) for v in self.conn.hgetall(KEYS).values()]
        return sorted((KeyInfo(str(i["name"]), bool(i.get("admin")), float(i.get("created", 0))) for i in infos),
                      key=lambda k: k.name)

    def revoke(self, name: str) -> None:
        sha = self.conn.hget(NAMES, name)
        if sha is None:
            raise NoSuchKey(f"no key named '{name[:80]}'")
        with self.conn.pipeline() as pipe:  # MULTI: the key stops working and its name frees up together
            pipe.hdel(KEYS, sha)
            pipe.hdel(NAMES, name)
            pipe.execute()
