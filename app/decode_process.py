"""The decode process: one child process per model runs the lane's forward passes, so the API's
event loop never shares a GIL with a pass.

In a thread of the API process, a pass would hold the GIL whenever it runs Python between
kernels, and when the machine deschedules that thread while it holds it, the event loop and the
job polls wait for it (bench/results/load.md). Here the lane's thread in the API
(app/batcher.py) only gathers a batch and waits on a pipe, which releases the GIL; the pass
runs in the child.

The child is started with multiprocessing's "spawn" (a fresh interpreter: none of the API's
threads, sockets or event loop), renices itself (PROTOTOK_DECODE_NICE applies to the whole
process), sets PROTOTOK_DECODE_THREADS torch threads, loads the model by name (it reads the
same PROTOTOK_* environment as the API it was spawned from), then answers one batch at a time
with `run_batch` (app/decode_pass.py).

What crosses the pipe is pickled, but only built-in types: an encoding as its safetensors bytes,
raw vectors as the safetensors bytes of e and m, an answer as text, ids, counts and seconds, an
error as its class name and message (mapped back to the same prototok error class, so the HTTP
answer is the same). Both ends read with `plain_loads`, which refuses every class and function,
so no byte a client sent can make either process import or call anything.

A child that dies (killed, out of memory) fails the batch it held with 503 `decode_unavailable`;
the next batch starts a fresh child (which loads the model again). A child that hangs (alive, but
no answer) would hold its lane and every decode of its model for good, so each batch has
PROTOTOK_DECODE_PASS_TIMEOUT seconds from being sent to being answered: past that a watchdog
kills the child, which ends whatever the lane's thread was blocked in (the wait for the answer,
or a send into a pipe the child no longer reads), and the batch fails the same way. The model
load is not timed: the child says when it is ready, and the clock starts at the send after that
(a first load of the embedded GGUF dequantises it, a minute or more). The child exits when the
API closes its lane (lifespan shutdown), when its pipe closes (the API died), and, being a daemon
process, when the API's interpreter exits.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import pickle
import signal
import threading
from contextlib import suppress
from dataclasses import asdict
from multiprocessing.connection import Connection, wait
from typing import Any, ClassVar

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from prototok import Encoding, load_model
from prototok.codec import Decoded
from prototok.errors import PrototokError
from prototok.models import configure_threads
from prototok.recipe import Arrangement
from service.errors import ServiceError
from service.settings import ServiceSettings

from .decode_pass import Job, Outcome, VectorsResult, decode_threads, lower_priority, run_batch

log = logging.getLogger("prototok.api")
SPAWN = multiprocessing.get_context("spawn")


class DecodeUnavailable(ServiceError):
    """The decode process died under this request (or the API is shutting down): retry."""

    code, status = "decode_unavailable", 503
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


# --- the pipe: plain data only ---

class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused {module}.{name}: only plain data crosses the decode pipe")


def plain_loads(blob: bytes) -> Any:
    """Unpickle dicts, lists, tuples, strings, bytes, numbers, booleans and None; nothing else."""
    return _PlainUnpickler(io.BytesIO(blob)).load()


def send(conn: Connection, message: Any) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive(conn: Connection) -> Any:
    return plain_loads(conn.recv_bytes())


def pack_job(job: Job) -> dict:
    if job.enc is not None:
        return {"encoding": job.enc.to_bytes()}
    return {"e": tensor_bytes(job.e), "m": tensor_bytes(job.m), "lengths": list(job.lengths),
            "arrangement": job.arrangement.value, "sink": bool(job.sink)}


def tensor_bytes(t: torch.Tensor) -> bytes:
    return st_save({"t": t.contiguous()})  # one per file: e and m may be one tensor, which a file refuses twice


def unpack_job(data: dict) -> Job:
    if "encoding" in data:
        return Job(enc=Encoding.from_bytes(data["encoding"]))
    return Job(e=st_load(data["e"])["t"], m=st_load(data["m"])["t"], lengths=data["lengths"],
               arrangement=Arrangement(data["arrangement"]), sink=data["sink"])


def pack_outcome(out: Outcome) -> dict:
    if isinstance(out, Exception):
        return {"kind": "error", "name": type(out).__name__, "message": str(out)}
    return {"kind": "decoded" if isinstance(out, Decoded) else "vectors", **asdict(out)}


def unpack_outcome(data: dict) -> Outcome:
    kind = data.pop("kind")
    if kind == "error":
        return error_of(data["name"], data["message"])
    return Decoded(**data) if kind == "decoded" else VectorsResult(**data)


def error_of(name: str, message: str) -> Exception:
    """The prototok error class the child raised, by name, so the API answers with its status
    and code; anything else (a bug) as a RuntimeError, which the API answers 500."""
    classes, todo = {}, [PrototokError]
    while todo:
        cls = todo.pop()
        classes[cls.__name__] = cls
        todo += cls.__subclasses__()
    try:
        return classes[name](message)
    except (KeyError, TypeError):  # not ours, or one that takes more than a message (no decode raises those)
        return RuntimeError(f"{name} in the decode process: {message}")


# --- the child ---

def child_main(conn: Connection, model: str, threads: int, nice: int) -> None:
    """The decode process: renice, set threads, load the model, say it is ready, then answer
    batches until the API sends None or closes the pipe."""
    lower_priority(nice, whole_process=True)  # first, so every thread torch starts later inherits it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is for the API, which stops us
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[decode %(process)d]: %(message)s")
    configure_threads(threads)
    try:
        lm = load_model(model)  # now, so the first batch does not wait for it
        log.info("model %s loaded on %s, %d torch thread(s)", lm.name, lm.device, threads)
    except Exception as exc:  # noqa: BLE001 - each batch's requests get the error
        log.warning("could not load model %s: %s", model, exc)
    send(conn, {"ready": True})  # from here on each batch is timed (PROTOTOK_DECODE_PASS_TIMEOUT)
    while True:
        try:
            message = receive(conn)
        except EOFError:
            return  # the API is gone
        if message is None:
            return
        send(conn, answer(model, message))


def answer(model: str, message: dict) -> dict:
    try:
        outcomes, passes = run_batch(model, [unpack_job(j) for j in message["jobs"]], message["dtypes"])
    except Exception as exc:  # noqa: BLE001 - a bug or unreadable job: every request hears of it
        outcomes, passes = [exc] * len(message["jobs"]), []
    return {"outcomes": [pack_outcome(o) for o in outcomes], "passes": passes}


# --- the API's side ---

class Watchdog:
    """Kills `proc` unless disarmed within `seconds`: a child that hangs then ends like a dead one,
    and whatever the lane's thread is blocked in (a wait, a send, a receive) returns."""

    def __init__(self, seconds: float, proc: multiprocessing.process.BaseProcess):
        self.seconds, self.proc, self.fired = seconds, proc, False
        self._lock = threading.Lock()
        self._armed = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def arm(self) -> None:
        self._armed = True
        self._timer.start()

    def disarm(self) -> None:
        with self._lock:
            self._armed = False
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if not self._armed:
                return  # answered meanwhile
            self.fired = True
            log.error("decode process %d has not answered in %g s (PROTOTOK_DECODE_PASS_TIMEOUT): killing it",
                      self.proc.pid, self.seconds)
            self.proc.kill()


class DecodeProcess:
    """The API's handle on one model's decode process: started on first use, started afresh
    after a death. Used by one thread at a time (the model's lane)."""

    def __init__(self, model: str, settings: ServiceSettings):
        self.model, self.dtypes = model, list(settings.api_decode_dtypes)
        self.threads, self.nice = decode_threads(settings), settings.decode_nice
        self.pass_timeout = settings.decode_pass_timeout
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.conn: Connection | None = None
        self.ready = False  # the child has loaded its model (or given up) and reads batches
        self.in_flight = 0  # requests sent to the child and not answered yet

    def start(self) -> None:
        """Start the child if none is running (it loads the model at once)."""
        if self.proc is not None and self.proc.is_alive():
            return
        self._forget()
        ours, theirs = SPAWN.Pipe()
        self.proc = SPAWN.Process(target=child_main, args=(theirs, self.model, self.threads, self.nice),
                                  name=f"decode-{self.model}", daemon=True)
        self.proc.start()
        theirs.close()
        self.conn = ours
        log.info("decode process %d started for model %s", self.proc.pid, self.model)

    def run(self, jobs: list[Job]) -> tuple[list[Outcome], list[int]]:
        """Each job's outcome and the size of each pass, from the child; DecodeUnavailable if it
        dies, or if it has not answered within PROTOTOK_DECODE_PASS_TIMEOUT (then it is killed)."""
        self.start()
        message = {"jobs": [pack_job(j) for j in jobs], "dtypes": self.dtypes}
        dog = Watchdog(self.pass_timeout, self.proc)
        try:
            self._await_ready()
            self.in_flight = len(jobs)
            dog.arm()
            send(self.conn, message)  # blocks while the pipe is full and the child does not read: the dog ends that
            wait([self.conn, self.proc.sentinel])  # an answer, or the child's death
            reply = receive(self.conn)  # EOFError if it died without answering
        except (EOFError, OSError) as exc:
            dog.disarm()
            if dog.fired:
                self._death()
                raise DecodeUnavailable(
                    f"the decode process of model '{self.model}' did not answer within {self.pass_timeout:g} s "
                    "(PROTOTOK_DECODE_PASS_TIMEOUT) and was killed; the next decode starts a new one: retry") from exc
            raise DecodeUnavailable(f"the decode process of model '{self.model}' died ({self._death()}); "
                                    "the next decode starts a new one: retry") from exc
        finally:
            dog.disarm()
            self.in_flight = 0
        return [unpack_outcome(o) for o in reply["outcomes"]], reply["passes"]

    def _await_ready(self) -> None:
        """Wait, untimed, for a new child to load its model (EOFError if it dies meanwhile)."""
        if not self.ready:
            wait([self.conn, self.proc.sentinel])
            receive(self.conn)  # {"ready": True}
            self.ready = True

    def close(self, timeout: float = 10) -> None:
        """Ask the child to exit after the pass it is in; kill it if it has not within `timeout`."""
        if self.proc is None:
            return
        with suppress(OSError):
            send(self.conn, None)
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self._forget()

    def _death(self) -> str:
        self.proc.join(5)
        code = self.proc.exitcode
        how = f"exit code {code}" if code is None or code >= 0 else f"killed by {signal.Signals(-code).name}"
        log.error("decode process %d of model %s died: %s", self.proc.pid, self.model, how)
        self._forget()
        return how

    def _forget(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.ready = False
        self.proc = self.conn = None  # a dead child's Process is released with its last reference
