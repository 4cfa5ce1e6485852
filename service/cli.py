"""`prototok keys create|list|revoke`: the service's API keys, in the Redis at PROTOTOK_REDIS_URL.

Registered as a prototok command through the `prototok.commands` entry point (pyproject.toml),
so the core's CLI runs it without importing the service. It needs Redis only (service/keys.py),
never the web stack; without the [worker] extra it says which extra to install.
"""

from __future__ import annotations

import json
import time

import typer

from prototok.cli import friendly_errors

from .settings import get_settings

keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="API keys of the service, in the Redis at PROTOTOK_REDIS_URL.")


@keys_app.callback()
def check_settings() -> None:
    get_settings()  # the service's settings: a bad PROTOTOK_* value stops here with one line


def key_store():
    """The service's key store on PROTOTOK_REDIS_URL."""
    from redis import Redis

    from .keys import KeyStore

    return KeyStore(Redis.from_url(get_settings().redis_url, socket_connect_timeout=5, socket_timeout=10))


@keys_app.command("create")
@friendly_errors
def keys_create(
    name: str = typer.Argument(..., help="Who the key is for: 1-64 letters, digits or _.@-"),
    admin: bool = typer.Option(False, "--admin", help="An admin key sees and deletes every key's jobs and embeddings."),
) -> None:
    """Make a key and print it, alone, on stdout (it is stored hashed: this is the only time it is shown)."""
    typer.echo(key_store().create(name, admin=admin))


@keys_app.command("list")
@friendly_errors
def keys_list(as_json: bool = typer.Option(False, "--json", help="One JSON list of {name, admin, created}.")) -> None:
    """Name, role and creation time of every key (never the keys themselves)."""
    keys = key_store().list()
    if as_json:
        typer.echo(json.dumps([{"name": k.name, "admin": k.admin, "created": k.created} for k in keys]))
        return
    for k in keys:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(k.created))
        typer.echo(f"{k.name}\t{'admin' if k.admin else 'user'}\t{created}")


@keys_app.command("revoke")
@friendly_errors
def keys_revoke(name: str = typer.Argument(..., help="The key's name.")) -> None:
    """The key stops working at once; what it made stays (an admin key still sees it)."""
    key_store().revoke(name)
    typer.echo(f"revoked {name}", err=True)
