"""Command line: `prototok encode`, `prototok decode`, `prototok experiment`, `prototok keys`.

Bad input (empty text, missing or corrupt file, unknown model, wrong model for a file)
exits with code 2 and one line on stderr; any other failure exits 1, also one line.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress texts into two proto-token embeddings of a frozen LLM, and back.")


def _quiet_libraries() -> None:
    """Model loading logs progress bars and warnings that are noise on a CLI."""
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def friendly_errors(fn: Callable) -> Callable:
    """One line and an exit code instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .errors import PrototokError

        try:
            return fn(*args, **kwargs)
        except PrototokError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(130)
        except Exception as exc:  # noqa: BLE001 -- a bug, but still no traceback for the user
            typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(1)

    return wrapper


def _progress_bar(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, desc="encode", unit="step", file=sys.stderr, disable=None, leave=False)

    def report(p) -> None:
        bar.update(p.step - bar.n)
        bar.set_postfix(loss=f"{p.loss:.3f}", acc=f"{min(p.accuracy):.2f}", done=f"{p.done}/{len(p.accuracy)}")

    return bar, report


def _read_text(text: str | None, file: Path | None) -> str:
    from .errors import EmptyText, InvalidInput

    if (text is None) == (file is None):
        raise InvalidInput("give either TEXT or --file PATH")
    if file is not None:
        if not file.is_file():
            raise InvalidInput(f"no such file: {file}")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{file} is not UTF-8 text") from exc
    if not text:
        raise EmptyText("text is empty")
    return text


@app.command()
@friendly_errors
def encode(
    text: str | None = typer.Argument(None, help="The text to encode (or use --file)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the .safetensors encoding."),
    file: Path | None = typer.Option(None, "--file", "-f", help="Read the text from this UTF-8 file."),
    model: str | None = typer.Option(None, help="HF name, local path, .gguf or alias (default: embedded SmolLM2)."),
    recipe: str = typer.Option("tuned", help="Optimisation recipe preset: tuned or paper."),
    max_steps: int | None = typer.Option(None, min=1, help="Step budget (overrides the recipe)."),
    seeds: int | None = typer.Option(None, min=1, help="Random restarts, run side by side in one batch."),
    lr: float | None = typer.Option(None, min=0.0, help="Learning rate (overrides the recipe)."),
    arrangement: str = typer.Option("e_mN-1", help="one | halves | pairs | e_mN | e_mN-1"),
    method: str = typer.Option("one_step", help="one_step (the paper) or autoregressive ([mem] baseline)."),
    chunk_tokens: int = typer.Option(64, min=1, help="Longer texts are split into chunks of this many tokens."),
    sink: bool | None = typer.Option(None, "--sink/--no-sink",
                                     help="Frozen BOS embedding before [e, m, ...] (default: the recipe's)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the metrics."),
) -> None:
    """Optimise proto-tokens for a text and save them (lossless: misses are stored as corrections)."""
    from .codec import encode_texts
    from .errors import InvalidInput
    from .models import load_model
    from .recipe import RECIPES, EncodeConfig

    body = _read_text(text, file)
    if recipe not in RECIPES:
        raise InvalidInput(f"unknown recipe '{recipe}' (choose from {', '.join(RECIPES)})")
    try:
        cfg = EncodeConfig(recipe=RECIPES[recipe].with_(max_steps=max_steps, seeds=seeds, lr=lr, sink=sink),
                           arrangement=arrangement, method=method, chunk_tokens=chunk_tokens)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    _quiet_libraries()
    lm = load_model(model)
    bar, report = _progress_bar(cfg.recipe.max_steps)
    [enc] = encode_texts(lm, [body], cfg, progress=report)
    bar.close()
    enc.save(out)
    summary = {"out": str(out), "model": enc.model, "n_tokens": enc.n_tokens, "chunks": len(enc.lengths),
               "accuracy": enc.accuracy, "c_tokens": enc.c_tokens, "h_lm": enc.h_lm, "steps": enc.steps,
               "seconds": enc.seconds, "corrections": enc.n_corrections}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"{out}: {enc.c_tokens}/{enc.n_tokens} tokens from the proto-tokens alone "
                   f"(accuracy {enc.accuracy:.3f}), {enc.n_corrections} corrections, "
                   f"{enc.steps} steps, {enc.seconds:.1f} s, H_LM {enc.h_lm:.1f} nats")


@app.command()
@friendly_errors
def decode(
    file: Path = typer.Argument(..., help="A .safetensors encoding written by `prototok encode`."),
    model: str | None = typer.Option(None, help="Model to decode with (default: the one in the file)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: text, accuracy, decode_seconds."),
) -> None:
    """Rebuild the exact text in one forward pass (plus stored corrections)."""
    from .codec import decode as decode_encodings
    from .encoding import Encoding
    from .models import canonical_name, load_model

    enc = Encoding.load(file)
    _quiet_libraries()
    lm = load_model(canonical_name(model) if model else enc.model)
    [res] = decode_encodings(lm, [enc])
    if as_json:
        typer.echo(json.dumps({"text": res.text, "accuracy": res.accuracy, "decode_seconds": res.seconds}))
    else:
        sys.stdout.write(res.text + ("\n" if sys.stdout.isatty() else ""))


keys_app = typer.Typer(no_args_is_help=True, help="API keys of the service, in the Redis at PROTOTOK_REDIS_URL.")
app.add_typer(keys_app, name="keys")


def _key_store():
    """The service's key store (app/keys.py: Redis only, no web stack) on PROTOTOK_REDIS_URL."""
    from redis import Redis

    from app.keys import KeyStore

    from .settings import get_settings

    return KeyStore(Redis.from_url(get_settings().redis_url, socket_connect_timeout=5, socket_timeout=10))


@keys_app.command("create")
@friendly_errors
def keys_create(
    name: str = typer.Argument(..., help="Who the key is for: 1-64 letters, digits or _.@-"),
    admin: bool = typer.Option(False, "--admin", help="An admin key sees and deletes every key's jobs and embeddings."),
) -> None:
    """Make a key and print it, alone, on stdout (it is stored hashed: this is the only time it is shown)."""
    typer.echo(_key_store().create(name, admin=admin))


@keys_app.command("list")
@friendly_errors
def keys_list(as_json: bool = typer.Option(False, "--json", help="One JSON list of {name, admin, created}.")) -> None:
    """Name, role and creation time of every key (never the keys themselves)."""
    import time

    keys = _key_store().list()
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
    _key_store().revoke(name)
    typer.echo(f"revoked {name}", err=True)


def _register_experiments() -> None:
    try:
        from .experiments.command import experiment
    except ImportError:  # experiments package not installed in this build
        return
    app.command(name="experiment")(friendly_errors(experiment))


_register_experiments()


if __name__ == "__main__":
    app()
