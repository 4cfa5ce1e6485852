"""The docs: the site builds with `mkdocs build --strict`, the README stays a short front door, and
every `bash` example of the README and of docs/ runs as written.

Each page's examples run in order in one shell (`set -euo pipefail`), in a fresh directory holding
links to the repository's `scripts/` and `.venv/`, against the real Redis (the tests' database), an
API and a worker on tiny-llama started for this module. Two substitutions, documented in
docs/development.md, and nothing else: the embedded SmolLM2 becomes tiny-llama
(`PROTOTOK_MODEL=tiny-llama`, and the name `smollm2-135m-instruct` in an example), so every encode
takes seconds; and `127.0.0.1:8000` / `localhost:8000` / `--port 8000` become the test API's address
(or, on a page that starts its own API, a free port). Servers a page starts in the background end
with its shell. An example that cannot run here is marked `<!-- not run: REASON -->` right above
its fence, with a reason from NOT_RUN.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SERVICE_REDIS_URL, Api, free_port, service_env, start_worker, wait_served

DOCS = REPO / "docs"
README = REPO / "README.md"
NOT_RUN = ("CI runs it", "needs Docker", "needs the network", "needs a GPU")
FENCE = re.compile(r"(?:<!-- not run: (?P<reason>[^>]*?) -->\n)?```(?P<lang>[\w-]*)\n(?P<body>.*?)\n```", re.DOTALL)
QUIET = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}  # banners of mkdocs-material's deps


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def blocks(page: Path) -> list[tuple[str, str | None, str]]:
    """(language, not-run reason or None, body) of each fenced block of a page."""
    return [(m["lang"], m["reason"], m["body"]) for m in FENCE.finditer(page.read_text(encoding="utf-8"))]


def runnable(page: Path) -> list[str]:
    return [body for lang, reason, body in blocks(page) if lang == "bash" and reason is None]


EXAMPLE_PAGES = [p for p in pages() if runnable(p)]


def test_the_site_builds_strictly_offline(tmp_path):
    """A broken link or anchor, or a page left out of the navigation, is a warning, and --strict
    fails on it. The build needs no network: no web fonts, no plugin that downloads."""
    dead = "http://127.0.0.1:9"  # any download would fail
    env = {**os.environ, **QUIET, "HTTPS_PROXY": dead, "HTTP_PROXY": dead, "https_proxy": dead, "http_proxy": dead}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "WARNING -" not in result.stderr, result.stderr[-6000:]
    site = tmp_path / "site"
    assert (site / "service" / "api" / "index.html").read_text(encoding="utf-8").count("/v1/encode") >= 1
    assert (site / "benchmarks" / "results" / "speed" / "index.html").exists()


def test_the_readme_is_a_short_front_door():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 200
    assert lines[0] == "# prototok"
    setup = next(body for lang, _, body in blocks(README) if lang == "bash")
    assert setup.splitlines() == [
        ("bash scripts/demo.sh    # install, start Redis + one RQ worker + the API on the embedded SmolLM2, encode "
        "and decode a real text through the service"),
        ("bash scripts/test.sh    # install and run every test (unit tests on tiny random models, integration on "
        "SmolLM2 + real Redis/RQ/API)")]
    assert text.index(setup) < text.index("\n## ")  # at the top, before any section
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (REPO / target).exists(), f"README links to {target}, which is not there"


def test_every_example_that_is_not_run_says_why():
    for page in pages():
        for lang, reason, _ in blocks(page):
            if reason is not None:
                assert lang == "bash", f"{page}: a not-run marker above a {lang or 'plain'} block"
                assert reason.startswith(NOT_RUN), f"{page}: not run for a reason the tests do not know: {reason!r}"


def test_the_settings_page_lists_every_setting_in_its_layer():
    from prototok.settings import Settings
    from service.settings import ServiceSettings

    page = (DOCS / "service" / "settings.md").read_text(encoding="utf-8")
    core, service = page.split("\n## The core\n")[1].split("\n## The service\n")

    def rows(section: str) -> set[str]:
        return set(re.findall(r"`(PROTOTOK_[A-Z0-9_]+)`", "\n".join(re.findall(r"^\| ([^|]+) \|", section, re.MULTILINE))))

    assert rows(core) == {f"PROTOTOK_{name.upper()}" for name in Settings.model_fields}
    assert rows(service) == {f"PROTOTOK_{name.upper()}" for name in ServiceSettings.model_fields} - rows(core)


# --- the examples, run ---


@pytest.fixture(scope="module")
def docs_api(service_redis, tmp_path_factory):
    """An API and a worker on tiny-llama, as processes, for the pages that use a running service."""
    logs = tmp_path_factory.mktemp("docs-service")
    api = Api(logs / "api.log").start()
    worker = start_worker(logs, "tiny-llama")
    try:
        wait_served(api, "tiny-llama", worker)
        yield api
    finally:
        worker.stop()
        api.close()


def substituted(body: str, port: int) -> str:
    body = body.replace("smollm2-135m-instruct", "tiny-llama")
    for host in ("127.0.0.1", "localhost"):
        body = body.replace(f"{host}:8000", f"{host}:{port}")
    return body.replace("--port 8000", f"--port {port}")


def forget_keys(page: str) -> None:
    """The keys a page creates, revoked first, so that every page can make its own `me`."""
    import redis

    from service.keys import KeyStore

    store = KeyStore(redis.Redis.from_url(SERVICE_REDIS_URL))
    for name in set(re.findall(r"keys create ([\w.@-]+)", page)):
        if name in {k.name for k in store.list()}:
            store.revoke(name)


@pytest.mark.integration
@pytest.mark.parametrize("page", EXAMPLE_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_examples_run_as_written(page, docs_api, tmp_path):
    script = "\n\n".join(runnable(page))
    own_api = "uvicorn app.main:app" in script
    port = free_port() if own_api else docs_api.port
    forget_keys(script)
    for name in ("scripts", ".venv"):
        if (REPO / name).exists():
            (tmp_path / name).symlink_to(REPO / name)
    env = service_env(PROTOTOK_MODEL="tiny-llama", PROTOTOK_CACHE_DIR=str(tmp_path / "cache"), **QUIET)
    env.pop("PROTOTOK_API_KEY", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    shell = ("set -euo pipefail\n"
             "trap 'kill $(jobs -p) 2>/dev/null || true; wait || true' EXIT\n\n" + substituted(script, port))
    (tmp_path / "examples.sh").write_text(shell, encoding="utf-8")
    result = subprocess.run(["bash", "examples.sh"], check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, (f"{page}: the examples failed\n--- script\n{shell}\n--- stdout\n"
                                    f"{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}")
    errors = re.findall(r'\{"code":\s*"[a-z_]+"[^}]*\}', result.stdout)  # curl -s exits 0 on an error answer
    assert errors == [], f"{page}: an example got an error answer: {errors}"
