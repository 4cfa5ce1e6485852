"""What only the decode process (app/decode_process.py) has: it can die or hang, and it talks over
a pipe. A killed process fails the batch it held with 503 and the next decode starts a new one;
a hung one (stopped) is killed after PROTOTOK_DECODE_PASS_TIMEOUT with the same 503;
the API's shutdown ends it; only plain data crosses the pipe, and errors come back as the same
class. The lane's batching and exactness: test_batcher.py."""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import Api, LocalApi, wait_for

from app.batcher import DecodeLane
from app.decode_process import DecodeUnavailable, error_of, plain_loads
from prototok import encode_texts
from prototok.errors import BadVectors, DecodeMismatch
from prototok.recipe import TUNED, EncodeConfig
from service.settings import ServiceSettings

TEXTS = ["one", "a second text", "the third, longest text of all"]


@pytest.fixture(scope="module")
def encodings(tiny):
    return encode_texts(tiny, TEXTS, EncodeConfig(recipe=TUNED.with_(max_steps=4, seeds=1)))


@pytest.fixture
def decodes() -> Iterator[DecodeLane]:
    lane = DecodeLane("tiny-llama", ServiceSettings(decode_threads=1, decode_batch_wait_ms=0)).start()
    yield lane
    lane.close()


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (an orphan's, which whoever adopted it may not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_killed_decode_process_fails_its_batch_with_503_and_the_next_decode_gets_a_new_one(decodes, encodings):
    assert decodes.submit_encoding(encodings[0]).result(120).text == TEXTS[0]
    first = decodes.process.proc.pid
    os.kill(first, signal.SIGSTOP)  # the next batch waits in the pipe, unread
    held = decodes.submit_encoding(encodings[1])
    wait_for(lambda: decodes.process.in_flight, 60, "the batch to reach the decode process", every=0.02)
    os.kill(first, signal.SIGKILL)
    with pytest.raises(DecodeUnavailable, match="killed by SIGKILL") as died:
        held.result(60)
    assert died.value.status == 503 and died.value.headers["Retry-After"] == "1"
    assert decodes.submit_encoding(encodings[1]).result(120).text == TEXTS[1]
    second = decodes.process.proc.pid
    assert second != first and gone(first)


@pytest.fixture
def impatient() -> Iterator[DecodeLane]:
    """A lane whose decode process has 5 s to answer a batch (tiny-llama's passes take milliseconds)."""
    lane = DecodeLane("tiny-llama", ServiceSettings(decode_threads=1, decode_batch_wait_ms=0,
                                             decode_pass_timeout=5)).start()
    yield lane
    lane.close()


def hang(lane: DecodeLane, encoding) -> int:
    """Let the lane's decode process answer once, then stop it (SIGSTOP: alive, never answering); its pid."""
    assert lane.submit_encoding(encoding).result(120).text == TEXTS[0]
    pid = lane.process.proc.pid
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_a_hung_decode_process_is_killed_after_the_pass_timeout_and_replaced(impatient, encodings):
    hung = hang(impatient, encodings[0])
    held = impatient.submit_encoding(encodings[1])
    with pytest.raises(DecodeUnavailable, match=r"did not answer within 5 s \(PROTOTOK_DECODE_PASS_TIMEOUT\)") as err:
        held.result(120)
    assert err.value.status == 503 and err.value.code == "decode_unavailable"
    assert "killed" in str(err.value) and err.value.headers["Retry-After"] == "1"
    assert gone(hung)
    assert impatient.submit_encoding(encodings[1]).result(120).text == TEXTS[1]
    assert impatient.process.proc.pid != hung


def test_a_batch_too_big_for_the_pipe_of_a_hung_decode_process_times_out_too(impatient, encodings):
    """The send itself blocks once the pipe is full and the child does not read (about 200 kB on
    Linux; this batch is 2 MB of raw vectors): the watchdog's kill ends that wait as well."""
    from prototok.recipe import Arrangement

    hung = hang(impatient, encodings[0])
    e = torch.randn(8192, 32, generator=torch.Generator().manual_seed(2))
    held = impatient.submit_vectors(e, e, [1] * 8192, Arrangement.E_MN1, True)
    with pytest.raises(DecodeUnavailable, match="did not answer within 5 s"):
        held.result(120)
    assert gone(hung)
    assert impatient.submit_encoding(encodings[2]).result(120).text == TEXTS[2]


def test_a_decode_process_killed_while_idle_is_replaced_without_an_error(decodes, encodings):
    assert decodes.submit_encoding(encodings[0]).result(120).text == TEXTS[0]
    first = decodes.process.proc
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: not first.is_alive(), 30, "the decode process to die")
    assert decodes.submit_encoding(encodings[2]).result(120).text == TEXTS[2]
    assert decodes.process.proc is not first


def test_closing_a_lane_ends_its_process_and_fails_what_waits(encodings):
    lane = DecodeLane("tiny-llama", ServiceSettings(decode_threads=1)).start()
    assert lane.submit_encoding(encodings[0]).result(120).text == TEXTS[0]
    proc = lane.process.proc
    lane.close()
    assert proc.exitcode == 0  # it left on its own when asked, not killed
    with pytest.raises(DecodeUnavailable, match="shutting down"):
        lane.submit_encoding(encodings[0])


def test_the_decode_process_and_its_torch_threads_run_at_the_lane_niceness(encodings):
    """PROTOTOK_DECODE_NICE renices the whole process, torch's worker threads included (never
    above the API's own priority: a niceness only goes up)."""
    lane = DecodeLane("tiny-llama", ServiceSettings(decode_threads=2, decode_nice=7)).start()
    try:
        assert lane.submit_encoding(encodings[2]).result(120).text == TEXTS[2]  # a pass: torch's threads exist
        pid = lane.process.proc.pid
        tasks = sorted(os.listdir(f"/proc/{pid}/task"))
        nices = {int(Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[16]) for t in tasks}
    finally:
        lane.close()
    assert len(tasks) >= 2 and nices == {max(7, os.getpriority(os.PRIO_PROCESS, 0))}


def test_the_api_shutdown_ends_its_decode_process(service_redis, tmp_path):
    """The app's lifespan: a decode starts the model's process, leaving the app ends it."""
    api = LocalApi(tmp_path / "api.log", own_decoder=True, PROTOTOK_AUTH="off")
    decoder = api.decoder
    try:
        e = torch.randn(1, 32, generator=torch.Generator().manual_seed(0))
        r = api.http.post("/v1/decode", json={"model": "tiny-llama", "e": e.tolist(), "m": e.tolist(), "length": 3})
        assert r.status_code == 200 and r.json()["length"] == 3, r.text
        proc = decoder.lanes["tiny-llama"].process.proc
        assert proc.is_alive() and proc.pid != os.getpid()
    finally:
        api.close()
    assert proc.exitcode == 0 and not decoder.lanes


def decode_children(pid: int) -> list[int]:
    """The decode processes of an API process: its children started by multiprocessing's spawn."""
    kids = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid
                    and b"spawn_main" in (entry / "cmdline").read_bytes()):
                kids.append(int(entry.name))
        except OSError:
            continue
    return kids


@pytest.mark.integration
def test_an_api_process_leaves_no_decode_process_behind(service_redis, tmp_path):
    """uvicorn as deployed: stopped (SIGINT), its decode process exits with it; killed (SIGKILL),
    the closed pipe ends its decode process too."""
    api = Api(tmp_path / "api.log", PROTOTOK_AUTH="off", PROTOTOK_API_PRELOAD="true").start()
    try:
        children = wait_for(lambda: decode_children(api.proc.pid), 120, "the preloading decode process", api.proc)
        e = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
        body = {"model": "tiny-llama", "e": e.tolist(), "m": e.flip(0).tolist(), "length": [3, 2]}
        first = api.http.post("/v1/decode", json=body)
        assert first.status_code == 200 and first.json()["length"] == 5, first.text
        assert decode_children(api.proc.pid) == children
        api.restart()
        assert all(gone(pid) for pid in children)
        assert api.http.post("/v1/decode", json=body).json()["text"] == first.json()["text"]
        children = decode_children(api.proc.pid)
        assert len(children) == 1
        api.proc.kill9()
        wait_for(lambda: all(gone(pid) for pid in children), 60, "the orphaned decode process to exit")
    finally:
        api.close()


def test_the_child_errors_come_back_as_the_same_classes(decodes, encodings):
    """So the API answers 409 decode_mismatch or 422 bad_vectors, as when the pass ran in the API."""
    import dataclasses

    bad = dataclasses.replace(encodings[0], ids_sha256="0" * 64)
    with pytest.raises(DecodeMismatch):
        decodes.submit_encoding(bad).result(120)
    nan = torch.full((1, 32), float("nan"))
    from prototok.recipe import Arrangement

    with pytest.raises(BadVectors, match="NaN"):
        decodes.submit_vectors(nan, nan, [3], Arrangement.E_MN1, True).result(120)
    assert isinstance(error_of("DecodeMismatch", "x"), DecodeMismatch)
    bug = error_of("ZeroDivisionError", "division by zero")
    assert type(bug) is RuntimeError and "ZeroDivisionError" in str(bug)  # a bug stays a 500


class Boom:
    """Unpickled by a plain pickle.loads, this would run a shell command."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_the_pipe_reads_plain_data_only(tmp_path):
    plain = {"jobs": [{"encoding": b"\x00bytes", "lengths": [3, 4], "sink": True, "x": 1.5, "n": None}], "t": (1,)}
    assert plain_loads(pickle.dumps(plain)) == plain
    for thing in (Boom(tmp_path / "pwned"), ServiceSettings(), torch.zeros(2)):
        with pytest.raises(pickle.UnpicklingError, match="refused"):
            plain_loads(pickle.dumps(thing))
    assert not (tmp_path / "pwned").exists()
