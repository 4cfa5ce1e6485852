"""The API's Prometheus metrics (`GET /metrics`), which hold across processes and hosts.

(Named for what it serves, so it is not mistaken for `prototok/metrics.py`, the method's
accuracy and information measures.)

- jobs by state and model: read from RQ's queues and registries at scrape time;
- encode seconds: the histogram that workers on any host add to in Redis
  (`service/durations.py`), so one scrape of the API sees the whole pool;
- decode latency and batch sizes: measured where decoding runs, in this API process.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from service import safejob
from service.durations import ENCODE_BUCKETS, ENCODE_KEY
from service.queues import live_workers
from service.settings import ServiceSettings

DECODE_SECONDS = Histogram(
    "prototok_decode_seconds", "One-pass decode latency in the API process (forward pass only)",
    ["route"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=None,
)


DECODE_BATCH = Histogram(
    "prototok_decode_batch_requests", "Decode requests joined into one forward pass (app/batcher.py)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=None,
)


class ServiceCollector:
    """Reads the pool's state from Redis at each scrape."""

    def __init__(self, conn: Redis, settings: ServiceSettings):
        self.conn, self.settings = conn, settings

    def collect(self) -> Iterator[Metric]:
        yield self._jobs()
        workers = GaugeMetricFamily("prototok_workers", "Live workers by model", labels=["model"])
        models = [m for m, _ in live_workers(self.conn)]
        for model in sorted(set(models)):
            workers.add_metric([model], models.count(model))
        yield workers
        yield self._encode_seconds()

    def _jobs(self) -> GaugeMetricFamily:
        jobs = GaugeMetricFamily("prototok_jobs", "Jobs by state and model", labels=["state", "model"])
        prefix = self.settings.queue_name + ":"
        for q in Queue.all(connection=self.conn, job_class=safejob.SafeJob, serializer=safejob.SERIALIZER):
            if not q.name.startswith(prefix):
                continue
            model = q.name[len(prefix):]
            safejob.cleanup_abandoned(self.conn, q.name, self.settings.heartbeat_ttl_s)  # dead workers' jobs first
            started = safejob.registry(StartedJobRegistry, q.name, self.conn)
            for state, n in (("queued", q.count), ("running", started.count),
                             ("finished", safejob.registry(FinishedJobRegistry, q.name, self.conn).count),
                             ("failed", safejob.registry(FailedJobRegistry, q.name, self.conn).count)):
                jobs.add_metric([state, model], n)
        return jobs

    def _encode_seconds(self) -> HistogramMetricFamily:
        raw = {k.decode(): v for k, v in self.conn.hgetall(ENCODE_KEY).items()}
        count = int(raw.get("count", 0))
        buckets = [(str(float(le)), int(raw.get(f"le:{le}", 0))) for le in ENCODE_BUCKETS] + [("+Inf", count)]
        return HistogramMetricFamily("prototok_encode_seconds", "Wall time of finished encode jobs (all workers)",
                                     buckets=buckets, sum_value=float(raw.get("sum", 0.0)))


def render(conn: Redis, settings: ServiceSettings) -> bytes:
    registry = CollectorRegistry()
    registry.register(DECODE_SECONDS)
    registry.register(DECODE_BATCH)
    registry.register(ServiceCollector(conn, settings))
    return generate_latest(registry)
