"""What the API (`app/`) and the workers (`worker/`) share: the Redis layout, the RQ jobs, and
the errors both can raise.

Only Redis, RQ, the standard library and `prototok` here, never FastAPI or Starlette: a GPU
worker imports this package and must not load the web stack (tests/test_service_layers.py
checks). `prototok keys ...` (cli.py, registered with the core's CLI through an entry point)
needs Redis only, for the same reason.

    settings.py   the service's settings: the core's plus Redis, jobs, limits, keys, quotas, decoding
    cli.py        `prototok keys create|list|revoke`
    errors.py     ServiceError and its subclasses, each with its stable `code` and HTTP `status`
    keys.py       API keys (hashed in Redis) and `Caller`, who a request comes from
    store.py      stored encodings: one checksummed Redis hash each, never expiring
    queues.py     one RQ queue per model, the live-worker registry, the job payload (EncodeConfig as JSON)
    safejob.py    RQ jobs kept as JSON only, running one function: `SafeJob`, `queue`, `registry`, `fetch`
    cancel.py     the cancel flag the API sets and the worker reads
    quotas.py     per-key request rate, jobs at once and encode budget
    durations.py  encode durations workers record, for /metrics and queue ETAs
"""
