"""How long encode jobs take, recorded by the workers that ran them, in Redis.

A worker on any host adds each finished job's wall time to one shared histogram (cumulative
buckets, as Prometheus wants) and to its model's last few durations. The API reads the first
for /metrics (`app/telemetry.py`), so one scrape sees the whole pool, and the second for the
rough ETA of queued jobs. Plain Redis: the worker writes here without any metrics library.
"""

from __future__ import annotations

import statistics

from redis import Redis

ENCODE_KEY = "prototok:metrics:encode_seconds"
RECENT_PREFIX = "prototok:metrics:recent:"  # list per model: the last RECENT_N encode durations
RECENT_N = 20
ENCODE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


def record_encode(conn: Redis, seconds: float, model: str | None = None) -> None:
    """Add one finished encode job to the shared histogram (cumulative buckets, as Prometheus wants)
    and to the model's recent durations."""
    with conn.pipeline() as pipe:
        for le in ENCODE_BUCKETS:
            if seconds <= le:
                pipe.hincrby(ENCODE_KEY, f"le:{le}", 1)
        pipe.hincrby(ENCODE_KEY, "count", 1)
        pipe.hincrbyfloat(ENCODE_KEY, "sum", seconds)
        if model:
            pipe.lpush(RECENT_PREFIX + model, round(seconds, 3))
            pipe.ltrim(RECENT_PREFIX + model, 0, RECENT_N - 1)
        pipe.execute()


def typical_encode_seconds(conn: Redis, model: str) -> float | None:
    """Median of the model's recent encode durations, else the all-model mean; None before any job ended."""
    recent = [float(v) for v in conn.lrange(RECENT_PREFIX + model, 0, -1)]
    if recent:
        return statistics.median(recent)
    count, total = conn.hmget(ENCODE_KEY, "count", "sum")
    return float(total) / int(count) if count and int(count) > 0 else None
