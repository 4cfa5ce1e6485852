"""What an encoding weighs: one core function, the same numbers in the
file, `prototok encode --json` and the API (tests/test_service_api.py)."""

import gzip
import json

import pytest
import zstandard
from typer.testing import CliRunner

from prototok import Encoding, encode_texts
from prototok.cli import app
from prototok.size import size_report

KEYS = {"vectors_bytes", "file_bytes", "text_bytes", "gzip_bytes", "zstd_bytes", "bits_per_char", "bits_per_token"}


def test_size_report_uses_gzip_9_and_zstd_19_of_the_utf8_text():
    text = "Grüße aus Köln, 東京 — the same sentence, twice. The same sentence, twice."
    raw = text.encode()
    got = size_report(text, n_tokens=20, vectors_bytes=100, file_bytes=900)
    assert set(got) == KEYS
    assert got["text_bytes"] == len(raw) > len(text)  # bytes, not characters
    assert got["gzip_bytes"] == len(gzip.compress(raw, compresslevel=9, mtime=0))
    assert got["zstd_bytes"] == len(zstandard.ZstdCompressor(level=19).compress(raw))
    assert zstandard.ZstdDecompressor().decompress(zstandard.ZstdCompressor(level=19).compress(raw)) == raw
    assert got["bits_per_char"] == pytest.approx(800 / len(text), abs=1e-4)
    assert got["bits_per_token"] == pytest.approx(40.0)


def test_an_encoding_records_its_own_file_length_and_its_vectors(tiny, quick_cfg):
    text = "weigh me"
    [enc] = encode_texts(tiny, [text], quick_cfg)
    blob = enc.to_bytes()
    assert enc.size["file_bytes"] == len(blob)
    assert enc.size["vectors_bytes"] == 2 * len(enc.lengths) * tiny.hidden_size * 4  # e and m, float32
    assert enc.size["text_bytes"] == len(text.encode())
    back = Encoding.from_bytes(blob)
    assert back.size == enc.size and back.metadata()["size"] == enc.size


def test_size_of_a_chunked_text_counts_every_chunk(tiny, quick_cfg):
    text = "a text long enough for three chunks of eight"
    [enc] = encode_texts(tiny, [text], quick_cfg.with_(chunk_tokens=8))
    assert len(enc.lengths) > 1
    assert enc.size["vectors_bytes"] == 2 * len(enc.lengths) * tiny.hidden_size * 4
    assert enc.size["bits_per_token"] == pytest.approx(8 * enc.size["vectors_bytes"] / enc.n_tokens, abs=1e-3)


def test_cli_json_carries_the_size(tmp_path):
    out = tmp_path / "s.safetensors"
    text = "how much does this weigh"
    res = CliRunner().invoke(app, ["encode", text, "--out", str(out), "--model", "tiny-llama", "--max-steps", "3",
                                   "--json"])
    assert res.exit_code == 0, res.output
    size = json.loads(res.stdout)["size"]
    assert set(size) == KEYS
    assert size["file_bytes"] == out.stat().st_size and size["text_bytes"] == len(text.encode())
    res = CliRunner().invoke(app, ["encode", text, "--out", str(out), "--model", "tiny-llama", "--max-steps", "3"])
    assert f"zstd -19 {size['zstd_bytes']} B" in res.stdout
