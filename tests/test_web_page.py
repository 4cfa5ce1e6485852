"""The web page at `/`, in a real browser: Debian's Chromium driven by Playwright, against the
API (uvicorn on a thread of this process), the real Redis and a tiny-llama worker on a thread. Skips with one line when no browser is installed
(scripts/install.sh installs it where apt works as root)."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pytest
from conftest import wait_for

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TEXT = "A page shows it:  two spaces,\nand a new line."
STEPS = 800


def browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests need Playwright (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"browser tests need {CHROMIUM} (Debian's chromium; scripts/install.sh installs it as root)"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a fresh profile; only 127.0.0.1 servers are opened."""
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1000, "height": 1300}, accept_downloads=True)
        yield context
        context.close()


def test_page_and_its_files_are_served_without_a_key(api):
    page = api.http.get("/", headers={"Authorization": ""})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="/static/app.js"' in page.text and 'href="/static/style.css"' in page.text
    for path, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        r = api.http.get(path, headers={"Authorization": ""})
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert not re.search(r"https?://", r.text), f"{path} must load nothing from elsewhere"
    assert not re.search(r"(src|href)=\"https?://", page.text)
    assert "/" not in api.http.get("/openapi.json").json()["paths"]  # the page is not part of the API


def test_submit_watch_the_progress_rebuild_and_download(browser, api, tiny_worker, api_key, api_headers):
    page = browser.new_page()
    problems, requests = [], []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and problems.append(msg.text))
    page.on("request", lambda request: requests.append(request))
    page.goto(f"{api.url}/")
    page.wait_for_function("document.querySelector('#ready').textContent.includes('tiny-llama')")
    key = api_key or "sent-even-where-the-server-needs-none"
    page.fill("#key", key)
    page.fill("#text", TEXT)
    page.fill("#max-steps", str(STEPS))
    page.fill("#seeds", "2")
    page.select_option("#storage", "int8")  # a smaller encoding: the page shows what it weighs
    page.click("#submit")

    steps, deadline = set(), time.monotonic() + 240
    while page.text_content("#status") != "finished":
        assert time.monotonic() < deadline and page.text_content("#status") != "failed", page.text_content("#error")
        steps.add(int(page.text_content("#step")))
        time.sleep(0.05)
    assert len(steps - {0, STEPS}) >= 2, f"the page should show progress moving, saw steps {sorted(steps)}"
    assert int(page.get_attribute("#chart", "data-points")) >= 2
    assert "".join(page.locator("#strip span").all_text_contents()) == TEXT.replace("\n", "↵\n")

    page.wait_for_selector("#result:not([hidden])")
    emb_id = page.locator("#facts td").nth(1).text_content()
    emb = api.http.get(f"/v1/embeddings/{emb_id}", headers=api_headers).json()
    assert int(page.get_attribute("#strip", "data-right")) == emb["c_tokens"]  # the strip ends where the encoding did
    assert emb["storage"] == "int8" and "vectors, int8" in page.text_content("#sizes")
    assert "text, zstd" in page.text_content("#sizes") and "bits per character" in page.text_content("#sizes")
    page.click("#rebuild")
    page.wait_for_selector("#rebuilt:not([hidden])")
    assert page.text_content("#rebuilt") == TEXT
    assert page.text_content("#exact") == "exactly the text submitted" and float(page.text_content("#decode-ms")) > 0

    with page.expect_download() as download:
        page.click("#download")
    blob = Path(download.value.path()).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == emb["sha256"]

    # dropping that .safetensors file on the text box decodes it on the server
    page.evaluate("""async (href) => {
        const blob = await (await fetch(href)).blob();
        const drop = new DataTransfer();
        drop.items.add(new File([blob], "dropped.safetensors"));
        document.querySelector('#rebuilt').hidden = true;
        document.querySelector('#text').dispatchEvent(new DragEvent('drop', {dataTransfer: drop}));
    }""", page.get_attribute("#download", "href"))
    page.wait_for_selector("#rebuilt:not([hidden])")
    assert page.text_content("#rebuilt") == TEXT

    encode = next(r for r in requests if r.url.endswith("/v1/encode"))
    assert encode.all_headers()["authorization"] == f"Bearer {key}"
    assert encode.post_data_json["options"] == {"max_steps": STEPS, "seeds": 2, "storage": "int8"}  # no model_m: off
    assert all(r.url.startswith((api.url, "blob:", "data:")) for r in requests), [r.url for r in requests]
    assert problems == []
    page.reload()
    assert page.input_value("#key") == key  # kept in this browser's localStorage
    page.close()


def test_the_default_request_leaves_steps_and_restarts_to_the_recipe(browser, api):
    """Max steps, restarts and learning rate start empty, the recipe's values as their placeholders
    (following the recipe chosen), and an empty field is not sent: the server's recipe applies. The
    request is caught in the browser, so nothing is queued."""
    from prototok.recipe import PAPER, TUNED

    page = browser.new_page()
    sent = []

    def catch(route) -> None:
        sent.append(route.request.post_data_json)
        route.fulfill(status=503, content_type="application/json",
                      body='{"code": "caught", "message": "caught by the test"}')

    page.route("**/v1/encode", catch)
    page.goto(f"{api.url}/")
    fields = ("#max-steps", "#seeds", "#lr")
    assert [page.input_value(f) for f in fields] == ["", "", ""]
    assert [page.get_attribute(f, "placeholder") for f in fields] == [
        f"{TUNED.max_steps} (tuned)", f"{TUNED.seeds} (tuned)", f"{TUNED.lr:g} (tuned)"]
    page.fill("#text", TEXT)
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert sent == [{"text": TEXT, "options": {}}]
    page.select_option("#recipe", "paper")
    assert [page.get_attribute(f, "placeholder") for f in fields] == [
        f"{PAPER.max_steps} (paper)", f"{PAPER.seeds} (paper)", f"{PAPER.lr:g} (paper)"]
    page.select_option("#start", "encoder")  # the start select sends its value as the API's `start`
    page.click("#submit")
    for _ in range(100):
        if len(sent) == 2:
            break
        page.wait_for_timeout(50)
    assert sent[1] == {"text": TEXT, "options": {"recipe": "paper", "start": "encoder"}}
    page.close()


def test_the_shared_m_box_sends_model_m_and_the_result_holds_e_alone(browser, api, tiny_worker, service_redis,
                                                                    api_key, api_headers, tmp_path):
    """The box is off by default; ticked, the request says "model_m": true. Without a start for the
    model on the worker's host the page shows the API's 409; with one, the job stores e alone, which
    the page says, and the text rebuilds."""
    from prototok import load_model
    from prototok.recipe import TUNED
    from prototok.start_training import train_start
    from prototok.starts import candidates, m_digest, write_start
    from service.queues import worker_starts

    text = "e alone, m shared"
    with api.configured(PROTOTOK_CACHE_DIR=str(tmp_path)):
        wait_for(lambda: worker_starts(service_redis, "tiny-llama") == [""], 30, "the worker to announce no start")
        page = browser.new_page()
        requests = []
        page.on("request", lambda request: requests.append(request))
        page.goto(f"{api.url}/")
        page.wait_for_function("document.querySelector('#ready').textContent.includes('tiny-llama')")
        assert not page.is_checked("#model-m")
        page.fill("#key", api_key or "sent-even-where-the-server-needs-none")
        page.fill("#text", text)
        page.fill("#max-steps", "300")
        page.check("#model-m")
        page.click("#submit")
        page.wait_for_selector("#error:not([hidden])")
        assert page.text_content("#error").startswith("[model_m_missing] model_m: no worker serving model 'tiny-llama'")

        lm = load_model("tiny-llama")
        e, m, how = train_start(lm, [[5, 9, 13, 2, 7], [3, 3, 8, 1, 4]], 2,
                                TUNED.with_(max_steps=2, warmup_steps=1, margin=0.0))
        write_start(candidates(lm)[0], lm, e, m, **how)
        wait_for(lambda: worker_starts(service_redis, "tiny-llama") == [m_digest(m)], 30,
                 "the worker to announce its start")
        page.click("#submit")
        page.wait_for_function("['finished', 'failed'].includes(document.querySelector('#status').textContent)",
                               timeout=240_000)
        assert page.text_content("#status") == "finished", page.text_content("#error")
        refused, accepted = [r for r in requests if r.url.endswith("/v1/encode")]
        assert refused.post_data_json["options"]["model_m"] is accepted.post_data_json["options"]["model_m"] is True

        page.wait_for_selector("#result:not([hidden])")
        emb_id = page.locator("#facts td").nth(1).text_content()
        emb = api.http.get(f"/v1/embeddings/{emb_id}", headers=api_headers).json()
        assert emb["m_ref"]["sha256"] == m_digest(m) and set(emb["vectors"]) == {"e"}
        facts = page.text_content("#facts")
        assert f"{len(emb['lengths'])} (e per chunk" in facts and "the model's shared m" in facts
        page.click("#rebuild")
        page.wait_for_selector("#rebuilt:not([hidden])")
        assert page.text_content("#rebuilt") == text
        page.close()


DROPPED = "\ufeffWindows notes\r\nline two\r\n\ttab, trailing  \r\n"


def drop_file(page, name: str, content: bytes) -> None:
    page.evaluate("""([name, bytes]) => {
        const drop = new DataTransfer();
        drop.items.add(new File([new Uint8Array(bytes)], name));
        document.querySelector('#text').dispatchEvent(new DragEvent('drop', {dataTransfer: drop}));
    }""", [name, list(content)])


def test_a_dropped_text_file_is_encoded_byte_for_byte(browser, api, tiny_worker, api_key, api_headers):
    """A textarea's value turns CRLF into LF (and File.text() drops a BOM): the page sends the
    file's own text, and the text rebuilt from the encoding is those bytes."""
    page = browser.new_page()
    requests = []
    page.on("request", lambda request: requests.append(request))
    page.goto(f"{api.url}/")
    page.wait_for_function("document.querySelector('#ready').textContent.includes('tiny-llama')")
    page.fill("#key", api_key or "sent-even-where-the-server-needs-none")
    drop_file(page, "notes.txt", b"caf\xe9 in latin-1")
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error") == "[invalid_input] notes.txt is not UTF-8 text"

    drop_file(page, "notes.txt", DROPPED.encode())
    page.wait_for_selector("#dropped:not([hidden])")
    assert "\r" not in page.input_value("#text")  # what the box shows is not what is sent
    assert f"Sending notes.txt byte for byte ({len(DROPPED.encode())} bytes)" in page.text_content("#dropped")
    page.fill("#max-steps", "5")
    page.click("#submit")
    page.wait_for_function("['finished', 'failed'].includes(document.querySelector('#status').textContent)",
                           timeout=240_000)
    assert page.text_content("#status") == "finished", page.text_content("#error")
    encode = next(r for r in requests if r.url.endswith("/v1/encode"))
    assert encode.post_data_json["text"] == DROPPED
    page.wait_for_selector("#result:not([hidden])")
    emb_id = page.locator("#facts td").nth(1).text_content()
    rebuilt = api.http.get(f"/v1/embeddings/{emb_id}/text", headers=api_headers).json()["text"]
    assert rebuilt.encode() == DROPPED.encode()
    page.click("#rebuild")
    page.wait_for_selector("#rebuilt:not([hidden])")
    assert page.text_content("#exact") == "exactly the text submitted"

    page.fill("#text", "typed over the dropped file")  # an edit: the box is what is sent now
    assert page.is_hidden("#dropped")
    with page.expect_request(lambda r: r.url.endswith("/v1/encode")) as sent:
        page.click("#submit")
    assert sent.value.post_data_json["text"] == "typed over the dropped file"
    page.close()
