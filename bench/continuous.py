"""Continuous batching in the worker: N one-text jobs posted at once through the real API and one
real worker, the worker's cap (PROTOTOK_WORKER_MAX_ROWS) at 1 (one job at a time) against the
default, in one run, side by side.

For each N and cap: a fresh worker process serves the model with that cap; N jobs (one text
each, from the frozen evaluation set, bench/data/eval.jsonl: prose, random words and mixed
real-world lines in turn) are posted at once; the wall time runs from the first job's enqueue
to the last job's end (the API's own timestamps), so polling does not count. Per job: latency
(enqueue to end), the steps its text took, whether its vectors alone rebuild it (no stored
correction), and, after the timing, whether the stored encoding decodes to exactly its text.

`--step-rows R ...` instead times one optimisation step of a continuous batch of R one-text
requests (the worker's step at R rows), to choose a device's default cap.

Run: python -m bench.continuous [--n 8 32] [--caps 1 0] [--model M] [--max-steps S]
On a GPU (timing with a random 1B-class Llama, which never converges, so --max-steps bounds it):
  python -m bench.continuous --random-model 1b --n 256 --caps 1 0 --max-steps 50 --storage float32
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import httpx

from prototok.results.provenance import utc_now
from prototok.results.tables import records_table

from . import evalset
from .common import machine, write
from .load import free_port, service_env, spawn, start_redis, wait_until

REPO = Path(__file__).resolve().parents[1]
KINDS = ("prose", "prose", "random", "mixed")  # the texts' kinds, in turn
RANDOM_SHAPES = {  # --random-model: Llama shapes (SmolLM2's tokenizer); "small" checks the command on a CPU
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8},
    "small": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2},
}


def eval_texts(n: int) -> list[str]:
    pools = {kind: evalset.texts(kind) for kind in set(KINDS)}
    used = {kind: 0 for kind in pools}
    out = []
    while len(out) < n:
        kind = KINDS[len(out) % len(KINDS)]
        pool = pools[kind]
        out.append(pool[used[kind] % len(pool)])
        used[kind] += 1
    return out


def when(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_worker(stack: ExitStack, tmp: Path, env: dict[str, str], cap: int, http: httpx.Client,
                 model: str) -> tuple[subprocess.Popen, Path]:
    log = tmp / f"worker-{cap}-{time.monotonic_ns()}.log"
    proc = spawn(stack, [sys.executable, "-m", "worker"], {**env, "PROTOTOK_WORKER_MAX_ROWS": str(cap)}, log)
    wait_until(lambda: model in http.get("/readyz").json().get("models", []), 900, "the worker", proc)
    return proc, log


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(60)


def one_side(http: httpx.Client, texts: list[str], options: dict, model: str) -> dict:
    """Post every text as its own job at once; wait for all; what each took."""
    ids = []
    for text in texts:
        r = http.post("/v1/encode", json={"text": text, "model": model, "options": options})
        r.raise_for_status()
        ids.append(r.json()["job_id"])
    views: dict[str, dict] = {}
    while len(views) < len(ids):
        time.sleep(2.0)
        for job_id in ids:
            if job_id not in views:
                body = http.get(f"/v1/jobs/{job_id}").json()
                if body["status"] in ("finished", "failed"):
                    views[job_id] = body
    jobs = []
    for job_id, text in zip(ids, texts):
        body = views[job_id]
        row = {"status": body["status"], "latency_s": when(body["ended_at"]) - when(body["enqueued_at"])}
        if body["status"] == "finished":
            emb = http.get(f"/v1/embeddings/{body['embedding_ids'][0]}").json()
            row.update(steps=emb["steps"], tokens=emb["length"], from_vectors=emb["corrections"] == 0,
                       emb_id=body["embedding_ids"][0])
        jobs.append(row)
    first = min(when(views[i]["enqueued_at"]) for i in ids)
    last = max(when(views[i]["ended_at"]) for i in ids)
    for row, text in zip(jobs, texts):  # after the timing: the stored encoding rebuilds the exact text
        if "emb_id" in row:
            row["exact"] = http.get(f"/v1/embeddings/{row.pop('emb_id')}/text", timeout=600).json()["text"] == text
    return {"wall_s": last - first, "jobs": jobs}


def summary(n: int, cap: int, resolved: int, side: dict, base: dict | None) -> dict:
    done = [j for j in side["jobs"] if j["status"] == "finished"]
    lat = [j["latency_s"] for j in side["jobs"]]
    out = {"texts": n, "max_rows": f"{cap} (= {resolved})" if cap == 0 else str(cap), "wall_s": round(side["wall_s"], 1),
           "texts_per_s": round(n / side["wall_s"], 4), "p50_latency_s": round(percentile(lat, 0.5), 1),
           "p95_latency_s": round(percentile(lat, 0.95), 1),
           "median_steps": statistics.median(j["steps"] for j in done) if done else None,
           "finished": len(done), "exact": sum(bool(j.get("exact")) for j in done),
           "from_vectors": sum(j["from_vectors"] for j in done)}
    out["speedup"] = round(base["wall_s"] / side["wall_s"], 2) if base else 1.0
    return out


def resolved_cap(log: Path) -> int:
    """The cap the worker reports in its log ('... max rows N')."""
    for line in log.read_text(errors="replace").splitlines():
        if "a continuous batch of up to" in line:
            return int(line.split("a continuous batch of up to")[1].split()[0])
    return 0


def random_model(size: str, into: Path) -> str:
    """A randomly initialised Llama of about `size` parameters with SmolLM2's tokenizer, saved as
    a local model directory (timing only: it never converges)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prototok import load_model

    tok = load_model().tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **RANDOM_SHAPES[size])
    path = into / f"random-llama-{size}"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def step_rows(rows_list: list[int], steps: int, model: str | None) -> None:
    """Seconds per step of a continuous batch of R one-text requests (prose of the eval set)."""
    from prototok import load_model
    from prototok.codec import EncodeTask
    from prototok.continuous import ContinuousBatch
    from prototok.recipe import TUNED, EncodeConfig

    lm = load_model(model)
    cfg = EncodeConfig(recipe=TUNED.with_(max_steps=steps + 5, margin=99.0), storage="float32")  # no text stops early
    texts = evalset.texts("prose")
    records = []
    for rows in rows_list:
        batch = ContinuousBatch(lm)
        for i in range(rows):
            batch.add(EncodeTask(lm, [texts[i % len(texts)]], cfg))
        batch.step()  # warm-up: first-call allocations
        start = time.perf_counter()
        for _ in range(steps):
            batch.step()
        per_step = (time.perf_counter() - start) / steps
        records.append({"rows": rows, "ms_per_step": round(per_step * 1000, 1),
                        "row_steps_per_s": round(rows / per_step, 2)})
        print(records[-1], flush=True)
    base = records[0]["row_steps_per_s"] / records[0]["rows"]
    for r in records:
        r["throughput_vs_1_row"] = round(r["row_steps_per_s"] / base, 2)
    write("continuous-step-rows", {"machine": machine(), "model": lm.name, "dtype": str(lm.dtype), "steps": steps,
                                   "records": records},
          records_table(records, list(records[0])) + f"\n\nModel {lm.name} ({str(lm.dtype).removeprefix('torch.')}), one step of a "
          f"continuous batch of R one-text requests (prose of bench/data/eval.jsonl), mean of {steps} steps after "
          "one warm-up step. `python -m bench.continuous --step-rows ...`")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[8, 32], help="jobs posted at once")
    ap.add_argument("--caps", type=int, nargs="+", default=[1, 0], help="PROTOTOK_WORKER_MAX_ROWS per side (0: default)")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--random-model", choices=sorted(RANDOM_SHAPES), help="time a random-init model of this size")
    ap.add_argument("--max-steps", type=int, default=None, help="step budget of every job (default: the recipe's)")
    ap.add_argument("--storage", default=None, help="the jobs' storage (default: the service's, int8, whose polish "
                                                    "adds up to 100 steps to a text that misses the margin)")
    ap.add_argument("--step-rows", type=int, nargs="*", help="time one step at these row counts instead")
    ap.add_argument("--steps", type=int, default=10, help="with --step-rows: steps timed per row count")
    args = ap.parse_args()
    if args.step_rows:
        step_rows(args.step_rows, args.steps, args.model)
        return
    options = {k: v for k, v in (("max_steps", args.max_steps), ("storage", args.storage)) if v}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-continuous-") as tmpdir:
        tmp = Path(tmpdir)
        model = random_model(args.random_model, tmp) if args.random_model else args.model
        redis_url = start_redis(stack, tmp)
        env = service_env(redis_url, PROTOTOK_MODEL=model, PROTOTOK_API_PRELOAD="false", PROTOTOK_DECODE_THREADS="1",
                          PROTOTOK_MAX_BATCH_TEXTS="512", PROTOTOK_API_DECODE_MODELS=json.dumps([model]),
                          PROTOTOK_OFFLINE="true")
        port = free_port()
        spawn(stack, [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port),
                      "--no-access-log"], env, tmp / "api.log")
        http = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120))
        wait_until(lambda: http.get("/healthz").status_code == 200, 300, "the API")
        rows, begun = [], utc_now()
        for n in args.n:
            texts, base = eval_texts(n), None
            for cap in args.caps:
                worker, log = start_worker(stack, tmp, env, cap, http, model)
                started = time.perf_counter()
                side = one_side(http, texts, options, model)
                stop(worker)
                row = summary(n, cap, resolved_cap(log), side, base)
                base = base or side
                rows.append(row)
                print(row, f"({time.perf_counter() - started:.0f} s with the checks)", flush=True)
                write("continuous", {"started": begun, "machine": machine(), "model": model, "options": options,
                                     "rows": rows},
                      records_table(rows, list(rows[0])) + notes(model, options), append=False)


def notes(model: str, options: dict) -> str:
    return (f"\n\nModel {model}; job options {options or 'the service recipe'}. One worker process (all cores), one "
            "API; N one-text jobs posted at once; wall = first enqueue to last end (API timestamps); latency = a "
            "job's enqueue to its end; `from_vectors`: texts whose vectors alone rebuild them (no stored "
            "correction); `exact`: stored encodings that decode to exactly their text. Texts: bench/data/eval.jsonl, "
            "prose, prose, random, mixed in turn. `python -m bench.continuous`")


if __name__ == "__main__":
    main()
