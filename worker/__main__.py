"""`python -m worker`: serve one model (PROTOTOK_MODEL) from one RQ queue on PROTOTOK_REDIS_URL.

Run one per GPU (CUDA_VISIBLE_DEVICES=i) and as many hosts as you like on one Redis.
The model is loaded before the worker takes its first job and kept for every job.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from prototok import PrototokError, load_model
from prototok.models import canonical_name
from service.queues import withdraw
from service.settings import get_settings

from .retry import best_effort, connect
from .runner import Pulse, announce_serving, model_worker

log = logging.getLogger("prototok.worker")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    model = canonical_name(settings.model)
    try:
        lm = load_model(model)
    except PrototokError as exc:
        log.error("cannot load model %s: %s", model, exc)
        return 2
    conn = connect(settings.redis_url)
    name = f"{socket.gethostname()}.{os.getpid()}"
    worker = model_worker(conn, settings, model, name)
    log.info("worker %s serves %s on %s from queue %s, a continuous batch of up to %d rows "
             "(PROTOTOK_WORKER_MAX_ROWS)", name, model, lm.device, worker.queues[0].name, worker.max_rows)
    ttl = settings.heartbeat_ttl_s
    try:
        with Pulse(lambda: announce_serving(conn, lm, model, name, ttl), ttl / 3, "announce"):
            worker.work(with_scheduler=False, logging_level=logging.getLevelName(log.getEffectiveLevel()))
    finally:
        best_effort("withdrawing the worker", lambda: withdraw(conn, model, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
