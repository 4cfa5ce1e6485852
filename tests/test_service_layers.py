"""Which layer loads what, each checked in a fresh interpreter (this test process has imported
everything already).

A GPU worker imports the shared layer (`service/`) and the core, never the web stack: FastAPI,
Starlette, uvicorn and the API package (`app/`) stay out of it, and so does prometheus_client
(only the API serves /metrics). The core and its CLI import no service package at all, so that
`pip install prototok` (without the [service] extra) runs them. The API's decode process
(app/decode_process.py) starts without the web stack too: it only runs forward passes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

WEB = ("fastapi", "starlette", "uvicorn", "prometheus_client", "app")
SERVICE = (*WEB, "rq", "redis", "service", "worker")
WORKER_IMPORTS = ("import worker.__main__, worker.jobs, worker.progress, worker.retry, worker.runner\n"
                  "import service.cancel, service.durations, service.errors, service.keys, service.queues, "
                  "service.quotas, service.safejob, service.store")
CHECKS = {  # name: (what a fresh interpreter imports, the modules that must not be loaded after it)
    "worker": (WORKER_IMPORTS, WEB),
    "core": ("import prototok, prototok.cli, prototok.client", SERVICE),
    "decode process": ("import app.decode_process", ("fastapi", "starlette", "uvicorn", "prometheus_client")),
}


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    """For each check, those of its modules in sys.modules after its imports, in a new interpreter
    (all at once: each imports torch, which takes seconds)."""
    procs = {}
    for name, (imports, watched) in CHECKS.items():
        code = f"import sys\n{imports}\nprint(__import__('json').dumps(sorted(m for m in {watched!r} if m in sys.modules)))"
        procs[name] = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    found = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-4000:]
        found[name] = json.loads(out.strip().splitlines()[-1])
    return found


def test_the_worker_loads_no_web_stack(loaded):
    assert loaded["worker"] == []


def test_the_core_and_its_cli_load_no_service_package(loaded):
    assert loaded["core"] == []


def test_the_decode_process_loads_no_web_stack(loaded):
    assert loaded["decode process"] == []
