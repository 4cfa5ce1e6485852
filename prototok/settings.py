"""The core's settings: what prototok/ itself reads, from PROTOTOK_* environment variables.

The service extends them with its own (Redis, limits, keys and quotas, the API's decoding) in
service/settings.py. Choices are typed, so a value that is not one of them is refused when the
settings are read, with one line naming the variable and the values it takes (SettingsError):
each process reads its settings at start-up (the CLI before any command runs), not at a request.
Tests override them by constructing Settings(...) or setting the variables.
"""

from __future__ import annotations

import re
import typing
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

DEFAULT_MODEL = "smollm2-135m-instruct"
ENV_PREFIX = "PROTOTOK_"
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")  # auto: cuda when present, else cpu
Dtype = Literal["auto", "float32", "bfloat16", "float16"]


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
        raise ValueError(f"is not one of: {', '.join(DEVICES)}")
    return value


Device = Annotated[str, AfterValidator(_device)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=None, extra="ignore")

    model: str = DEFAULT_MODEL  # the model the CLI and the library load when none is named, and a worker serves
    device: Device = "auto"
    # auto: bfloat16 where the hardware multiplies it natively (CUDA; CPUs with AVX512-BF16, AMX or Arm BF16),
    # else float32 (prototok.models.resolve_dtype)
    dtype: Dtype = "auto"
    threads: int = 0  # torch intra-op threads; 0 = every core the process may use; -1 = leave torch's choice alone
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "prototok")
    offline: bool = True  # never reach a model hub; only local files and the embedded model


class SettingsError(ValueError):
    """A PROTOTOK_* variable whose value its setting does not take; the message is one line."""


S = TypeVar("S", bound=BaseSettings)


def read(cls: type[S]) -> S:
    """`cls()` from the environment, or SettingsError naming each variable that is wrong."""
    try:
        return cls()
    except ValidationError as exc:
        raise SettingsError("; ".join(_problem(cls, err) for err in exc.errors(include_url=False))) from None
    except SourceError as exc:  # a list variable that is not JSON: 'error parsing value for field "x" ...'
        field = re.search(r'field "(\w+)"', str(exc))
        name = ENV_PREFIX + field.group(1).upper() if field else "a PROTOTOK_* variable"
        raise SettingsError(f"{name} is not valid: not a JSON list (e.g. '[\"a\", \"b\"]')") from None


def _problem(cls: type[BaseSettings], err: dict) -> str:
    field = str(err["loc"][0])
    allowed = choices(cls, field)
    message = err["msg"].removeprefix("Value error, ")
    if allowed:
        message = f"is not one of: {', '.join(allowed)}"
    elif not message.startswith("is not"):
        message = f"is not valid: {message}"
    return f"{ENV_PREFIX}{field.upper()}={err.get('input')!r} {message}"


def choices(cls: type[BaseSettings], field: str) -> tuple[str, ...]:
    """The values a typed setting takes (a Literal, alone or in a list), else ()."""
    kind = cls.model_fields[field].annotation
    while typing.get_origin(kind) in (list, tuple, Annotated):
        kind = typing.get_args(kind)[0]
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else ()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """This process's core settings, read once (SettingsError for a bad value)."""
    return read(Settings)
