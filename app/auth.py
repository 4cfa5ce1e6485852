"""Who is calling: the `Authorization: Bearer KEY` check and the per-key request rate.

`caller_dep` guards every /v1 router (see app/main.py), so a route cannot forget it; routes that
need to know the caller (to record or check ownership) declare `CallerDep` and get the same,
cached, answer. With PROTOTOK_AUTH=off every request is the sandbox caller, who sees everything.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Unauthorized
from service.keys import SANDBOX, Caller, KeyStore
from service.quotas import check_rate

from .deps import RedisDep, SettingsDep

bearer = HTTPBearer(auto_error=False, description="an API key from `prototok keys create NAME`")


def caller_dep(settings: SettingsDep, conn: RedisDep,
               creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
    if not settings.auth:
        return SANDBOX
    if creds is None:
        raise Unauthorized("this route needs an API key: send 'Authorization: Bearer KEY' "
                           "(an operator makes one with `prototok keys create NAME`)")
    caller = KeyStore(conn).lookup(creds.credentials)
    if caller is None:
        raise Unauthorized("the API key is not valid (unknown or revoked)", invalid=True)
    check_rate(conn, caller, settings.rate_limit_per_s)
    return caller


CallerDep = Annotated[Caller, Depends(caller_dep)]
