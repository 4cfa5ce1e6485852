"""Job polls and decodes under load, against the API's one decode path: each model's decode
lane, its passes in the model's decode process (app/batcher.py, app/decode_process.py).

    python -m bench.load [--seconds 30] [--clients 200] [--decoders 50] [--poll-every 1.0] [--no-worst]

Everything runs on loopback and is stopped at the end: a private redis-server on a free
port (nothing on disk), one tiny-llama worker (it finishes the jobs that pollers ask about),
and one API (`uvicorn app.main:app`, access log off) that decodes with the embedded SmolLM2. The encodings are ten ~16-token sentences
(bench/sentences.py) encoded here with SmolLM2 and stored in that Redis.

Clients (httpx async, one process): `--clients - --decoders` pollers each ask for a random
job every `--poll-every` seconds; `--decoders` clients decode a random stored encoding
(`GET /v1/embeddings/{id}/text`) back to back and check that the text is exact. Each path
gets `--seconds` of this, in `--rounds` turns taken alternately with the other path, so that
a neighbour's burst on a shared machine hits both alike; only requests that complete inside a
turn count, each has a 60 s timeout, and after each turn the API is left to finish what the
stopped clients left in flight before the next turn starts.

Paths: `api` is the pollers and the decoders together; `polls-only` is the same API with the
pollers alone: the floor of poll latency on this machine at that moment. An API's CPU time and
memory include its decode process.

Then, on that API, the largest decodes the default limits allow, with the peak resident
memory (VmHWM from /proc) of the API and of its decode process after each: one chunk of
PROTOTOK_MAX_DECODE_TOKENS positions, 64 chunks of 64, and an upload of 1024 chunks of 4 (the
most an 8 MiB body holds comes to ~1800 chunks). Their vectors are random, so the upload answers 409 decode_mismatch
after a full pass, which is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import torch

from .common import machine, write

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"  # --model tiny-llama for a cheap pass
IDLE_MODEL = "tiny-gpt-neox"  # queued jobs wait on its queue: no worker serves it here
PATHS = ("api", "polls-only")  # polls-only runs on the same API


# --- processes ---

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTOTOK_") or k == "PROTOTOK_CACHE_DIR"}
    # The bench measures the decode lane and polls, not keys and quotas: one open sandbox API.
    env.update(PROTOTOK_REDIS_URL=redis_url, PYTHONUNBUFFERED="1", PROTOTOK_AUTH="off",
               PROTOTOK_RATE_LIMIT_PER_S="0", PROTOTOK_MAX_JOBS_PER_KEY="0")
    env.update(extra)
    return env


def spawn(stack: ExitStack, args: list[str], env: dict[str, str] | None, log: Path) -> subprocess.Popen:
    out = log.open("ab")
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        out.close()

    stack.callback(stop)
    return proc


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited")
        time.sleep(0.3)
    raise RuntimeError(f"timed out waiting for {what}")


def start_redis(stack: ExitStack, tmp: Path) -> str:
    import redis

    port = free_port()
    spawn(stack, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", str(tmp)], None, tmp / "redis.log")
    wait_until(lambda: redis.Redis(port=port).ping(), 20, "redis-server")
    return f"redis://127.0.0.1:{port}/0"


def start_api(stack: ExitStack, tmp: Path, redis_url: str, extra: dict[str, str]) -> tuple[str, subprocess.Popen]:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log"]
    proc = spawn(stack, args, service_env(redis_url, **extra), tmp / "api.log")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, 300, "the API", proc)
    return url, proc


def stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # from the state on


def decode_processes(pid: int) -> list[int]:
    """The API's decode processes: its children started by multiprocessing's spawn (not its
    resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and int(stat_fields(int(entry.name))[1]) == pid
                    and b"spawn_main" in (entry / "cmdline").read_bytes()):
                found.append(int(entry.name))
        except (OSError, ValueError):  # gone meanwhile
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time of the API and its decode processes."""
    total = 0.0
    for p in [pid, *decode_processes(pid)]:
        with contextlib.suppress(OSError):
            fields = stat_fields(p)
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def wait_idle(pid: int, timeout: float = 120) -> float:
    """Wait until the API (and its decode process) has finished what cancelled clients left it
    (under 5% CPU over 0.5 s): the next round must not pay for this one's backlog. Returns the
    seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before < 0.025:
            break
    return round(time.monotonic() - start, 1)


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of a process, MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return tuple(round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmHWM", "VmRSS"))  # type: ignore[return-value]


def decode_peak_rss_mb(pid: int) -> float | None:
    """VmHWM of the API's decode process(es), MB; None on a path without one."""
    peaks = [peak_rss_mb(p)[0] for p in decode_processes(pid)]
    return round(sum(peaks), 1) if peaks else None


# --- fixtures in Redis ---

def store_encodings(redis_url: str, model: str, steps: int) -> dict[str, str]:
    """emb id -> text, for the ten bench sentences encoded here with the decode model."""
    import redis

    from prototok import EncodeConfig, encode_texts, load_model
    from prototok.recipe import TUNED
    from service.store import EncodingStore

    from .sentences import SENTENCES

    lm = load_model(model)
    encs = encode_texts(lm, SENTENCES, EncodeConfig(recipe=TUNED.with_(max_steps=steps, seeds=1)))
    store = EncodingStore(redis.Redis.from_url(redis_url))
    return {store.put(enc): text for enc, text in zip(encs, SENTENCES)}


def make_jobs(api: str, redis_url: str, n: int) -> list[str]:
    """n finished tiny-llama jobs and n jobs queued for a model no worker serves."""
    import redis

    from service import safejob
    from service.queues import ENCODE_JOB

    with httpx.Client(base_url=api, timeout=60) as http:
        done = [http.post("/v1/encode", json={"text": f"job {i}", "model": "tiny-llama",
                                              "options": {"max_steps": 3, "seeds": 1}}).json()["job_id"]
                for i in range(n)]
        wait_until(lambda: all(http.get(f"/v1/jobs/{j}").json()["status"] == "finished" for j in done), 120,
                   "the tiny-llama jobs to finish")
    q = safejob.queue(f"prototok:{IDLE_MODEL}", redis.Redis.from_url(redis_url))
    queued = [q.enqueue(ENCODE_JOB, ["never runs"], IDLE_MODEL, {}, job_id=uuid.uuid4().hex,  # the API's id form
                        meta={"model": IDLE_MODEL, "progress": {"step": 0, "max_steps": 100}}).id for _ in range(n)]
    return done + queued


# --- load ---

def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


class Tally:
    """What one path's clients saw, over all its rounds."""

    def __init__(self) -> None:
        self.polls: list[float] = []
        self.decodes: list[float] = []
        self.statuses: dict[str, int] = {}
        self.wrong = 0
        self.seconds = 0.0

    def count(self, kind: str, code: int) -> None:
        self.statuses[f"{kind} {code}"] = self.statuses.get(f"{kind} {code}", 0) + 1

    def summary(self) -> dict:
        return {
            "polls": len(self.polls), "poll_p50_ms": pct(self.polls, 0.5), "poll_p90_ms": pct(self.polls, 0.9),
            "poll_p99_ms": pct(self.polls, 0.99), "poll_max_ms": pct(self.polls, 1.0),
            "decodes": len(self.decodes), "decodes_per_s": round(len(self.decodes) / self.seconds, 2),
            "decode_p50_ms": pct(self.decodes, 0.5), "decode_p99_ms": pct(self.decodes, 0.99),
            "wrong_texts": self.wrong, "statuses": self.statuses, "seconds": self.seconds,
        }


async def run_load(api: str, jobs: list[str], texts: dict[str, str], args, decoders: int, seconds: float,
                   tally: Tally) -> None:
    """`args.clients` clients, `decoders` of them decoding, against one API for `seconds`;
    what completes inside the window counts."""
    start = time.perf_counter()
    end = start + seconds
    emb_ids = list(texts)

    async def poller(http: httpx.AsyncClient, rng: random.Random) -> None:
        await asyncio.sleep(rng.random() * args.poll_every)  # spread the first polls
        while True:
            t0 = time.perf_counter()
            r = await http.get(f"/v1/jobs/{rng.choice(jobs)}")
            t1 = time.perf_counter()
            if t1 <= end:
                tally.polls.append(t1 - t0)
                tally.count("poll", r.status_code)
            await asyncio.sleep(max(0.0, args.poll_every - (t1 - t0)))

    async def decoder(http: httpx.AsyncClient, rng: random.Random) -> None:
        while True:
            emb_id = rng.choice(emb_ids)
            t0 = time.perf_counter()
            r = await http.get(f"/v1/embeddings/{emb_id}/text")
            t1 = time.perf_counter()
            if t1 <= end:
                tally.count("decode", r.status_code)
                if r.status_code == 200:
                    tally.decodes.append(t1 - t0)
                    tally.wrong += r.json()["text"] != texts[emb_id]

    limits = httpx.Limits(max_connections=args.clients + 10, max_keepalive_connections=args.clients + 10)
    async with httpx.AsyncClient(base_url=api, timeout=60, limits=limits) as http:
        tasks = [asyncio.create_task((decoder if i < decoders else poller)(http, random.Random(i)))
                 for i in range(args.clients)]
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    tally.seconds += seconds


def batch_stats(api: str) -> float | None:
    """Mean requests per decode pass, from the API's /metrics."""
    text = httpx.get(f"{api}/metrics", timeout=30).text
    vals = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith("prototok_decode_batch_requests_") and " " in line}
    n = vals.get("prototok_decode_batch_requests_count", 0)
    return round(vals["prototok_decode_batch_requests_sum"] / n, 2) if n else None


def warm_up(api: str, texts: dict[str, str]) -> None:
    with httpx.Client(base_url=api, timeout=300) as http:
        for emb_id, text in texts.items():
            r = http.get(f"/v1/embeddings/{emb_id}/text")
            assert r.status_code == 200 and r.json()["text"] == text, r.text


# --- the largest decodes the limits allow ---

def worst_requests(api: str, pid: int, max_tokens: int, lm) -> list[dict]:
    from prototok import Encoding
    from prototok.recipe import Arrangement, Method

    d, fingerprint = lm.hidden_size, lm.tokenizer_fingerprint
    gen = torch.Generator().manual_seed(0)

    def vectors(k: int) -> dict:
        return {"e": torch.randn(k, d, generator=gen).mul(0.05).tolist(),
                "m": torch.randn(k, d, generator=gen).mul(0.05).tolist()}

    def upload(k: int, n: int) -> bytes:
        enc = Encoding(model=lm.name, tokenizer_fingerprint=fingerprint, hidden_size=d, method=Method.ONE_STEP,
                       arrangement=Arrangement.E_MN1, lengths=[n] * k,
                       vectors={"e": torch.randn(k, d, generator=gen) * 0.05, "m": torch.randn(k, d, generator=gen) * 0.05},
                       corrections=[[] for _ in range(k)], c_tokens=0, h_lm=0.0, steps=0, seconds=0.0, seeds=[0] * k,
                       ids_sha256="0" * 64, sink=True)
        return enc.to_bytes()

    rows = []
    with httpx.Client(base_url=api, timeout=600) as http:
        cases = [
            (f"JSON, 1 chunk x {max_tokens}", {"json": {"model": lm.name, **vectors(1), "length": max_tokens}}),
            (f"JSON, 64 chunks x {max_tokens // 64}", {"json": {"model": lm.name, **vectors(64),
                                                                "length": [max_tokens // 64] * 64}}),
            (f"upload, 1024 chunks x {max_tokens // 1024}", {"content": upload(1024, max_tokens // 1024),
                                                             "headers": {"content-type": "application/octet-stream"}}),
        ]
        for name, kwargs in cases:
            body = len(kwargs.get("content") or json.dumps(kwargs["json"]).encode())
            t0 = time.perf_counter()
            r = http.post("/v1/decode", **kwargs)
            hwm, rss = peak_rss_mb(pid)
            rows.append({"request": name, "body_mb": round(body / 2**20, 2), "status": r.status_code,
                         "code": r.json().get("code", "") if r.status_code != 200 else "",
                         "seconds": round(time.perf_counter() - t0, 1), "api_peak_rss_mb": hwm, "api_rss_mb": rss,
                         "decode_peak_rss_mb": decode_peak_rss_mb(pid)})
            print(rows[-1], flush=True)
    return rows


def markdown(record: dict) -> str:
    a = record["args"]
    lines = [
        (f"{a['clients']} concurrent clients for {a['seconds']} s per path: {a['clients'] - a['decoders']} pollers "
        f"(`GET /v1/jobs/{{id}}` every {a['poll_every']} s each, over {a['jobs']} finished and {a['jobs']} queued "
        f"jobs) and {a['decoders']} decoders (`GET /v1/embeddings/{{id}}/text` back to back, ten ~16-token "
        f"sentences, {record['model']} on the API's CPU; every text checked exact). One uvicorn process, access log off; "
        f"clients in one httpx async process on the same machine. The paths take turns in "
        f"{a['rounds']} rounds of {a['seconds'] / a['rounds']:.0f} s each; after each round the API is left to finish "
        "the requests the stopped clients left in flight (`drain_s` in the JSON) before the next begins."),
        "",
        ("| path | polls | poll p50 ms | poll p90 ms | poll p99 ms | poll max ms | decodes/s | decode p50 ms | "
        "decode p99 ms | wrong texts | mean requests per pass | API peak RSS MB | decode process peak RSS MB | "
        "1-min load avg at each round |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in record["paths"]:
        lines.append(f"| {p['path']} | {p['polls']} | {p['poll_p50_ms']} | {p['poll_p90_ms']} | {p['poll_p99_ms']} | "
                     f"{p['poll_max_ms']} | {p['decodes_per_s']} | {p['decode_p50_ms']} | {p['decode_p99_ms']} | "
                     f"{p['wrong_texts']} | {p.get('mean_batch') or '-'} | {p['api_peak_rss_mb']} | "
                     f"{p.get('decode_peak_rss_mb') or '-'} | {', '.join(map(str, p['load_avg_1m']))} |")
    lines.append("")
    lines.append("Status codes: " + "; ".join(f"{p['path']}: {p['statuses']}" for p in record["paths"]))
    by = {p["path"]: p for p in record["paths"]}
    if "polls-only" in by:
        lines.append(f"`polls-only` is the same API with the {record['args']['clients'] - record['args']['decoders']} "
                     "pollers alone (no decoders): what polls cost on this machine at that moment, with nothing "
                     "decoding.")
    if record.get("worst"):
        lines += ["", (f"Largest decodes within the default limits (PROTOTOK_MAX_DECODE_TOKENS="
                  f"{record['max_decode_tokens']}, 8 MiB body), one at a time on the idle API after the load; "
                  "API baseline (model loaded, after the load run) "
                  f"{record['rss_before_worst']} MB peak, its decode process "
                  f"{record.get('decode_rss_before_worst') or '-'} MB:"), "",
                  "| request | body MB | status | seconds | API peak RSS MB (VmHWM) | decode process peak RSS MB |",
                  "|---|---|---|---|---|---|"]
        for w in record["worst"]:
            lines.append(f"| {w['request']} | {w['body_mb']} | {w['status']} {w['code']} | {w['seconds']} | "
                         f"{w['api_peak_rss_mb']} | {w.get('decode_peak_rss_mb') or '-'} |")
    if record.get("lane"):
        lane = record["lane"]
        lines += ["", f"The lane: {lane['decode_threads']} torch thread(s), niceness {lane['decode_nice']}"
                  + (f", passes of up to {lane['decode_batch_tokens']} positions after up to "
                     f"{lane['decode_batch_wait_ms']} ms" if "decode_batch_tokens" in lane else "")
                  + ". (The header's thread count is the bench process's own.)"]
    lines += ["", ("The machine is shared with other engineers' jobs (2 cores): the load average columns say how "
              "busy it was; compare the paths of one run, not runs on different days.")]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=MODEL, help="the model the APIs decode with")
    ap.add_argument("--seconds", type=float, default=30, help="load per path, split into --rounds")
    ap.add_argument("--rounds", type=int, default=3, help="the paths take turns, this many times each")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--decoders", type=int, default=50)
    ap.add_argument("--poll-every", type=float, default=1.0)
    ap.add_argument("--jobs", type=int, default=20, help="finished jobs to poll (and as many queued ones)")
    ap.add_argument("--encode-steps", type=int, default=10)
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS,
                    help="polls-only: the API with the pollers alone, the floor this machine allows")
    ap.add_argument("--no-worst", action="store_true", help="skip the largest-decode memory rows")
    ap.add_argument("--api-env", nargs="*", default=[], metavar="PROTOTOK_X=V", help="extra settings for the API")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("bench.load needs redis-server")
    torch.set_num_threads(1)
    from service.settings import ServiceSettings

    max_tokens = ServiceSettings().max_decode_tokens
    extra = dict(kv.split("=", 1) for kv in args.api_env)
    lane = ServiceSettings(**{k.removeprefix("PROTOTOK_").lower(): v for k, v in extra.items() if k.startswith("PROTOTOK_")})
    record: dict = {"machine": machine(), "args": vars(args), "model": args.model, "paths": [],
                    "max_decode_tokens": max_tokens,
                    "lane": {k: getattr(lane, k) for k in ("decode_threads", "decode_nice", "decode_batch_tokens",
                                                         "decode_batch_wait_ms", "decode_queue_max")},
                    }
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-load-") as tmpdir:
        tmp = Path(tmpdir)
        redis_url = start_redis(stack, tmp)
        texts = store_encodings(redis_url, args.model, args.encode_steps)
        worker = spawn(stack, [sys.executable, "-m", "worker"],
                       service_env(redis_url, PROTOTOK_MODEL="tiny-llama", OMP_NUM_THREADS="1"), tmp / "worker.log")
        env = {"PROTOTOK_MODEL": args.model, **dict(kv.split("=", 1) for kv in args.api_env)}
        api_proc = start_api(stack, tmp, redis_url, env)
        apis = {path: api_proc for path in args.paths}
        first = api_proc[0]
        wait_until(lambda: "tiny-llama" in httpx.get(f"{first}/readyz").json().get("models", []), 300,
                   "the tiny-llama worker", worker)
        jobs = make_jobs(first, redis_url, args.jobs)
        warm_up(first, texts)
        tallies = {path: Tally() for path in apis}
        loads: dict[str, list[float]] = {path: [] for path in apis}
        drain: dict[str, list[float]] = {path: [] for path in apis}
        for r in range(args.rounds):  # interleaved, so a neighbour's burst hits both paths alike
            for path, (api, proc) in apis.items():
                loads[path].append(round(os.getloadavg()[0], 2))
                print(f"[{path}] round {r + 1}/{args.rounds}: {args.seconds / args.rounds:.0f} s ...", flush=True)
                decoders = 0 if path == "polls-only" else args.decoders
                asyncio.run(run_load(api, jobs, texts, args, decoders, args.seconds / args.rounds, tallies[path]))
                drain[path].append(wait_idle(proc.pid))
        for path, (api, proc) in apis.items():
            row = {"path": path, **tallies[path].summary(), "load_avg_1m": loads[path], "drain_s": drain[path],
                   "api_peak_rss_mb": peak_rss_mb(proc.pid)[0], "decode_peak_rss_mb": decode_peak_rss_mb(proc.pid),
                   "mean_batch": batch_stats(api) if path == "api" else None}
            if path == "polls-only":
                row.update(decodes_per_s=None, decode_p50_ms=None, decode_p99_ms=None, api_peak_rss_mb=None,
                           decode_peak_rss_mb=None)
            print(row, flush=True)
            record["paths"].append(row)
        if not args.no_worst:
            api, proc = api_proc
            record["rss_before_worst"] = peak_rss_mb(proc.pid)[0]
            record["decode_rss_before_worst"] = decode_peak_rss_mb(proc.pid)
            from prototok import load_model

            record["worst"] = worst_requests(api, proc.pid, max_tokens, load_model(args.model))
        record["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    write("load", record, markdown(record))


if __name__ == "__main__":
    main()
