"""Texts in, encodings out, and back: the API that the CLI, service and experiments share.

Example:
    >>> from prototok import load_model, encode_texts, decode
    >>> lm = load_model("tiny-llama")
    >>> [enc] = encode_texts(lm, ["hi"])
    >>> decode(lm, [enc])[0].text
    'hi'

Encoding is lossless by construction: positions the proto-tokens still get wrong when
the step budget runs out are stored as (position, token id) corrections, while
`c_tokens`/`accuracy` report what the vectors reconstruct on their own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import chain
from typing import TypeVar

import torch

from . import starts
from . import storage as st
from .decoding import decode_ids, generate_grouped, one_pass_logits
from .encoding import Encoding, ids_digest, validate_vectors
from .errors import (
    BadVectors,
    CorruptEncoding,
    DecodeMismatch,
    EmptyText,
    InvalidInput,
    ModelMismatch,
    ModelMMissing,
    PrototokError,
)
from .metrics import c_tokens, h_lm, lead
from .models import LanguageModel, load_model
from .optimize import Optimization, ProgressFn, Run, Solution, check_inputs, step_runs
from .problem import pad_right
from .recipe import Arrangement, EncodeConfig, Method
from .textio import check_unicode, first_difference

T = TypeVar("T")


@dataclass
class Decoded:
    text: str
    ids: list[int]
    c_tokens: int  # from the vectors alone, before corrections
    accuracy: float
    seconds: float  # wall time of the batched decode this result was part of (or of its own redo)
    dtype: str = "float32"  # the model dtype whose pass rebuilt it


def tokenize_checked(lm: LanguageModel, text: str) -> list[int]:
    """Token ids of a text that the tokenizer gives back unchanged; refuse anything else."""
    if not isinstance(text, str) or text == "":
        raise EmptyText("text is empty")
    check_unicode(text)
    ids = lm.tokenize(text)
    back = lm.detokenize(ids) if ids else ""  # a tokenizer may drop characters it has no token for
    if back != text:
        at = first_difference(text, back)
        raise InvalidInput(f"the tokenizer of model '{lm.name}' does not give this text back exactly: at character "
                           f"{at}, {text[at:at + 8]!r} comes back as {back[at:at + 8]!r}; refusing to encode a "
                           "different text")
    return ids


def chunk(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def chunk_size(lm: LanguageModel, cfg: EncodeConfig) -> int:
    room = lm.max_length - 1 - (cfg.mem_tokens if cfg.method is Method.AUTOREGRESSIVE else 1)
    return max(1, min(cfg.chunk_tokens, room))


def encode_texts(
    lm: LanguageModel,
    texts: list[str],
    cfg: EncodeConfig | None = None,
    frozen_m: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
) -> list[Encoding]:
    """Optimise proto-tokens for many texts at once; every chunk of every text is one batch row."""
    task = EncodeTask(lm, texts, cfg, frozen_m, progress)
    while not task.done:
        if task.run is None:
            task.start_next()
        step_runs(lm, [task.run])
        task.advance()
    return task.encodings


class EncodeTask:
    """One request's texts, from tokens to verified encodings: its chunks optimised one
    optimisation batch (`batches`) at a time, then packaged. `encode_texts` steps it alone; a
    continuous batch (prototok/continuous.py) steps its `run` beside other requests' runs, and
    starts its next optimisation batch (`start_next`) when its turn comes.

    Everything a bad request can fail on (options, tokenizer round trip) fails here, in the
    constructor, before anything is optimised."""

    def __init__(self, lm: LanguageModel, texts: list[str], cfg: EncodeConfig | None = None,
                 frozen_m: torch.Tensor | None = None, progress: ProgressFn | None = None):
        cfg = cfg or EncodeConfig()
        check_inputs(lm, cfg, frozen_m)  # before any text is tokenised, let alone optimised
        self.lm, self.texts, self.cfg, self.frozen_m, self.progress = lm, texts, cfg, frozen_m, progress
        self.ids = [tokenize_checked(lm, t) for t in texts]
        size = chunk_size(lm, cfg)
        self.pieces = [chunk(x, size) for x in self.ids]
        self.todo = batches([(t, p) for t, ps in enumerate(self.pieces) for p in ps], cfg)
        self.solutions: list[Solution] = []
        self.encodings: list[Encoding] | None = None if self.todo else []  # no texts: nothing to do
        self.current: Optimization | None = None  # the optimisation batch under way, if one is
        if self.todo:
            self.start_next()

    @property
    def done(self) -> bool:
        return self.encodings is not None

    @property
    def run(self) -> Run | None:
        """The run to step now; None between optimisation batches (see `start_next`) and once done."""
        return self.current.run if self.current is not None else None

    @property
    def rows(self) -> int:
        """Rows the next step trains for this request (what it costs a batch now)."""
        return self.current.run.active_rows if self.current is not None else 0

    @property
    def next_rows(self) -> int:
        """Rows of the next optimisation batch, waiting for `start_next` (0 if none waits)."""
        return len(self.todo[0]) * self.cfg.recipe.seeds if self.todo and self.current is None else 0

    def start_next(self) -> None:
        """Start the next optimisation batch."""
        batch = self.todo.pop(0)
        self.current = Optimization(self.lm, [p for _, p in batch], self.cfg, self.frozen_m, self.progress,
                                    [t for t, _ in batch])

    def advance(self) -> None:
        """After a step: start the next phase, or close the optimisation batch that ended; once
        every chunk is optimised, package the encodings (verified: each rebuilds its text, or this
        raises). The next optimisation batch waits for `start_next`."""
        if self.current is None:
            return
        self.current.advance()
        if not self.current.done:
            return
        self.solutions += self.current.solutions
        self.current = None
        if self.todo:
            return
        out, i = [], 0
        for text, text_ids, ps in zip(self.texts, self.ids, self.pieces):
            sols = self.solutions[i : i + len(ps)]
            i += len(ps)
            out.append(package(self.lm, self.cfg, text, text_ids, ps, sols))
        self.encodings = out


def batches(seqs: list[T], cfg: EncodeConfig) -> list[list[T]]:
    """The optimisation batches of a request's chunks, at most `max_batch_rows` rows (chunks x restarts)
    each. A sharing group must not be split, so shared vectors keep the whole request in one batch."""
    if cfg.share.joint:
        return [seqs] if seqs else []
    n = max(1, cfg.max_batch_rows // cfg.recipe.seeds)
    return [seqs[i : i + n] for i in range(0, len(seqs), n)]


def store_vectors(lm: LanguageModel, cfg: EncodeConfig,
                  rows: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(vectors decode will see, tensors the file holds) for the optimiser's rows: rounded to the
    storage and rebuilt from the basis exactly as a file's reader does (storage.unpack). With
    model_m the file holds e alone; m is the model's start's, which decode attaches as it is."""
    if cfg.model_m:
        stored = st.pack({"e": rows["e"]}, cfg.storage)
        return st.unpack(stored, ("e",), cfg.storage, 0, 0, lm.hidden_size) | {"m": rows["m"]}, stored
    if cfg.plain:
        return rows, None
    stored = st.pack(rows, cfg.storage)
    return st.unpack(stored, ("e", "m"), cfg.storage, cfg.rank, st.BASIS_SEED, lm.hidden_size), stored


def package(lm: LanguageModel, cfg: EncodeConfig, text: str, text_ids: list[int], pieces: list[list[int]],
              sols: list[Solution]) -> Encoding:
    """Package solutions; corrections come from the decode path itself, then it is verified.

    The optimiser judged its vectors inside a training batch (restarts, other texts); the
    argmax of a low-margin position can differ in the one-text decode that `decode` runs.
    So the reference is that decode, and an encoding that does not rebuild its own text
    through it is never returned.
    """
    rows = {name: torch.stack([s.vectors[name] for s in sols]) for name in sols[0].vectors}
    vectors, stored = store_vectors(lm, cfg, rows)
    raw, gap = reference_decode(lm, cfg.method, cfg.arrangement, cfg.recipe.sink, vectors, pieces)
    corrections = [[(p, t) for p, (a, t) in enumerate(zip(r, q)) if a != t] for r, q in zip(raw, pieces)]
    enc = Encoding(
        model=lm.name, tokenizer_fingerprint=lm.tokenizer_fingerprint, hidden_size=lm.hidden_size,
        method=cfg.method, arrangement=cfg.arrangement, lengths=[len(q) for q in pieces],
        vectors=vectors, corrections=corrections, c_tokens=sum(c_tokens(r, q) for r, q in zip(raw, pieces)),
        h_lm=sum(h_lm(lm, q) for q in pieces), steps=max(s.steps for s in sols),
        seconds=max(s.seconds for s in sols), seeds=[s.seed for s in sols], ids_sha256=ids_digest(text_ids),
        share=cfg.share.value, recipe=cfg.recipe.to_dict(), sink=cfg.recipe.sink,
        compute_dtype=dtype_name(lm.dtype), min_margin=gap, storage=cfg.storage, rank=cfg.rank,
        basis_seed=st.BASIS_SEED if cfg.rank else 0, stored=stored, m_ref=model_m_ref(lm, cfg, rows),
    )
    enc.weigh(text)
    # Raises DecodeMismatch rather than hand out an encoding that does not decode; a model_m one is
    # checked as a reader gets it (its file: e alone, m found again by its digest).
    decode(lm, [Encoding.from_bytes(enc.to_bytes()) if enc.m_ref else enc], fallback=False)
    return enc


def model_m_ref(lm: LanguageModel, cfg: EncodeConfig, rows: dict[str, torch.Tensor]) -> dict | None:
    """The m_ref of a model_m encoding: its start's, after checking that m is what every row used."""
    if not cfg.model_m:
        return None
    start = starts.shared_start(lm)
    if not torch.equal(rows["m"], start.m.expand_as(rows["m"])):
        raise ModelMMissing(f"model_m: the start of model '{lm.name}' changed while this text was encoded "
                            "(a `prototok start train` meanwhile?); encode it again")
    return starts.m_ref(start)


def reference_decode(lm: LanguageModel, method: Method, arrangement: Arrangement, sink: bool,
                     vectors: dict[str, torch.Tensor], pieces: list[list[int]]) -> tuple[list[list[int]], float | None]:
    """What the vectors alone give in the decode `decode` runs for one encoding (its chunks in
    one batch), and the smallest lead of a right token over its best rival (one-step only).

    For [mem] generation the prefix is teacher-forced: where the raw argmax differs from the
    text, a stored correction forces the right token, so every later step sees the same prefix.
    """
    lengths = [len(q) for q in pieces]
    if method is not Method.ONE_STEP:
        forced = [dict(enumerate(q)) for q in pieces]
        pairs = generate_grouped(lm, list(vectors["mem"]), lengths, forced, sink)
        return [raw for raw, _ in pairs], None
    logits = one_pass_logits(lm, arrangement, vectors["e"], vectors["m"], lengths, sink).float()  # (K, Nmax, V)
    width, dev = logits.shape[1], logits.device
    tgt = pad_right(pieces).to(dev)  # (K, Nmax)
    mask = torch.arange(width, device=dev)[None, :] < torch.tensor(lengths, device=dev)[:, None]
    raw = logits.argmax(-1)
    leads = lead(logits, tgt)[mask & (raw == tgt)]
    raw = raw.cpu()
    return [raw[i, :n].tolist() for i, n in enumerate(lengths)], (float(leads.min()) if len(leads) else None)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_compatible(lm: LanguageModel, enc: Encoding) -> None:
    if enc.model != lm.name or enc.tokenizer_fingerprint != lm.tokenizer_fingerprint:
        raise ModelMismatch(
            f"encoding was made with model '{enc.model}' (tokenizer {enc.tokenizer_fingerprint}); "
            f"refusing to decode with '{lm.name}' (tokenizer {lm.tokenizer_fingerprint})"
        )
    if enc.hidden_size != lm.hidden_size:
        raise ModelMismatch(f"vectors are {enc.hidden_size}-dim, model '{lm.name}' takes {lm.hidden_size}")
    if any(n > lm.max_length - 1 for n in enc.lengths):
        raise CorruptEncoding(f"a chunk is longer than model '{lm.name}' can take ({lm.max_length - 1} tokens)")


def _raw_decode(lm: LanguageModel, encs: list[Encoding]) -> list[tuple[list[int], list[int]]]:
    """(vectors-alone ids, corrected ids) per encoding; chunks batched per input layout."""
    chunks = [(i, j) for i, enc in enumerate(encs) for j in range(len(enc.lengths))]
    out: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    kind = [(enc.method, enc.arrangement, enc.sink) for enc in encs]
    for method, arr, sink in set(kind):
        mine = [(i, j) for i, j in chunks if kind[i] == (method, arr, sink)]
        lengths = [encs[i].lengths[j] for i, j in mine]
        fixes = [dict(encs[i].corrections[j]) for i, j in mine]
        if method is Method.ONE_STEP:
            e = torch.stack([encs[i].vectors["e"][j] for i, j in mine])  # (C, d)
            m = torch.stack([encs[i].vectors["m"][j] for i, j in mine])  # (C, d)
            raw = decode_ids(lm, arr, e, m, lengths, sink)
            out.update((key, (r, [f.get(p, t) for p, t in enumerate(r)])) for key, r, f in zip(mine, raw, fixes))
        else:
            mems = [encs[i].vectors["mem"][j] for i, j in mine]
            out.update(zip(mine, generate_grouped(lm, mems, lengths, fixes, sink)))
    return [tuple(list(chain.from_iterable(out[(i, j)][part] for j in range(len(enc.lengths)))) for part in (0, 1))
            for i, enc in enumerate(encs)]


def decode(lm: LanguageModel, encs: list[Encoding], fallback: bool = True) -> list[Decoded]:
    """Rebuild the exact texts: one forward pass for all chunks, with stored corrections.

    Batching with other encodings changes the kernels' shapes; a position whose argmax
    flips there is caught by the checksum, and that encoding is decoded again on its own,
    in the batch shape its corrections were made for. If its checksum still fails in lm's
    dtype, it is decoded in the other dtypes this host has (`fallback_dtypes`: first the one
    it was made in, float32 for a file that records none); the checksum makes every try safe,
    and `Decoded.dtype` says which pass rebuilt it. fallback=False: lm's dtype only.
    """
    for enc in encs:
        check_compatible(lm, enc)
        attach_m(lm, enc)
        validate_vectors(enc)
    start = time.perf_counter()
    decoded = _raw_decode(lm, encs)
    if len(encs) > 1:
        for i, enc in enumerate(encs):
            if ids_digest(decoded[i][1]) != enc.ids_sha256:
                decoded[i] = _raw_decode(lm, [enc])[0]
    seconds = _elapsed(lm, start)
    results = []
    for enc, (raw, ids) in zip(encs, decoded):
        if ids_digest(ids) == enc.ids_sha256:
            results.append(_decoded(lm, raw, ids, seconds))
        elif fallback:
            results.append(_decode_in_other_dtypes(lm, enc))
        else:
            raise DecodeMismatch(mismatch_message(lm, enc))
    return results


def _elapsed(lm: LanguageModel, start: float) -> float:
    if lm.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _decoded(lm: LanguageModel, raw: list[int], ids: list[int], seconds: float) -> Decoded:
    ok = c_tokens(raw, ids)
    return Decoded(lm.detokenize(ids), ids, ok, ok / len(ids), seconds, dtype_name(lm.dtype))


def fallback_dtypes(lm: LanguageModel, enc: Encoding) -> list[str]:
    """The dtypes to decode `enc` in when lm's own fails its checksum, in order: the one it was
    made in (float32 before that was recorded), float32, bfloat16, and float16 on CUDA."""
    here = dtype_name(lm.dtype)
    order = [enc.compute_dtype or "float32", "float32", "bfloat16"] + (["float16"] if lm.device.type == "cuda" else [])
    return [d for i, d in enumerate(order) if d != here and d not in order[:i]]


def _decode_in_other_dtypes(lm: LanguageModel, enc: Encoding) -> Decoded:
    """`enc` decoded alone in the first of `fallback_dtypes` whose pass matches its checksum,
    the model loaded once per dtype (`load_model`'s cache); DecodeMismatch naming every dtype tried."""
    tried = [dtype_name(lm.dtype)]
    for name in fallback_dtypes(lm, enc):
        try:
            other = load_model(lm.name, device=str(lm.device), dtype=name)
        except PrototokError:  # a model that loads under no name (built in memory): nothing else to try
            break
        start = time.perf_counter()
        [(raw, ids)] = _raw_decode(other, [enc])
        seconds = _elapsed(other, start)
        tried.append(name)
        if ids_digest(ids) == enc.ids_sha256:
            return _decoded(other, raw, ids, seconds)
    raise DecodeMismatch(mismatch_message(lm, enc, tried))


def attach_m(lm: LanguageModel, enc: Encoding) -> None:
    """Give a model_m encoding read from a file its m: the start m whose digest it records, in
    every chunk, or ModelMMissing (never another m). A no-op for files that store m."""
    if enc.m_ref is None or "m" in enc.vectors:
        return
    m = starts.find_m(lm, enc.m_ref)
    enc.vectors = {**enc.vectors, "m": m.expand(len(enc.lengths), -1).clone()}  # (K, d)


def mismatch_message(lm: LanguageModel, enc: Encoding, tried: list[str] | None = None) -> str:
    here = dtype_name(lm.dtype)
    made = enc.compute_dtype
    if tried and len(tried) > 1:
        return (f"decoded tokens do not match the encoded text's checksum in any dtype tried ({', '.join(tried)}); "
                f"it was made in {made or 'float32 (not recorded)'}: a corrupted file, or made on another kind of "
                "device with too small a margin")
    if made and made != here:
        return (f"decoded tokens do not match the encoded text's checksum: the encoding was made in {made} and "
                f"was decoded in {here}; decode it in {made} (prototok decode --dtype {made}, PROTOTOK_DTYPE={made})")
    return ("decoded tokens do not match the encoded text's checksum (made on another device or machine with "
            f"too small a margin? it was made in {made or 'an unrecorded dtype'}, decoded in {here} on {lm.device.type})")


def check_vectors(lm: LanguageModel, e: torch.Tensor, m: torch.Tensor,
                  lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Client-supplied e, m as (K, d) rows this model can decode at these lengths, or BadVectors."""
    e, m = e.reshape(-1, e.shape[-1]), m.reshape(-1, m.shape[-1])
    if e.shape != m.shape or e.shape[1] != lm.hidden_size or e.shape[0] != len(lengths):
        raise BadVectors(f"e and m must both be ({len(lengths)}, {lm.hidden_size}); got "
                         f"{list(e.shape)} and {list(m.shape)}")
    if not (torch.isfinite(e).all() and torch.isfinite(m).all()):
        raise BadVectors("vectors contain NaN or inf")
    if any(n < 1 or n > lm.max_length - 1 for n in lengths):
        raise BadVectors(f"each length must be between 1 and {lm.max_length - 1}")
    return e, m


def decode_vectors(lm: LanguageModel, e: torch.Tensor, m: torch.Tensor, lengths: list[int],
                   arrangement: Arrangement = Arrangement.E_MN1, sink: bool = False) -> str:
    """Decode client-supplied vectors (no corrections, no checksum): e, m of shape (K, d)."""
    e, m = check_vectors(lm, e, m, lengths)
    ids = decode_ids(lm, arrangement, e, m, lengths, sink)
    return lm.detokenize([t for x in ids for t in x])
