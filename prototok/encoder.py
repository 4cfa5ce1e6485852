"""A learned encoder: the proto-tokens' start predicted from the text itself.

The frozen LM reads [BOS] + the text once (no gradient); a small head pools one layer's hidden
states with two learnt queries (one for e, one for m) and an MLP turns each pooled vector into a
change of the model's warm start (starts.py): e = base_e + scale * delta_e, likewise m. The last
layer starts at zero, so an untrained head predicts exactly the warm start. Encodes with
`Recipe.start = "encoder"` begin there and optimise as usual: the head only moves the start, the
file still stores the text's own e and m, and decoding never needs the head.

A head is a small .safetensors file (its weights, the base e and m it changes, JSON metadata: the
model, its weights fingerprint, the layer, how it was trained). `prototok encoder train` writes one
into the cache dir, where it is found before the one shipped with the package; a file counts only
for the weights it was trained on (`LanguageModel.weights_fingerprint`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import CorruptEncoding, InvalidInput
from .models import LanguageModel
from .problem import pad_right
from .settings import get_settings
from .starts import SHIPPED, file_name, file_version, write_atomically

FORMAT = "prototok-encoder/1"


@dataclass(frozen=True)
class HeadShape:
    """What a head file's weights need to be rebuilt: the width, the layer read, the MLP width."""

    hidden_size: int
    layer: int
    mlp: int = 512


class EncoderHead(nn.Module):
    """(B, T, d) hidden states and a (B, T) mask -> (B, d) e and (B, d) m."""

    def __init__(self, shape: HeadShape, base_e: torch.Tensor, base_m: torch.Tensor, scale: float):
        super().__init__()
        d = shape.hidden_size
        self.shape = shape
        self.norm = nn.LayerNorm(d)
        self.query = nn.Parameter(torch.randn(2, d) / d**0.5)  # row 0 pools for e, row 1 for m
        self.key = nn.Linear(d, d, bias=False)
        self.slot = nn.Parameter(torch.zeros(2, d))  # tells the shared MLP which vector it makes
        self.mlp_in = nn.Linear(d, shape.mlp)
        self.mlp_out = nn.Linear(shape.mlp, d)
        nn.init.zeros_(self.mlp_out.weight)
        nn.init.zeros_(self.mlp_out.bias)
        self.register_buffer("base", torch.stack([base_e, base_m]).float())  # (2, d)
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm(hidden.float())  # (B, T, d)
        scores = torch.einsum("qd,btd->bqt", self.query, self.key(h)) / h.shape[-1] ** 0.5  # (B, 2, T)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        pooled = torch.einsum("bqt,btd->bqd", scores.softmax(-1), h) + self.slot  # (B, 2, d)
        delta = self.mlp_out(nn.functional.gelu(self.mlp_in(pooled)))  # (B, 2, d)
        out = self.base + self.scale * delta
        return out[:, 0], out[:, 1]


@dataclass
class Encoder:
    """A head and the file it came from (None while it trains)."""

    head: EncoderHead
    meta: dict
    path: Path | None = None

    @property
    def layer(self) -> int:
        return self.head.shape.layer


def new_encoder(lm: LanguageModel, base_e: torch.Tensor, base_m: torch.Tensor, layer: int | None = None,
                mlp: int = 512, seed: int = 0) -> Encoder:
    """An untrained head for `lm` (it predicts base_e and base_m for every text): `layer` defaults
    to the middle of the model."""
    n_layers = int(lm.model.config.num_hidden_layers)
    layer = n_layers // 2 if layer is None else layer
    if not 0 <= layer <= n_layers:
        raise InvalidInput(f"layer must be in 0..{n_layers} for model '{lm.name}', got {layer}")
    torch.manual_seed(seed)
    head = EncoderHead(HeadShape(lm.hidden_size, layer, mlp), base_e, base_m, lm.embedding_std)
    return Encoder(head, {"model": lm.name, "weights_fingerprint": lm.weights_fingerprint})


def hidden_states(lm: LanguageModel, seqs: list[list[int]], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen LM's layer-`layer` states over [BOS] + each sequence, right-padded: (B, T, d) float32
    on the model's device and the (B, T) mask of real positions. No gradient."""
    bos = [] if lm.bos_id is None else [lm.bos_id]
    rows = [bos + list(q) for q in seqs]
    ids = pad_right(rows).to(lm.device)
    lengths = torch.tensor([len(r) for r in rows], device=lm.device)
    mask = torch.arange(ids.shape[1], device=lm.device)[None, :] < lengths[:, None]
    with torch.no_grad():
        out = lm.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
    return out.hidden_states[layer].float(), mask


def predict(lm: LanguageModel, enc: Encoder, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, d) e and (S, d) m, float32 on the model's device: the start of each sequence."""
    hidden, mask = hidden_states(lm, seqs, enc.layer)
    with torch.no_grad():
        e, m = enc.head.to(lm.device)(hidden, mask)
    return e, m


def candidates(lm: LanguageModel) -> list[Path]:
    """Where a head for this model may be: the cache dir (trained here), then the package."""
    name = file_name(lm, "encoder")
    return [get_settings().cache_dir / "encoders" / name, SHIPPED / name]


def find_encoder(lm: LanguageModel) -> Encoder | None:
    """The first head trained on exactly this model's weights, or None. A stat per candidate per
    call: a head written since, by any process, counts from the next call."""
    for path in candidates(lm):
        version = file_version(path)
        if version is not None:
            enc = _read(str(path), *version)
            if (enc.meta.get("weights_fingerprint") == lm.weights_fingerprint
                    and enc.head.shape.hidden_size == lm.hidden_size):
                return enc
    return None


def require_encoder(lm: LanguageModel) -> Encoder:
    """`find_encoder`, or InvalidInput saying how to make one (before any text is optimised)."""
    enc = find_encoder(lm)
    if enc is None:
        raise InvalidInput(f"start=encoder: no encoder for model '{lm.name}' on this host; train one with "
                           f"`prototok encoder train --model {lm.name}` (looked in "
                           f"{', '.join(map(str, candidates(lm)))}), or use start=warm")
    return enc


@lru_cache(maxsize=8)
def _read(path: str, inode: int, mtime_ns: int, size: int) -> Encoder:
    return read_encoder(Path(path))


def read_encoder(path: Path) -> Encoder:
    """A head file, checked: its format, shape and finite weights (nothing is unpickled)."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        shape = HeadShape(**meta["shape"])
        base = tensors.pop("base")
        head = EncoderHead(shape, base[0], base[1], float(tensors.pop("scale")))
        head.load_state_dict({**tensors, "base": base, "scale": head.scale}, strict=True)
    except Exception as exc:
        raise CorruptEncoding(f"{path} is not a readable encoder file: {exc}") from exc
    if not all(torch.isfinite(p).all() for p in head.state_dict().values()):
        raise CorruptEncoding(f"{path}: the encoder's weights are not all finite")
    head.eval().requires_grad_(False)
    return Encoder(head, meta, path)


def write_encoder(path: Path, lm: LanguageModel, enc: Encoder, dtype: torch.dtype = torch.float16,
                  **meta: object) -> Path:
    """Save a head (weights in `dtype`, base and scale in float32), replacing `path` in one rename."""
    state = enc.head.state_dict()
    tensors = {k: v.detach().cpu().contiguous().to(torch.float32 if k in ("base", "scale") else dtype)
               for k, v in state.items()}
    meta = {**enc.meta, "model": lm.name, "weights_fingerprint": lm.weights_fingerprint,
            "format": FORMAT, "shape": asdict(enc.head.shape),
            "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {k: json.dumps(v) for k, v in meta.items()}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    _read.cache_clear()
    return path
