"""Which layer loads what, each checked in a fresh interpreter (this test process has imported
everything already).

A GPU worker imports the shared layer (`service/`) and the core, never the web stack: FastAPI,
Starlette, uvicorn and the API package (`app/`) stay out of it, and so does prometheus_client
(only the API serves /metrics). The core and its CLI import no service package at all, so that
`pip install prototok` (without the [service] extra) runs them.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

WEB = ("fastapi", "starlette", "uvicorn", "prometheus_client", "app")
SERVICE = (*WEB, "rq", "redis", "service", "worker")


def loaded_after(imports: str, watched: tuple[str, ...]) -> list[str]:
    """Those of `watched` in sys.modules after `imports` ran in a new interpreter."""
    code = f"import sys\n{imports}\nprint(__import__('json').dumps(sorted(m for m in {watched!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                         check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_worker_loads_no_web_stack():
    imports = ("import worker.__main__, worker.jobs, worker.progress, worker.retry, worker.runner\n"
               "import service.cancel, service.durations, service.errors, service.keys, service.queues, "
               "service.quotas, service.safejob, service.store")
    assert loaded_after(imports, WEB) == []


def test_the_core_and_its_cli_load_no_service_package():
    assert loaded_after("import prototok, prototok.cli, prototok.client", SERVICE) == []
