"""The core's settings: what prototok/ itself reads, from PROTOTOK_* environment variables.

The service extends them with its own (Redis, limits, keys and quotas, the API's decoding) in
service/settings.py. Tests override them by constructing Settings(...) or setting the variables.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "smollm2-135m-instruct"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROTOTOK_", env_file=None, extra="ignore")

    model: str = DEFAULT_MODEL  # the model the CLI and the library load when none is named, and a worker serves
    device: str = "auto"  # "auto" = cuda when present, else cpu
    dtype: str = "auto"  # "auto" = bfloat16 where the hardware has it natively (cuda, CPUs with AVX512-BF16/AMX), else float32
    threads: int = 0  # torch intra-op threads; 0 = every core the process may use; -1 = leave torch's choice alone
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "prototok")
    offline: bool = True  # never reach a model hub; only local files and the embedded model


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
