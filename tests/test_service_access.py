"""Who may do what: API keys, ownership, quotas and rate limits, odd ids, strict request bodies.

Against the API in this process (LocalApi), the real Redis and a tiny-llama worker on a thread,
as a client and as an attacker would try them. Quota tests use an API of their own with low
limits and its own queue name, so that their jobs stay queued (no worker listens there) without
holding up the module's worker.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time

import pytest
from conftest import REPO, SERVICE_REDIS_URL, LocalApi, make_key, service_env, wait_job

pytestmark = pytest.mark.integration

RANDOM_ID = "0123456789abcdef0123456789abcdef"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def other_key(service_redis) -> dict[str, str]:
    return bearer(make_key(SERVICE_REDIS_URL, "someone-else"))


@pytest.fixture(scope="module")
def admin_key(service_redis) -> dict[str, str]:
    return bearer(make_key(SERVICE_REDIS_URL, "the-admin", admin=True))


@pytest.fixture(scope="module")
def made(api, tiny_worker) -> dict:
    """A finished job of the `api` client's key, with its embedding. With no margin asked for,
    tiny-llama rebuilds "hi" in a few steps, so the job stops early, between two progress writes
    (PROTOTOK_PROGRESS_EVERY=5). (A random model's logits are too flat to reach the tuned 1-nat
    margin: with it, the job would run its whole budget.)"""
    r = api.http.post("/v1/encode", json={"text": "hi", "options": {"max_steps": 50, "seeds": 1, "margin": 0,
                                                                       "storage": "float32"}})
    assert r.status_code == 202, r.text
    done = wait_job(api, r.json()["job_id"], 300, tiny_worker)
    assert done["status"] == "finished", done
    return done


# --- keys -------------------------------------------------------------------------------------

V1_CALLS = [("post", "/v1/encode", {"json": {"text": "hi"}}), ("get", f"/v1/jobs/{RANDOM_ID}", {}),
            ("get", f"/v1/embeddings/{RANDOM_ID}", {}), ("get", f"/v1/embeddings/{RANDOM_ID}/text", {}),
            ("delete", f"/v1/embeddings/{RANDOM_ID}", {}),
            ("post", "/v1/decode", {"json": {"e": [0.1] * 32, "m": [0.1] * 32, "length": 3}})]


@pytest.mark.parametrize("method,path,kwargs", V1_CALLS)
def test_v1_routes_need_a_valid_key(api, method, path, kwargs):
    send = getattr(api.http, method)
    for headers, challenge in (({"Authorization": ""}, "Bearer"),
                               ({"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer"),
                               (bearer("ptk_" + "A" * 43), 'Bearer error="invalid_token"'),
                               (bearer("not-even-a-key"), 'Bearer error="invalid_token"')):
        r = send(path, headers=headers, **kwargs)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["code"] == "unauthorized" and r.headers["www-authenticate"] == challenge


def test_health_metrics_and_docs_stay_open(api):
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/"):
        r = api.http.get(path, headers={"Authorization": ""})
        assert r.status_code != 401, (path, r.text)
    assert api.http.get("/healthz", headers={"Authorization": ""}).status_code == 200
    spec = api.http.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert all(op.get("security") for path, ops in spec["paths"].items() if path.startswith("/v1")
               for op in ops.values())


@pytest.fixture
def cli(monkeypatch):
    """`prototok ...` in process, on the test Redis (a subprocess pays seconds for importing torch)."""
    from typer.testing import CliRunner

    from prototok.cli import app
    from service.settings import clear_cache

    monkeypatch.setenv("PROTOTOK_REDIS_URL", SERVICE_REDIS_URL)
    clear_cache()
    yield lambda *args: CliRunner().invoke(app, list(args))
    clear_cache()


def test_keys_cli_create_list_revoke(api, service_redis, cli):
    made = cli("keys", "create", "cli-user")
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert made.stdout == key + "\n" and re.fullmatch(r"ptk_[A-Za-z0-9_-]{43}", key)
    assert key.encode() not in b"".join(service_redis.hvals("prototok:keys"))  # stored hashed only
    assert api.http.get(f"/v1/jobs/{RANDOM_ID}", headers=bearer(key)).status_code == 404  # works
    admin = cli("keys", "create", "cli-admin", "--admin")
    assert admin.exit_code == 0 and admin.stdout.startswith("ptk_")
    listed = cli("keys", "list")
    assert "cli-user\tuser\t" in listed.stdout and "cli-admin\tadmin\t" in listed.stdout
    assert key not in listed.stdout and admin.stdout.strip() not in listed.stdout
    roles = {k["name"]: k["admin"] for k in json.loads(cli("keys", "list", "--json").stdout)}
    assert roles["cli-user"] is False and roles["cli-admin"] is True
    again = cli("keys", "create", "cli-user")
    assert again.exit_code == 2 and again.stdout == "" and "exists" in again.stderr
    assert cli("keys", "revoke", "cli-user").exit_code == 0
    r = api.http.get(f"/v1/jobs/{RANDOM_ID}", headers=bearer(key))
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"  # at once
    assert cli("keys", "revoke", "cli-user").exit_code == 2
    bad = cli("keys", "create", "no spaces please")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.output


def test_keys_cli_prints_the_key_alone_and_skips_the_web_stack(service_redis):
    """A real process: stdout is the key and nothing else, and FastAPI was never imported."""
    code = ("import sys; from prototok.cli import app; app(['keys', 'create', 'bare-stdout'], standalone_mode=False); "
            "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, env=service_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"ptk_[A-Za-z0-9_-]{43}\n", out.stdout) and out.stderr.strip().splitlines()[-1] == "[]"


# --- ownership --------------------------------------------------------------------------------

def same_404(r, code: str, some_id: str, random: dict) -> None:
    """A 404 that reads exactly like the one for an id that never existed."""
    assert r.status_code == 404 and r.json()["code"] == code, r.text
    assert r.json()["message"].replace(some_id, RANDOM_ID) == random["message"]


def test_other_keys_get_404_exactly_as_for_no_such_id(api, made, other_key):
    job_id, emb_id = made["job_id"], made["embedding_ids"][0]
    no_job = api.http.get(f"/v1/jobs/{RANDOM_ID}", headers=other_key).json()
    same_404(api.http.get(f"/v1/jobs/{job_id}", headers=other_key), "job_not_found", job_id, no_job)
    for method, suffix in (("get", ""), ("get", "/text"), ("delete", "")):
        no_emb = getattr(api.http, method)(f"/v1/embeddings/{RANDOM_ID}{suffix}", headers=other_key).json()
        r = getattr(api.http, method)(f"/v1/embeddings/{emb_id}{suffix}", headers=other_key)
        same_404(r, "embedding_not_found", emb_id, no_emb)
    assert api.http.get(f"/v1/embeddings/{emb_id}/text").json()["text"] == "hi"  # still there


def test_admin_key_sees_and_deletes_everything(api, tiny_worker, admin_key):
    done = wait_job(api, api.http.post("/v1/encode", json={"text": "for the admin", "options": {"max_steps": 3}})
                    .json()["job_id"], 300, tiny_worker)
    emb_id = done["embedding_ids"][0]
    assert api.http.get(f"/v1/jobs/{done['job_id']}", headers=admin_key).json()["status"] == "finished"
    assert api.http.get(f"/v1/embeddings/{emb_id}/text", headers=admin_key).json()["text"] == "for the admin"
    assert api.http.delete(f"/v1/embeddings/{emb_id}", headers=admin_key).status_code == 204
    assert api.http.get(f"/v1/embeddings/{emb_id}").status_code == 404
    job = api.http.get(f"/v1/jobs/{done['job_id']}").json()
    assert job["status"] == "finished" and job["embedding_ids"] == []  # a deleted embedding is not listed


def test_final_progress_step_is_recorded(api, made):
    """The job stops when the text is rebuilt, between two progress writes: the last step counts."""
    emb = api.http.get(f"/v1/embeddings/{made['embedding_ids'][0]}").json()
    assert emb["accuracy"] == 1.0 and 1 < emb["steps"] < 50 and emb["steps"] % 5, emb
    assert made["progress"]["step"] == emb["steps"]


# --- ids --------------------------------------------------------------------------------------

ODD_IDS = ["a.b", "*", "%00", "%20", "a%20b", "..", "%2e%2e", "f" * 2000, RANDOM_ID.upper(), RANDOM_ID + "0",
           "%C3%A9", "%FF"]


def test_odd_ids_are_404_and_the_connection_stays_usable(api):
    """One keep-alive connection (the app under uvicorn): each odd id is a clean 404, and the next request on it works."""
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    headers = {"Authorization": api.http.headers["Authorization"]}
    try:
        for odd in ODD_IDS:
            for path, code in ((f"/v1/jobs/{odd}", "job_not_found"), (f"/v1/embeddings/{odd}", "embedding_not_found"),
                               (f"/v1/embeddings/{odd}/text", "embedding_not_found")):
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                body = json.loads(r.read())
                assert r.status == 404 and body["code"] in (code, "not_found"), (path, body)
                if odd not in ("..", "%2e%2e"):  # those change the path itself: no route, `not_found`
                    assert body["code"] == code, (path, body)
                conn.request("GET", "/healthz")
                ok = conn.getresponse()
                assert ok.status == 200 and json.loads(ok.read()) == {"status": "ok"}
    finally:
        conn.close()
    assert "Traceback" not in api.log.read_text(errors="replace")


# --- strict bodies ----------------------------------------------------------------------------

@pytest.mark.parametrize("path,body,code", [
    ("/v1/encode", {"text": "a", "options": {"sink": 0.0}}, "invalid_request"),
    ("/v1/encode", {"text": "a", "options": {"sink": "yes"}}, "invalid_request"),
    ("/v1/encode", {"text": "a", "options": {"max_steps": 5.5}}, "invalid_request"),
    ("/v1/encode", {"text": "a", "options": {"max_steps": True}}, "invalid_request"),
    ("/v1/encode", {"text": "a", "options": {"max_steps": "5"}}, "invalid_request"),
    ("/v1/encode", {"text": "a", "options": {"lr": True}}, "invalid_request"),
    ("/v1/encode", {"text": "a", "options": {"seed": 2**40}}, "invalid_request"),
    ("/v1/encode", {"text": "\ud800"}, "invalid_request"),  # a lone surrogate: no tokenizer takes it
    ("/v1/decode", {"e": [True] + [0.1] * 31, "m": [0.1] * 32, "length": 3}, "bad_vectors"),
    ("/v1/decode", {"e": [0.1] * 32, "m": [0.1] * 32, "length": 3, "sink": 0.0}, "invalid_request"),
    ("/v1/decode", {"e": [0.1] * 32, "m": [0.1] * 32, "length": 3.5}, "invalid_request"),
    ("/v1/decode", {"e": [0.1] * 32, "m": [0.1] * 32, "length": True}, "invalid_request"),
    ("/v1/decode", {"e": [0.1] * 32, "m": [0.1] * 32, "length": [float("inf")]}, "invalid_request"),
])
def test_lax_coercions_are_refused(api, path, body, code):
    r = api.http.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == code, r.text


BASE_BODIES = {"/v1/encode": {"text": "a"},
               "/v1/decode": {"model": "tiny-llama", "e": [[0.1] * 32], "m": [[0.1] * 32], "length": 3}}
INTEGER_FIELDS = {("/v1/encode", "options", name) for name in ("max_steps", "seeds", "seed", "group_size",
                                                               "chunk_tokens", "rank")} | {
    ("/v1/decode", "length"), ("/v1/decode", "length", 0)}


def integer_fields(schema: dict, spec: dict, at: tuple = ()) -> dict[tuple, dict]:
    """Where in a request body the OpenAPI document says `type: integer`, with that schema ($refs
    followed; an index 0 stands for any item of an array)."""
    if "$ref" in schema:
        return integer_fields(spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]], spec, at)
    found = {at: schema} if schema.get("type") == "integer" else {}
    for alternative in schema.get("anyOf", []) + schema.get("oneOf", []):
        found |= integer_fields(alternative, spec, at)
    for name, prop in schema.get("properties", {}).items():
        found |= integer_fields(prop, spec, (*at, name))
    if "items" in schema:
        found |= integer_fields(schema["items"], spec, (*at, 0))
    return found


def request_integer_fields(spec: dict) -> dict[tuple, dict]:
    """(route, *place in its JSON body) -> schema, for every integer field of every request body."""
    found = {}
    for route, ops in spec["paths"].items():
        for op in ops.values():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                found |= {(route, *at): schema for at, schema in integer_fields(body["schema"], spec).items()}
    return found


def with_value(body: dict, at: tuple, value: object) -> dict:
    """A copy of body with `value` at the place `at` (lists and objects made on the way)."""
    body = json.loads(json.dumps(body))
    *parents, last = at
    node = body
    for key, following in zip(parents, [*parents[1:], last]):
        if isinstance(node, dict) and not isinstance(node.get(key), (dict, list)):
            node[key] = [] if isinstance(following, int) else {}
        node = node[key]
    if isinstance(node, list):
        node[:] = [value]
    else:
        node[last] = value
    return body


def test_the_openapi_document_types_every_integer_field_of_a_request_as_integer(api):
    """Each is `type: integer` (never `number`), which in JSON Schema admits 5.0 as well as 5, and
    its limits are JSON Schema's `minimum`/`maximum` (not pydantic's names for them)."""
    fields = request_integer_fields(api.app.openapi())
    assert set(fields) == INTEGER_FIELDS
    for at, schema in fields.items():
        assert schema["type"] == "integer" and "minimum" in schema, (at, schema)
        assert not {"ge", "le", "gt", "lt"} & set(schema), (at, schema)


def test_every_integer_field_takes_a_whole_number_float_as_its_schema_says(api, tiny_worker):
    """What the OpenAPI document says `integer` takes 5.0 as 5 (a client whose JSON writes numbers
    as floats sends that); 5.5 is refused. Jobs go to a queue no worker reads, and are canceled."""
    fields = request_integer_fields(api.app.openapi())
    with api.configured(PROTOTOK_QUEUE_NAME="prototok-integers"):
        for (route, *at), schema in sorted(fields.items(), key=str):
            value = max(schema.get("minimum", 1), 1)
            r = api.http.post(route, json=with_value(BASE_BODIES[route], tuple(at), float(value)))
            assert r.status_code in (200, 202), (route, at, r.text)
            if route == "/v1/decode":
                assert r.json()["length"] == value, r.text
            else:
                assert api.http.delete(f"/v1/jobs/{r.json()['job_id']}").json()["error_code"] == "canceled"
            r = api.http.post(route, json=with_value(BASE_BODIES[route], tuple(at), value + 0.5))
            assert r.status_code == 422 and r.json()["code"] == "invalid_request", (route, at, r.text)


@pytest.mark.parametrize("path", ["/v1/encode", "/v1/decode"])
@pytest.mark.parametrize("raw", [b'{"text": "caf\xe9"}', b'\xff\xfe{"text": "a"}',
                                 b'{"text": ' + b"[" * 20000 + b"]" * 20000 + b"}",
                                 b'{"e": ' + b"[" * 20000 + b"]" * 20000 + b"}"])
def test_undecodable_json_is_malformed_json(api, path, raw):
    r = api.http.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "malformed_json", r.text[:300]


def test_redis_down_is_a_503_that_does_not_name_the_host():
    """In process (TestClient): the API pointed at a port where nothing listens."""
    from fastapi.testclient import TestClient

    from app.deps import settings_dep
    from app.main import app
    from service.settings import ServiceSettings

    app.dependency_overrides[settings_dep] = lambda: ServiceSettings(redis_url="redis://127.0.0.1:9/0")
    try:
        client = TestClient(app, raise_server_exceptions=False)
        for path in (f"/v1/jobs/{RANDOM_ID}", "/readyz"):
            r = client.get(path, headers=bearer("ptk_" + "B" * 43))
            assert r.status_code == 503 and r.json()["code"] in ("redis_unavailable", "not_ready"), r.text
            assert "127.0.0.1" not in r.text and ":9" not in r.text
    finally:
        app.dependency_overrides.clear()


# --- models the API decodes with -------------------------------------------------------------

def neox_encoding():
    """A stored-form encoding made with tiny-gpt-neox, a model the module's API is not configured for."""
    from prototok import EncodeConfig, encode_texts, load_model
    from prototok.recipe import TUNED

    [enc] = encode_texts(load_model("tiny-gpt-neox"), ["neox"], EncodeConfig(recipe=TUNED.with_(max_steps=2, seeds=1)))
    return enc


def refused_unknown(r, what: str) -> None:
    assert r.status_code == 404 and r.json()["code"] == "unknown_model", (what, r.text)
    assert r.json()["message"].endswith("this service decodes with: tiny-llama"), (what, r.text)


def test_the_api_decodes_only_with_the_models_its_operator_configured(api, service_redis):
    """PROTOTOK_MODEL is tiny-llama and PROTOTOK_API_DECODE_MODELS is empty: a decode with any
    other model is 404 `unknown_model` before a model loads or a decode lane starts, whether a
    worker seems to serve it (an announcement anyone who can write to Redis can make), an upload or
    a stored encoding names it (a stored one can name any path, for the same reason), or it is
    built in (SmolLM2). Configured in PROTOTOK_API_DECODE_MODELS, the same encoding decodes."""
    from service.queues import announce, withdraw
    from service.store import EncodingStore

    enc = neox_encoding()
    emb_id = EncodingStore(service_redis).put(enc, owner=api.key_name)
    upload = {"content": enc.to_bytes(), "headers": {"content-type": "application/octet-stream"}}
    vectors = {"e": [0.1] * 32, "m": [0.1] * 32, "length": 3}
    announce(service_redis, "tiny-gpt-neox", "planted", ttl_s=300)
    try:
        refused_unknown(api.http.post("/v1/decode", json={**vectors, "model": "tiny-gpt-neox"}), "served")
    finally:
        withdraw(service_redis, "tiny-gpt-neox", "planted")
    refused_unknown(api.http.post("/v1/decode", **upload), "upload")
    refused_unknown(api.http.get(f"/v1/embeddings/{emb_id}/text"), "stored")
    refused_unknown(api.http.post("/v1/decode", json={**vectors, "model": "smollm2-135m-instruct"}), "built in")
    assert not {"tiny-gpt-neox", "smollm2-135m-instruct"} & set(api.decoder.lanes)
    with api.configured(PROTOTOK_API_DECODE_MODELS='["tiny-gpt-neox"]'):
        r = api.http.get(f"/v1/embeddings/{emb_id}/text")
        assert r.status_code == 200 and r.json()["text"] == "neox", r.text
        r = api.http.post("/v1/decode", **upload)
        assert r.status_code == 200 and r.json()["text"] == "neox", r.text


# --- quotas -----------------------------------------------------------------------------------

@pytest.fixture
def strict_api(service_logs, tiny_worker):
    """Low limits, and a queue of its own that no worker reads: its jobs stay queued."""
    server = LocalApi(service_logs / "api-quotas.log", PROTOTOK_RATE_LIMIT_PER_S="5", PROTOTOK_MAX_JOBS_PER_KEY="2",
                      PROTOTOK_MAX_ENCODE_BUDGET="100000", PROTOTOK_QUEUE_NAME="prototok-quota")
    yield server
    server.close()


def test_request_rate_per_key(strict_api, other_key):
    time.sleep(1 - time.time() % 1)  # start a fresh one-second window
    codes = [strict_api.http.get(f"/v1/jobs/{RANDOM_ID}") for _ in range(12)]
    limited = [r for r in codes if r.status_code == 429]
    assert [r.status_code for r in codes[:5]] == [404] * 5 and limited, [r.status_code for r in codes]
    assert limited[0].json()["code"] == "rate_limited" and int(limited[0].headers["retry-after"]) >= 1
    assert "PROTOTOK_RATE_LIMIT_PER_S" in limited[0].json()["message"]
    assert strict_api.http.get(f"/v1/jobs/{RANDOM_ID}", headers=other_key).status_code == 404  # another key: own count
    time.sleep(1.1)
    assert strict_api.http.get(f"/v1/jobs/{RANDOM_ID}").status_code == 404


def test_jobs_at_once_per_key_and_queue_position(strict_api, other_key, service_redis):
    from rq.job import Job, JobStatus

    from service.durations import record_encode

    time.sleep(1.05)  # a fresh rate window
    record_encode(service_redis, 2.0, model="tiny-llama")  # so that an ETA can be given
    first, second = (strict_api.http.post("/v1/encode", json={"text": t, "options": {"max_steps": 10}})
                     for t in ("one", "two"))
    assert first.status_code == second.status_code == 202, second.text
    third = strict_api.http.post("/v1/encode", json={"text": "three", "options": {"max_steps": 10}})
    assert third.status_code == 429 and third.json()["code"] == "too_many_jobs", third.text
    assert "PROTOTOK_MAX_JOBS_PER_KEY" in third.json()["message"] and third.headers["retry-after"]
    time.sleep(1.05)
    views = [strict_api.http.get(f"/v1/jobs/{r.json()['job_id']}").json() for r in (first, second)]
    assert [v["status"] for v in views] == ["queued", "queued"]
    assert views[1]["queue_position"] == views[0]["queue_position"] + 1
    assert 0 < views[0]["eta_s"] < views[1]["eta_s"], views
    theirs = strict_api.http.post("/v1/encode", json={"text": "theirs", "options": {"max_steps": 10}},
                                  headers=other_key)
    assert theirs.status_code == 202, theirs.text  # the limit is per key
    # a job that ends frees its place; RQ's own status write, which reads nothing back (any serializer)
    Job(first.json()["job_id"], connection=service_redis).set_status(JobStatus.CANCELED)
    time.sleep(1.05)
    again = strict_api.http.post("/v1/encode", json={"text": "three", "options": {"max_steps": 10}})
    assert again.status_code == 202, again.text


def test_encode_budget_is_checked_before_queueing(strict_api, service_redis):
    time.sleep(1.05)
    queued = service_redis.llen("rq:queue:prototok-quota:tiny-llama")
    # 30 bytes x 1000 steps x 4 seeds = 120,000 token-steps > 100,000
    r = strict_api.http.post("/v1/encode", json={"text": "x" * 30, "options": {"max_steps": 1000, "seeds": 4}})
    assert r.status_code == 413 and r.json()["code"] == "encode_budget_exceeded", r.text
    assert "120,000" in r.json()["message"] and "PROTOTOK_MAX_ENCODE_BUDGET" in r.json()["message"]
    r = strict_api.http.post("/v1/encode", json={"texts": ["é" * 10, "b" * 10], "options": {"max_steps": 2000,
                                                                                          "seeds": 2}})
    assert r.status_code == 413, r.text  # (20 + 10 bytes) x 2000 x 2; UTF-8 bytes, not characters
    assert service_redis.llen("rq:queue:prototok-quota:tiny-llama") == queued


def test_auth_off_is_an_open_sandbox(service_redis, tiny_worker, monkeypatch):
    """PROTOTOK_AUTH=off: no key needed; everything made is visible to every caller. In process."""
    from fastapi.testclient import TestClient

    from app.deps import settings_dep
    from app.main import app
    from service.settings import ServiceSettings

    monkeypatch.setenv("PROTOTOK_AUTH", "off")
    assert ServiceSettings().auth is False

    app.dependency_overrides[settings_dep] = lambda: ServiceSettings(redis_url=SERVICE_REDIS_URL, auth=False,
                                                              model="tiny-llama")
    try:
        client = TestClient(app, raise_server_exceptions=False)
        r = client.post("/v1/encode", json={"text": "open", "options": {"max_steps": 2}})
        assert r.status_code == 202, r.text
        assert client.get(f"/v1/jobs/{r.json()['job_id']}").status_code == 200
        assert client.get(f"/v1/jobs/{RANDOM_ID}").json()["code"] == "job_not_found"
    finally:
        app.dependency_overrides.clear()
