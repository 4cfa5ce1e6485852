"""Errors only the service has (unknown job, model nobody serves, ...), without the web stack.

Each class carries its stable `code` and the HTTP `status` the API answers it with, as the core
errors (`prototok.errors`) do; `app/errors.py` turns any of them into a JSON answer. The worker
raises some of them too (through `service.store`), so nothing here imports FastAPI.
"""

from __future__ import annotations

from prototok.errors import PrototokError


class ServiceError(PrototokError):
    """An error only the service can have; `headers` go with its answer."""

    code = "invalid_request"
    status = 400
    headers: dict[str, str] | None = None


class JobNotFound(ServiceError):
    code, status = "job_not_found", 404


class JobEnded(ServiceError):
    """DELETE of a job that already finished or failed: there is nothing left to cancel."""

    code, status = "job_ended", 409


class EmbeddingNotFound(ServiceError):
    code, status = "embedding_not_found", 404


class ModelNotServed(ServiceError):
    """A real model, but no live worker listens on its queue: the job would wait forever."""

    code, status = "model_not_served", 409


class TooManyTexts(ServiceError):
    code, status = "too_many_texts", 413


class CorruptJobRecord(ServiceError):
    """A job hash in Redis that this service did not write (not JSON, another function): never run or shown."""

    code, status = "corrupt_job_record", 500


class Unauthorized(ServiceError):
    """No key, or one that is unknown or revoked (RFC 6750: say which scheme to use)."""

    code, status = "unauthorized", 401

    def __init__(self, message: str, invalid: bool = False):
        super().__init__(message)
        self.headers = {"WWW-Authenticate": 'Bearer error="invalid_token"' if invalid else "Bearer"}


class RateLimited(ServiceError):
    code, status = "rate_limited", 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class TooManyJobs(ServiceError):
    code, status = "too_many_jobs", 429

    def __init__(self, message: str, retry_after: int = 10):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class EncodeBudgetExceeded(ServiceError):
    code, status = "encode_budget_exceeded", 413


class ChecksumMismatch(ServiceError):
    """A stored blob whose sha256 no longer matches: refuse it rather than decode wrong text."""

    code, status = "checksum_mismatch", 409
