"""`prototok encode|decode --server URL`: the same output, files and progress bar as local compute,
against the API (uvicorn on a thread of this process), the real Redis and a tiny-llama worker on a thread."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios

import pytest
from typer.testing import CliRunner

from prototok import Encoding
from prototok.cli import app

pytestmark = pytest.mark.integration

TEXT = "Same text, here or there."
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def remote(api, tiny_worker, api_key) -> list[str]:
    return ["--server", api.url, *(["--api-key", api_key] if api_key else [])]


def test_encode_and_decode_on_a_server_match_local_compute(remote, tmp_path):
    flags = ["--model", "tiny-llama", "--max-steps", "40", "--seeds", "2", "--json"]
    here = run("encode", TEXT, "--out", str(tmp_path / "here.safetensors"), *flags)
    there = run("encode", TEXT, "--out", str(tmp_path / "there.safetensors"), *flags, *remote)
    assert here.exit_code == 0 and there.exit_code == 0, (here.output, there.output)
    a, b = json.loads(here.stdout), json.loads(there.stdout)
    assert a.keys() == b.keys()
    assert {k: a[k] for k in ("model", "n_tokens", "chunks")} == {k: b[k] for k in ("model", "n_tokens", "chunks")}
    assert b["c_tokens"] + b["corrections"] == b["n_tokens"]

    mine, theirs = Encoding.load(tmp_path / "here.safetensors"), Encoding.load(tmp_path / "there.safetensors")
    assert mine.metadata().keys() == theirs.metadata().keys()
    same = ("model", "tokenizer_fingerprint", "lengths", "arrangement", "method", "sink", "recipe", "ids_sha256")
    assert {k: mine.metadata()[k] for k in same} == {k: theirs.metadata()[k] for k in same}

    for path in ("here", "there"):  # each file decodes both ways to the exact text
        f = str(tmp_path / f"{path}.safetensors")
        assert run("decode", f).stdout == TEXT
        assert run("decode", f, *remote).stdout == TEXT
    local, served = (json.loads(run("decode", str(tmp_path / "there.safetensors"), "--json", *r).stdout)
                     for r in ([], remote))
    assert local.keys() == served.keys() == {"text", "accuracy", "decode_seconds", "dtype"}
    assert served["text"] == TEXT and served["accuracy"] == local["accuracy"] == theirs.accuracy
    assert served["dtype"] == local["dtype"] == "float32"


def test_several_files_go_to_the_server_as_one_batch_job_each(remote, tmp_path):
    texts = ["one of three", "the second", "and the third"]
    files = []
    for i, text in enumerate(texts):
        files += ["--file", str(tmp_path / f"t{i}.txt")]
        (tmp_path / f"t{i}.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    res = run("encode", *files, "--out-dir", str(out), "--batch", "2", "--model", "tiny-llama", "--max-steps", "3",
              "--json", *remote)
    assert res.exit_code == 0, res.output
    assert res.stderr.count("encode: job ") == 2, res.stderr  # 2 + 1 texts: two jobs
    assert [json.loads(line)["n_tokens"] > 0 for line in res.stdout.splitlines()] == [True] * 3
    for i, text in enumerate(texts):
        assert run("decode", str(out / f"t{i}.safetensors")).stdout == text


@pytest.mark.parametrize("args,code,says", [
    (("encode", "", "--out", "{tmp}/x.safetensors"), 2, "text is empty"),
    (("encode", "hi", "--out", "{tmp}/x.safetensors", "--model", "some-org/not-served"), 2, "[model_not_served]"),
    (("encode", "hi", "--out", "{tmp}/x.safetensors", "--max-steps", "3", "--arrangement", "diagonal"),
     2, "[invalid_request]"),
    (("decode", "{tmp}/absent.safetensors"), 2, "no such file"),
    (("decode", "{tmp}/junk.safetensors"), 2, "[corrupt_encoding]"),
    (("decode", "{tmp}/junk.safetensors", "--model", "tiny-llama"), 2, "--model is for local decoding"),
])
def test_server_errors_exit_like_local_ones(remote, tmp_path, args, code, says):
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    res = run(*[a.replace("{tmp}", str(tmp_path)) for a in args], *remote)
    assert res.exit_code == code, res.output
    assert res.stderr.startswith("error: ") and says in res.stderr and res.stderr.count("\n") == 1
    assert "Traceback" not in res.output


def test_unreachable_server_exits_1(tmp_path):
    from conftest import free_port

    res = run("encode", "hi", "--out", str(tmp_path / "x.safetensors"), "--server", f"http://127.0.0.1:{free_port()}")
    assert res.exit_code == 1 and res.stderr.startswith("error: cannot reach the server")


def on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal (tqdm draws only there); stdout piped."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # rows, columns: a real terminal's
    proc = subprocess.Popen([sys.executable, "-m", "prototok.cli", *args], stdout=subprocess.PIPE, stderr=slave,
                            env=env)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(30)
    os.close(master)
    return proc.returncode, seen.decode(errors="replace")


def test_the_server_job_draws_the_encode_bar(remote, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "bar.safetensors"
    code, screen = on_a_terminal(["encode", TEXT, "--out", str(out), "--model", "tiny-llama", "--max-steps", "300",
                                  "--seeds", "2", *remote], env)
    assert code == 0, screen
    from prototok.recipe import TUNED
    from service.settings import ServiceSettings

    budget = 300 + (TUNED.ste_steps if ServiceSettings().storage != "float32" else 0)  # int8 by default: the polish counts
    assert "encode:" in screen and f"/{budget}" in screen and "acc=" in screen and "done=" in screen, screen
    assert "stored embedding" in screen and out.exists()
