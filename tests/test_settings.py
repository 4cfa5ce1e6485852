"""Settings in their layer, typed: a PROTOTOK_* value a setting does not take stops each process
at start-up with one line naming the variable and the values it takes, never at a request.

The core's settings (prototok/settings.py) are what the CLI and the library read; the service's
(service/settings.py) add what the API, the workers and `prototok keys` read.
"""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest
from conftest import REPO, service_env

from prototok.recipe import RECIPES
from prototok.settings import DEVICES, Settings, SettingsError, read
from prototok.storage import STORAGES
from service.settings import ServiceSettings

BAD = {  # variable: (a value it does not take, the values the line must name)
    "PROTOTOK_STORAGE": ("int4", STORAGES),
    "PROTOTOK_DTYPE": ("float64", ("auto", "float32", "bfloat16", "float16")),
    "PROTOTOK_DEVICE": ("gpu", DEVICES),
}
PROCESSES = {  # how each process type starts, run from the repository root
    "api": [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "9"],
    "worker": [sys.executable, "-m", "worker"],
    "cli": [sys.executable, "-m", "prototok.cli", "encode", "a text", "--out", "never-written.safetensors"],
    "cli keys": [sys.executable, "-m", "prototok.cli", "keys", "list"],
}
# Which bad values each start gets: the API and the worker (each start imports torch: seconds) all
# three at once, and one line names each; the CLI one at a time. Its core commands read the core's
# settings only: PROTOTOK_STORAGE is the service's default storage, which `prototok keys` reads (as
# do the API and the workers), not `prototok encode`.
CASES = {"api": [tuple(BAD)], "worker": [tuple(BAD)], "cli": [("PROTOTOK_DTYPE",), ("PROTOTOK_DEVICE",)],
         "cli keys": [("PROTOTOK_STORAGE",)]}
STARTS = [(process, names) for process, cases in CASES.items() for names in cases]


def named(var: str) -> str:
    value, allowed = BAD[var]
    return f"{var}={value!r} is not one of: {', '.join(allowed)}"


@pytest.fixture(scope="module")
def started(service_redis) -> dict[tuple[str, tuple[str, ...]], subprocess.CompletedProcess]:
    """Every start at once, each with its bad values."""
    procs = {}
    for process, names in STARTS:
        env = service_env(**{var: BAD[var][0] for var in names})
        procs[process, names] = subprocess.Popen(PROCESSES[process], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE, text=True)
    done = {}
    for case, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        done[case] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


@pytest.mark.parametrize(("process", "names"), STARTS)
def test_a_bad_choice_stops_the_process_at_start_with_one_line(started, process, names):
    result = started[process, names]
    assert result.returncode == 2, result.stderr[-3000:]
    [line] = result.stderr.splitlines()
    assert line.startswith("error: PROTOTOK_")
    for var in names:
        assert named(var) in line


def test_every_bad_value_is_named_in_one_line(monkeypatch):
    monkeypatch.setenv("PROTOTOK_STORAGE", "int4")
    monkeypatch.setenv("PROTOTOK_MAX_JOBS_PER_KEY", "many")
    with pytest.raises(SettingsError) as caught:
        read(ServiceSettings)
    message = str(caught.value)
    assert "\n" not in message
    assert "PROTOTOK_STORAGE='int4' is not one of: float32, float16, bfloat16, int8" in message
    assert "PROTOTOK_MAX_JOBS_PER_KEY='many' is not valid: Input should be a valid integer" in message
    monkeypatch.setenv("PROTOTOK_API_DECODE_MODELS", "smollm2")  # a list variable must be JSON
    with pytest.raises(SettingsError, match="PROTOTOK_API_DECODE_MODELS is not valid: not a JSON list"):
        read(ServiceSettings)


def test_the_core_reads_only_its_own_settings(monkeypatch):
    monkeypatch.setenv("PROTOTOK_STORAGE", "int4")  # the service's: the core does not read it
    monkeypatch.setenv("PROTOTOK_DEVICE", "cuda:1")
    assert read(Settings).device == "cuda:1"
    assert not {"storage", "redis_url", "auth", "decode_threads"} & set(Settings.model_fields)
    assert set(Settings.model_fields) < set(ServiceSettings.model_fields)


def test_the_typed_choices_are_the_ones_the_code_takes():
    fields = ServiceSettings.model_fields
    assert typing.get_args(fields["storage"].annotation) == STORAGES
    assert set(typing.get_args(fields["recipe"].annotation)) == set(RECIPES)
