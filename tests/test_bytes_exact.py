"""The same bytes out as went in, through every entry point, on the edge-case corpus
(tests/edge_cases.py) and the tiny model: the library, the CLI (argument, --file, --out-dir,
stdout and --out), the API (JSON, and the stored file uploaded back as raw bytes and as
multipart) and the Python client. A few run on SmolLM2 in test_integration_model.py."""

from __future__ import annotations

import hashlib

import pytest
from conftest import wait_job
from edge_cases import EDGE_TEXTS, chunk_texts
from typer.testing import CliRunner

from prototok import Encoding, decode
from prototok.cli import app
from prototok.codec import encode_texts
from prototok.recipe import TUNED, EncodeConfig

NAMES = sorted(EDGE_TEXTS)
QUICK = EncodeConfig(recipe=TUNED.with_(max_steps=3, seeds=1))  # the corrections make it exact
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def utf8(text: str) -> bytes:
    return text.encode("utf-8")


def test_the_library_gives_back_every_text_exactly_alone_and_in_one_batch(tiny):
    texts = [EDGE_TEXTS[n] for n in NAMES]
    batch = encode_texts(tiny, texts, QUICK)
    for name, text, enc in zip(NAMES, texts, batch):
        [alone] = encode_texts(tiny, [text], QUICK)
        for made in (enc, alone):
            [out] = decode(tiny, [Encoding.from_bytes(made.to_bytes())])  # as a file holds it
            assert utf8(out.text) == utf8(text), name
    assert [utf8(d.text) for d in decode(tiny, [Encoding.from_bytes(e.to_bytes()) for e in batch])] == \
        [utf8(t) for t in texts]


def test_a_text_of_exactly_the_chunk_length_and_one_token_longer(tiny):
    cfg = QUICK.with_(chunk_tokens=16)
    texts = chunk_texts(tiny, 16)
    encs = encode_texts(tiny, list(texts.values()), cfg)
    assert [e.lengths for e in encs] == [[16], [16, 1]]
    assert [d.text for d in decode(tiny, encs)] == list(texts.values())


@pytest.mark.parametrize("name", NAMES)
def test_cli_file_in_file_out_and_stdout_are_the_files_bytes(tmp_path, name):
    src, enc, back = tmp_path / "in.txt", tmp_path / "e.safetensors", tmp_path / "back.txt"
    src.write_bytes(utf8(EDGE_TEXTS[name]))
    res = cli("encode", "--file", str(src), "--out", str(enc), "--model", "tiny-llama", "--max-steps", "3",
              "--seeds", "1")
    assert res.exit_code == 0, res.output
    res = cli("decode", str(enc), "--out", str(back))
    assert res.exit_code == 0, res.output
    assert back.read_bytes() == src.read_bytes()
    res = cli("decode", str(enc))
    assert res.exit_code == 0 and res.stdout_bytes == src.read_bytes()  # no newline added off a terminal


@pytest.mark.parametrize("name", NAMES)
def test_cli_argument_round_trip(tmp_path, name):
    enc = tmp_path / "e.safetensors"
    res = cli("encode", EDGE_TEXTS[name], "--out", str(enc), "--model", "tiny-llama", "--max-steps", "3",
              "--seeds", "1")
    assert res.exit_code == 0, res.output
    assert cli("decode", str(enc)).stdout_bytes == utf8(EDGE_TEXTS[name])


def test_cli_many_files_into_a_folder(tmp_path):
    folder, out = tmp_path / "texts", tmp_path / "encs"
    folder.mkdir()
    for name in NAMES:
        (folder / f"{name}.txt").write_bytes(utf8(EDGE_TEXTS[name]))
    files = [a for name in NAMES for a in ("--file", str(folder / f"{name}.txt"))]
    res = cli("encode", *files, "--out-dir", str(out), "--batch", "6", "--model", "tiny-llama", "--max-steps", "3",
              "--seeds", "1")
    assert res.exit_code == 0, res.output
    for name in NAMES:
        assert cli("decode", str(out / f"{name}.safetensors")).stdout_bytes == utf8(EDGE_TEXTS[name]), name


@pytest.mark.parametrize("content,message", [
    (b"caf\xe9 latin-1", "is not UTF-8 text (byte 3"),
    (b"\xff\xfeu\x00t\x00f\x00", "is not UTF-8 text (byte 0"),  # UTF-16 with its BOM
    (b"", "is empty"),
])
def test_a_file_that_is_not_utf8_or_empty_exits_2_with_one_line(tmp_path, content, message):
    src = tmp_path / "bad.txt"
    src.write_bytes(content)
    res = cli("encode", "--file", str(src), "--out", str(tmp_path / "e.safetensors"), "--model", "tiny-llama")
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_an_argument_with_a_lone_surrogate_exits_2(tmp_path):
    """What Python makes of an argv that is not UTF-8 (surrogateescape): refused, never stored as U+FFFD."""
    res = cli("encode", "caf\udce9", "--out", str(tmp_path / "e.safetensors"), "--model", "tiny-llama")
    assert res.exit_code == 2 and "lone surrogate" in res.output and "character 3" in res.output


# --- the service: JSON in, the stored file back as bytes, the client ---


def _groups(names: list[str], size: int) -> list[list[str]]:
    return [names[i:i + size] for i in range(0, len(names), size)]


@pytest.fixture(scope="module")
def stored(api, tiny_worker) -> dict[str, str]:
    """Every edge text encoded through POST /v1/encode (JSON), four to a job: name -> embedding id."""
    ids = {}
    for group in _groups(NAMES, 4):
        r = api.http.post("/v1/encode", json={"texts": [EDGE_TEXTS[n] for n in group],
                                              "options": {"max_steps": 3, "seeds": 1}})
        assert r.status_code == 202, r.text
        done = wait_job(api, r.json()["job_id"], 300, tiny_worker)
        assert done["status"] == "finished", done
        ids.update(zip(group, done["embedding_ids"]))
    return ids


@pytest.mark.integration
def test_the_api_rebuilds_every_text_exactly(api, stored):
    for name, emb_id in stored.items():
        body = api.http.get(f"/v1/embeddings/{emb_id}/text").json()
        assert utf8(body["text"]) == utf8(EDGE_TEXTS[name]), name
        assert body["dtype"] == "float32"


@pytest.mark.integration
def test_the_stored_file_uploaded_back_decodes_exactly_as_bytes_and_as_multipart(api, stored):
    for name, emb_id in stored.items():
        blob = api.http.get(f"/v1/embeddings/{emb_id}", headers={"Accept": "application/octet-stream"}).content
        raw = api.http.post("/v1/decode", content=blob, headers={"Content-Type": "application/octet-stream"})
        form = api.http.post("/v1/decode", files={"file": ("e.safetensors", blob, "application/octet-stream")})
        for r in (raw, form):
            assert r.status_code == 200, r.text
            assert utf8(r.json()["text"]) == utf8(EDGE_TEXTS[name]), name


@pytest.mark.integration
def test_the_client_round_trip_is_exact(api, tiny_worker, api_key, tmp_path):
    from prototok.client import Client

    with Client(api.url, api_key=api_key, poll_s=0.1) as client:
        for group in _groups(NAMES, 4):
            texts = [EDGE_TEXTS[n] for n in group]
            ids = client.encode(texts, max_steps=3, seeds=1).embeddings()
            for emb_id, text in zip(ids, texts):
                assert utf8(client.text(emb_id)) == utf8(text)
                path = client.download(emb_id, tmp_path / f"{emb_id}.safetensors")
                assert hashlib.sha256(path.read_bytes()).hexdigest() == client.embedding(emb_id)["sha256"]
                assert utf8(client.decode(path).text) == utf8(text)
                assert cli("decode", str(path)).stdout_bytes == utf8(text)  # the file works without the server


@pytest.mark.integration
def test_a_json_text_with_a_lone_surrogate_is_refused(api):
    """JSON can escape a lone surrogate ("\\udce9"), which no UTF-8 byte sequence holds: 422, no job."""
    r = api.http.post("/v1/encode", content=b'{"text": "caf\\udce9"}', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
    assert "unicode" in r.json()["message"]
