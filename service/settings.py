"""The service's settings: the core's (prototok/settings.py) plus what the API and the workers
read, from the same PROTOTOK_* environment variables: Redis, jobs, limits, keys and quotas, and
the API's decoding.

The API (app/main.py) and the worker (`python -m worker`) read them first thing, and so does
`prototok keys`: a value that is not one its setting takes stops the process there, with one
line naming the variable and the values it takes, never at a caller's request.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Literal

from pydantic import Field

from prototok import settings as core
from prototok.settings import Settings, SettingsError, read

Storage = Literal["float32", "float16", "bfloat16", "int8"]  # prototok.storage.STORAGES
Recipe = Literal["tuned", "paper"]  # prototok.recipe.RECIPES
DecodeDtype = Literal["float32", "bfloat16", "float16"]


class ServiceSettings(Settings):
    recipe: Recipe = "tuned"  # the recipe of a job whose request names none
    # How a job's encodings store e and m when its request names neither storage, rank nor compact
    # (one-step jobs, unshared or model_m). int8: the smallest storage that kept the size benchmark's
    # sentences lossless from the vectors alone, at about float32's encode time (bench/results/size.md).
    # The CLI and the library store float32 unless told otherwise.
    storage: Storage = "int8"
    rank: int = Field(0, ge=0)

    # With a password (requirepass or an ACL user) the URL carries it: redis://[user]:PASSWORD@host:6379/0
    # (rediss:// for TLS). Whoever can write to this Redis can read, change and delete every job and
    # encoding and queue encode jobs; it cannot make the API or a worker run code (docs/service/security.md).
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue_name: str = "prototok"  # prefix of the RQ queues, one per model: {queue_name}:{model}
    max_text_chars: int = 20_000  # longer texts are refused with 413
    max_batch_texts: int = 64  # texts in one POST /v1/encode
    max_body_bytes: int = 8 * 1024 * 1024  # larger request bodies are refused with 413 before parsing
    max_steps_limit: int = 5000  # a job may not ask for more optimisation steps than this
    job_timeout_s: int = 3600  # RQ ends a job that runs longer
    job_result_ttl_s: int = 7 * 24 * 3600  # job records; stored encodings never expire
    progress_every: int = 10  # steps between progress reports to Redis
    heartbeat_ttl_s: int = 30  # a worker silent this long is dead: its models unlisted, its running job failed
    job_retries: int = 0  # re-runs of a job whose worker died or that raised; 0 = it ends failed with the reason
    # rows (chunks x restarts) a worker optimises in one continuous batch, over all the jobs it holds;
    # 0 = the default for its device and dtype (worker/runner.py), 1 = one job at a time
    worker_max_rows: int = Field(0, ge=0)
    redis_retry_max_s: float = Field(10.0, gt=0)  # a worker retries Redis writes with backoff up to this wait

    # the API's decoding: one lane per model (app/batcher.py), its passes in a decode process (app/decode_process.py)
    api_preload: bool = True  # the API's decode process loads its model at start-up, not at the first decode
    api_decode_models: list[str] = Field(default_factory=list)  # models the API decodes with besides `model`
    # dtypes in which the API may keep another copy of a model, to decode encodings made in that
    # dtype in it (e.g. ["float32"] beside a bfloat16 API); others decode in the API's own dtype
    api_decode_dtypes: list[DecodeDtype] = Field(default_factory=list)
    max_decode_tokens: int = Field(4096, ge=1)  # positions one decode may ask for (JSON, upload or stored): 413 above
    decode_batch_tokens: int = Field(1024, ge=1)  # positions one batched pass may join (a bigger request runs alone)
    decode_batch_wait_ms: float = Field(2.0, ge=0)  # how long a lane waits for company for a pass
    decode_queue_max: int = Field(256, ge=1)  # decodes waiting in their model's lane; more: 503 decode_busy
    decode_threads: int = Field(0, ge=0)  # torch threads of the decode process; 0 = cores - 1 (a core for requests)
    decode_nice: int = Field(5, ge=0, le=19)  # CPU niceness of the decode process, so requests go first
    # seconds a decode process may take to answer one batch (its passes, and the one-by-one redo of a batch that
    # failed); past it the process is killed, the batch answers 503 decode_unavailable and a new process serves the
    # next one. Far above the longest pass the limits allow (SmolLM2, 4096 positions, 2-core CPU: about 10 s)
    decode_pass_timeout: float = Field(120.0, ge=1, le=3600)

    # access: API keys, quotas and rate limits
    auth: bool = True  # every /v1 route needs `Authorization: Bearer KEY`; PROTOTOK_AUTH=off for a local sandbox
    rate_limit_per_s: int = 20  # requests per second per key; over it: 429 rate_limited; 0 = no limit
    max_jobs_per_key: int = 4  # a key's queued + running jobs; one more: 429 too_many_jobs; 0 = no limit
    max_encode_budget: int = 100_000_000  # per job: sum of text bytes x max_steps x seeds; over it: 413


@lru_cache(maxsize=1)
def get_settings() -> ServiceSettings:
    """This service process's settings, read once. A bad value ends the process with one line on
    stderr (exit 2): it is read at start-up, before the process serves anything."""
    try:
        return read(ServiceSettings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def clear_cache() -> None:
    """Read the settings afresh at the next call, the core's and the service's (tests change them)."""
    core.get_settings.cache_clear()
    get_settings.cache_clear()
