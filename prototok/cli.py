"""Command line: `prototok encode`, `prototok decode`, `prototok start`, `prototok encoder`, `prototok experiment`,
and the commands other installed packages register (the service's `prototok keys`).

Bad input (empty text, missing or corrupt file, unknown model, wrong model for a file, a
PROTOTOK_* setting it does not take) exits with code 2 and one line on stderr; any other failure
exits 1, also one line.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import typer
from typer.core import TyperGroup

# Other packages add commands here, each a typer app named like its entry point, loaded only when
# it is run or listed: the service registers `keys` (pyproject.toml), so the core imports nothing of it.
COMMANDS_GROUP = "prototok.commands"


class Commands(TyperGroup):
    """prototok's own commands, then those registered under COMMANDS_GROUP by installed packages."""

    def list_commands(self, ctx) -> list[str]:
        own = super().list_commands(ctx)
        return own + sorted({ep.name for ep in entry_points(group=COMMANDS_GROUP)} - set(own))

    def get_command(self, ctx, name: str):
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        for ep in entry_points(group=COMMANDS_GROUP, name=name):
            command = typer.main.get_command(ep.load())
            command.name = name
            return command
        return None


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress texts into two proto-token embeddings of a frozen LLM, and back.")


@app.callback()
def check_settings() -> None:
    """Before any command: the core's PROTOTOK_* settings, so a bad value stops here with one line."""
    from .settings import SettingsError, get_settings

    try:
        get_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


SERVER_HELP = "Run on a prototok service at this URL (e.g. http://127.0.0.1:8000) instead of here."
KEY_HELP = "API key for --server (default: PROTOTOK_API_KEY, which keeps it out of the process list)."


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
        except ModuleNotFoundError as exc:
            typer.echo(f"error: {_missing_extra(exc)}", err=True)
            raise typer.Exit(1)
        except Exception as exc:  # noqa: BLE001 -- a bug, but still no traceback for the user
            message, code = _server_error(exc) or (f"{type(exc).__name__}: {exc}", 1)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(code)

    return wrapper


# The optional dependency groups of pyproject.toml, by the top-level module a command misses.
EXTRA_OF_MODULE = {"redis": "worker", "rq": "worker", "fastapi": "service", "uvicorn": "service",
                   "matplotlib": "experiments", "sklearn": "experiments", "sentence_transformers": "experiments"}


def _missing_extra(exc: ModuleNotFoundError) -> str:
    """A missing optional package, named with the extra that brings it (the core install has none)."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    hint = f": pip install 'prototok[{extra}]'" if extra else ""
    return f"this command needs the package '{module}', which is not installed{hint}"


def _server_error(exc: Exception) -> tuple[str, int] | None:
    """(message, exit code) of an error from `--server`: 2 when the request was wrong, like local input."""
    import httpx

    from .client import ApiError

    if isinstance(exc, ApiError):
        return str(exc), 2 if exc.caller_fault else 1
    if isinstance(exc, httpx.HTTPError):
        return f"cannot reach the server: {type(exc).__name__}: {exc}", 1
    return None


def _progress_bar(total: int):
    from .progressbar import encode_bar, show

    bar = encode_bar(total)

    def report(p) -> None:
        show(bar, p.step, p.loss, sum(p.accuracy) / len(p.accuracy), p.done, len(p.accuracy))

    return bar, report


def _read_text(text: str | None, file: Path | None) -> str:
    """The text of an argument or of a file's bytes (strict UTF-8, nothing translated: textio)."""
    from .errors import EmptyText, InvalidInput
    from .textio import check_unicode, read_text_file

    if (text is None) == (file is None):
        raise InvalidInput("give either TEXT or --file PATH")
    if file is not None:
        return read_text_file(file)
    if not text:
        raise EmptyText("text is empty")
    return check_unicode(text, "the TEXT argument")


@app.command()
@friendly_errors
def encode(
    text: str | None = typer.Argument(None, help="The text to encode (or use --file)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write the .safetensors encoding (one text)."),
    file: list[Path] | None = typer.Option(None, "--file", "-f", metavar="PATH",
                                           help="Read a text from this UTF-8 file, byte for byte (CRLF, BOM, "
                                                "NUL kept); repeat for several texts, encoded in batches "
                                                "(with --out-dir)."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="With several --file: write DIR/<file stem>.safetensors "
                                                                 "for each."),
    batch: int = typer.Option(16, "--batch", min=1, max=1024,
                              help="Texts optimised together in one batch (one job with --server); 8-32 gave about "
                                   "2x the texts per second of one at a time on 2 CPU cores (docs: Benchmarks)."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="With --out-dir: leave texts whose output "
                                                                       "file exists (resume a stopped run)."),
    model: str | None = typer.Option(None, help="HF name, local path, .gguf or alias (default: embedded SmolLM2)."),
    recipe: str = typer.Option("tuned", help="Optimisation recipe preset: tuned or paper."),
    max_steps: int | None = typer.Option(None, min=1, help="Step budget (overrides the recipe)."),
    seeds: int | None = typer.Option(None, min=1, help="Random restarts, run side by side in one batch."),
    lr: float | None = typer.Option(None, min=0.0, help="Learning rate (overrides the recipe)."),
    margin: float | None = typer.Option(None, min=0.0, max=99.0,
                                        help="Nats each right token must lead by before the text counts as "
                                             "solved (tuned: 1.0; 0 = stop at the first exact reconstruction)."),
    arrangement: str = typer.Option("e_mN-1", help="one | halves | pairs | e_mN | e_mN-1"),
    method: str = typer.Option("one_step", help="one_step (the paper) or autoregressive ([mem] baseline)."),
    chunk_tokens: int | None = typer.Option(None, min=1, help="Longer texts are split into chunks of this many "
                                             "tokens (default 32; shorter: faster per token, more vectors)."),
    sink: bool | None = typer.Option(None, "--sink/--no-sink",
                                     help="Frozen BOS embedding before [e, m, ...] (default: the recipe's)."),
    start: str | None = typer.Option(None, "--start", help="Where the optimisation begins: random | warm (the "
                                     "tuned default: the model's warm start) | encoder (predicted from the text by "
                                     "the model's encoder head; docs: Learned encoder)."),
    storage: str | None = typer.Option(None, help="How the file stores e and m: float32 (default) | float16 | "
                                                   "bfloat16 | int8 (per-vector scale)."),
    rank: int | None = typer.Option(None, help="Optimise and store e and m as this many coefficients in a fixed "
                                               "basis (0 = full vectors)."),
    compact: bool = typer.Option(False, "--compact", help="The smallest storage the size benchmark found to keep "
                                                          "sentences lossless (docs: The file format)."),
    model_m: bool = typer.Option(False, "--model-m", help="Freeze m at the model's shared m (its start, stored once "
                                                          "per model); train and store only e (docs: The file format)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the metrics."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    api_key: str | None = typer.Option(None, "--api-key", help=KEY_HELP),
) -> None:
    """Optimise proto-tokens for a text and save them (lossless: misses are stored as corrections).

    Several --file texts are optimised `--batch` at a time, the model loaded once; each batch's
    files are written as soon as it ends, so --skip-existing resumes a stopped run."""
    # Checked where the config is built: here by recipe.encode_config, with --server by the service.
    options = {"recipe": recipe, "max_steps": max_steps, "seeds": seeds, "lr": lr, "margin": margin,
               "arrangement": arrangement,
               "method": method, "chunk_tokens": chunk_tokens, "sink": sink, "start": start, "storage": storage, "rank": rank,
               "compact": compact or None, "model_m": model_m or None}
    work = _work(text, file or [], out, out_dir, skip_existing)
    if not work:
        return
    if server:
        encode_part = functools.partial(_encode_on_server, server, api_key, model=model, options=options)
    else:
        encode_part = _local_encoder(model, options)
    parts = [work[i:i + batch] for i in range(0, len(work), batch)]
    for k, part in enumerate(parts, 1):
        if len(parts) > 1:
            typer.echo(f"encode: batch {k}/{len(parts)}, {len(part)} text{'s' if len(part) != 1 else ''}", err=True)
        for summary in encode_part(part):
            _report(summary, as_json)


def _report(summary: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        out = summary["out"]
        typer.echo(f"{out}: {summary['c_tokens']}/{summary['n_tokens']} tokens from the proto-tokens alone "
                   f"(accuracy {summary['accuracy']:.3f}), {summary['corrections']} corrections, "
                   f"{summary['steps']} steps, {summary['seconds']:.1f} s, H_LM {summary['h_lm']:.1f} nats")
        if summary.get("size"):
            s = summary["size"]
            typer.echo(f"size: vectors {s['vectors_bytes']} B ({s['bits_per_char']:.1f} bits/char), file "
                       f"{s['file_bytes']} B; the text: {s['text_bytes']} B, gzip -9 {s['gzip_bytes']} B, "
                       f"zstd -19 {s['zstd_bytes']} B")
        if summary.get("m_ref"):
            typer.echo(f"m: the model's shared m (start file {summary['m_ref']['start']}, stored once per model), "
                       "not in this file")


def _work(text: str | None, files: list[Path], out: Path | None, out_dir: Path | None,
          skip_existing: bool) -> list[tuple[str, Path]]:
    """(text, output path) for each text to encode, every file read and checked before any model loads."""
    from .errors import InvalidInput

    if out is not None and out_dir is not None:
        raise InvalidInput("give --out (one text) or --out-dir (several files), not both")
    if out_dir is None:
        if len(files) > 1:
            raise InvalidInput("several --file texts need --out-dir DIR (one output file each)")
        if out is None:
            raise InvalidInput("give --out PATH for the encoding")
        return [(_read_text(text, files[0] if files else None), out)]
    if text is not None or not files:
        raise InvalidInput("--out-dir takes its texts from --file (one or more), not TEXT")
    outs = [out_dir / f"{f.stem}.safetensors" for f in files]
    if len(set(outs)) < len(outs):
        raise InvalidInput("two --file inputs share a file name stem, so their outputs in --out-dir would clash")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = [(f, o) for f, o in zip(files, outs) if not (skip_existing and o.exists())]
    if len(work) < len(files):
        typer.echo(f"encode: {len(files) - len(work)} of {len(files)} outputs exist already; skipped", err=True)
    return [(_read_text(None, f), o) for f, o in work]


def _local_encoder(model: str | None, options: dict) -> Callable[[list[tuple[str, Path]]], list[dict]]:
    """Checks the options, then loads the model once for all batches."""
    from .codec import encode_texts
    from .models import load_model, quiet_libraries
    from .recipe import encode_config

    cfg = encode_config(**options)  # a bad option fails before the model loads
    quiet_libraries()
    lm = load_model(model)

    def encode_part(work: list[tuple[str, Path]]) -> list[dict]:
        bar, report = _progress_bar(cfg.step_budget)
        encs = encode_texts(lm, [body for body, _ in work], cfg, progress=report)
        bar.close()
        summaries = []
        for enc, (_, out) in zip(encs, work):
            enc.save(out)
            summaries.append(_local_summary(enc, out))
        return summaries

    return encode_part


def _local_summary(enc, out: Path) -> dict:
    return {"out": str(out), "model": enc.model, "n_tokens": enc.n_tokens, "chunks": len(enc.lengths),
            "accuracy": enc.accuracy, "c_tokens": enc.c_tokens, "h_lm": enc.h_lm, "steps": enc.steps,
            "seconds": enc.seconds, "corrections": enc.n_corrections, "dtype": enc.compute_dtype,
            "min_margin": enc.min_margin, "storage": enc.storage, "rank": enc.rank, "size": enc.size,
            "m_ref": enc.m_ref}


def _encode_on_server(url: str, api_key: str | None, work: list[tuple[str, Path]], *, model: str | None,
                      options: dict) -> list[dict]:
    """The same batch as one job of the service: the worker optimises, the files are the ones it stored."""
    from .client import Client

    texts = [body for body, _ in work]
    summaries = []
    with Client(url, api_key=api_key) as client:
        job = client.encode(texts[0] if len(texts) == 1 else texts, model=model, **options)
        ids = job.wait(progress=True).embeddings()
        for emb_id, (_, out) in zip(ids, work):
            client.download(emb_id, out)
            summaries.append(_server_summary(client.embedding(emb_id), out))
    typer.echo(f"encode: job {job.id} on {url} stored embedding(s) {', '.join(ids)}", err=True)
    return summaries


def _server_summary(emb: dict, out: Path) -> dict:
    return {"out": str(out), "model": emb["model"], "n_tokens": emb["length"], "chunks": len(emb["lengths"]),
            "accuracy": emb["accuracy"], "c_tokens": emb["c_tokens"], "h_lm": emb["h_lm"], "steps": emb["steps"],
            "seconds": emb["seconds"], "corrections": emb["corrections"], "dtype": emb.get("compute_dtype"),
            "min_margin": emb.get("min_margin"), "storage": emb.get("storage", "float32"), "rank": emb.get("rank", 0),
            "size": emb.get("size"), "m_ref": emb.get("m_ref")}


@app.command()
@friendly_errors
def decode(
    file: Path = typer.Argument(..., help="A .safetensors encoding written by `prototok encode`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the text to this file: exactly its UTF-8 "
                                                              "bytes, nothing added."),
    model: str | None = typer.Option(None, help="Model to decode with (default: the one in the file)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: text, accuracy, decode_seconds, dtype."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    api_key: str | None = typer.Option(None, "--api-key", help=KEY_HELP),
    dtype: str | None = typer.Option(None, help="float32 | bfloat16 | float16 (default: the dtype the file was "
                                                "made in; float32 for a file that records none)."),
) -> None:
    """Rebuild the exact text in one forward pass (plus stored corrections).

    The text goes to --out, or to stdout as its UTF-8 bytes; to a terminal a newline follows it,
    so the prompt starts on a line of its own (use --out or a pipe for the bytes alone). If the
    checksum fails in the chosen dtype, the other dtypes of this host are tried; stderr says
    which one rebuilt the text."""
    from .errors import InvalidInput
    from .textio import utf8, write_text_file

    if server:
        if dtype:
            raise InvalidInput("--dtype is for local decoding; the server decodes in its own dtype")
        text, accuracy, seconds, used = _decode_on_server(server, api_key, file, model)
    else:
        text, accuracy, seconds, used, chosen = _decode_here(file, model, dtype)
        if used != chosen:
            typer.echo(f"decode: the checksum failed in {chosen}; rebuilt exactly in {used}", err=True)
    if out is not None:
        write_text_file(out, text)
    if as_json:
        typer.echo(json.dumps({"text": text, "accuracy": accuracy, "decode_seconds": seconds, "dtype": used}))
    elif out is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(utf8(text) + (b"\n" if sys.stdout.isatty() else b""))
        sys.stdout.buffer.flush()


def _decode_here(file: Path, model: str | None, dtype: str | None = None) -> tuple[str, float, float, str, str]:
    """(text, accuracy, seconds, dtype that rebuilt it, dtype chosen first). The dtype the file was
    made in unless told otherwise (float32 for a file from before it was recorded): another dtype
    can flip a low-margin token, and `decode` then tries this host's other dtypes."""
    from .codec import decode as decode_encodings
    from .encoding import Encoding
    from .models import canonical_name, load_model, quiet_libraries

    enc = Encoding.load(file)
    chosen = dtype or enc.compute_dtype or "float32"
    quiet_libraries()
    lm = load_model(canonical_name(model) if model else enc.model, dtype=chosen)
    [res] = decode_encodings(lm, [enc])
    return res.text, res.accuracy, res.seconds, res.dtype, chosen


def _decode_on_server(url: str, api_key: str | None, file: Path,
                      model: str | None) -> tuple[str, float, float, str | None]:
    """Upload the file; the server decodes it with the model the file names (its checksum checked)."""
    from .client import Client
    from .errors import InvalidInput

    if model:
        raise InvalidInput("--model is for local decoding; with --server the file's own model decodes it")
    if not file.is_file():
        raise InvalidInput(f"no such file: {file}")
    with Client(url, api_key=api_key) as client:
        res = client.decode(file)
    return res.text, res.accuracy, res.decode_ms / 1000, res.dtype


start_app = typer.Typer(no_args_is_help=True, help="Warm starts: the e and m an encode begins from, one per model.")
app.add_typer(start_app, name="start")


@start_app.command("train")
@friendly_errors
def start_train(
    model: str | None = typer.Option(None, help="HF name, local path, .gguf or alias (default: embedded SmolLM2)."),
    texts: int = typer.Option(32, min=1, max=200, help="Shipped prose passages to learn from (0..N-1; benches hold out 100+)."),
    steps: int = typer.Option(200, min=1, max=5000, help="Steps of the shared-m optimisation."),
    tokens: int = typer.Option(16, min=2, max=256, help="Tokens of each passage (after its first 40)."),
    out: Path | None = typer.Option(None, help="Output file (default: the cache dir, where encodes find it)."),
) -> None:
    """Learn a start for a model: one m shared by the texts, e their mean. Prints the file's path.

    The default path replaces the cache dir's start; the old one is kept beside it as
    start-M.<m sha256[:16]>.safetensors, so --model-m files made with it still decode."""
    from .errors import InvalidInput
    from .experiments.datasets import passages
    from .models import load_model, quiet_libraries
    from .start_training import prose_chunks, train_start
    from .starts import candidates, write_start

    quiet_libraries()
    lm = load_model(model)
    seqs = prose_chunks(lm, [p["text"] for p in passages()[:texts]], tokens=tokens)
    if not seqs:
        raise InvalidInput(f"no passage has {tokens} tokens after its first 40 for this tokenizer")
    bar, report = _progress_bar(steps)
    e, m, how = train_start(lm, seqs, steps, progress=report)
    bar.close()
    typer.echo(str(write_start(out or candidates(lm)[0], lm, e, m, **how)))


@start_app.command("show")
@friendly_errors
def start_show(model: str | None = typer.Option(None, help="HF name, local path, .gguf or alias.")) -> None:
    """The start encodes of this model begin from (file, m digest, how it was made), or that there is
    none; and the older starts kept when it was retrained, which only decode --model-m files."""
    from .models import load_model, quiet_libraries
    from .starts import candidates, find_start, kept_starts, m_digest

    quiet_libraries()
    lm = load_model(model)
    start, kept = find_start(lm), kept_starts(lm)
    listed = [{"file": str(k.path), "m_sha256": m_digest(k.m), "made": k.meta.get("made")} for k in kept]
    if start is None:
        typer.echo(f"no start for {lm.name}: encodes begin at random (looked in {', '.join(map(str, candidates(lm)))})")
        if listed:
            typer.echo(json.dumps({"kept": listed}, indent=1))
        return
    typer.echo(json.dumps({"file": str(start.path), "m_sha256": m_digest(start.m), **start.meta, "kept": listed},
                          indent=1))


encoder_app = typer.Typer(no_args_is_help=True, help="Learned encoders: a start predicted from the text, one per model.")
app.add_typer(encoder_app, name="encoder")


@encoder_app.command("train")
@friendly_errors
def encoder_train(
    model: str | None = typer.Option(None, help="HF name, local path, .gguf or alias (default: embedded SmolLM2)."),
    objective: str = typer.Option("reconstruct", help="reconstruct (the encode loss, end to end) or regress (to "
                                  "vectors solved from the warm start)."),
    iterations: int = typer.Option(300, min=1, max=100_000, help="Optimiser steps of the head."),
    batch: int = typer.Option(16, min=1, max=256, help="Windows per step."),
    lr: float = typer.Option(1e-3, min=1e-6, max=1.0, help="The head's AdamW learning rate."),
    passages: int = typer.Option(120, min=1, max=120, help="Shipped prose passages to cut windows from (0..N-1)."),
    layer: int | None = typer.Option(None, min=0, help="Hidden layer the head reads (default: the middle one)."),
    regress_windows: int = typer.Option(128, min=1, max=100_000, help="regress: windows solved for targets (a solve "
                                        "each: the cost of that objective)."),
    out: Path | None = typer.Option(None, help="Output file (default: the cache dir, where encodes find it)."),
) -> None:
    """Train an encoder head for a model, resumably (a checkpoint is kept beside the output and a
    rerun with the same options goes on from it); ends with its validation: the encode loss and
    token accuracy at step 0 from the head's start and from the warm start. Prints the file's path."""
    from .encoder import candidates, write_encoder
    from .encoder_training import TrainConfig, Trainer
    from .models import load_model, quiet_libraries

    quiet_libraries()
    lm = load_model(model)
    cfg = TrainConfig(objective=objective, iterations=iterations, batch=batch, lr=lr, passages=passages, layer=layer,
                      regress_windows=regress_windows)
    cfg.check()
    path = out or candidates(lm)[0]
    checkpoint = path.with_name(f".{path.stem}.checkpoint.safetensors")
    bars: dict = {}

    def report(p) -> None:
        from tqdm import tqdm

        bar = bars.get(p.phase) or bars.setdefault(p.phase, tqdm(total=p.iterations, desc=p.phase, leave=False,
                                                                  disable=None, file=sys.stderr))
        bar.update(p.iteration - bar.n)
        if p.loss == p.loss:  # not NaN
            bar.set_postfix(loss=f"{p.loss:.3f}", refresh=False)

    enc, how = Trainer(lm, cfg, checkpoint, report).run()
    for bar in bars.values():
        bar.close()
    typer.echo(json.dumps({"validation": how["validation"], "seconds": how["seconds"]}))
    typer.echo(str(write_encoder(path, lm, enc, how=how)))
    checkpoint.unlink(missing_ok=True)


@encoder_app.command("show")
@friendly_errors
def encoder_show(model: str | None = typer.Option(None, help="HF name, local path, .gguf or alias.")) -> None:
    """The encoder head of this model (file, layer, how it was trained), or that there is none."""
    from .encoder import candidates, find_encoder
    from .models import load_model, quiet_libraries

    quiet_libraries()
    lm = load_model(model)
    enc = find_encoder(lm)
    if enc is None:
        typer.echo(f"no encoder for {lm.name} (looked in {', '.join(map(str, candidates(lm)))})")
        return
    typer.echo(json.dumps({"file": str(enc.path), **enc.meta}, indent=1))


def _register_experiments() -> None:
    try:
        from .experiments.command import experiment
    except ImportError:  # experiments package not installed in this build
        return
    app.command(name="experiment")(friendly_errors(experiment))


_register_experiments()


if __name__ == "__main__":
    app()
