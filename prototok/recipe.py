"""The knobs of proto-token optimisation: input arrangements, sharing modes and the recipe.

References: Mezentsev & Oseledets 2025, "Exploring the Latent Capacity of LLMs for
One-Step Text Generation" (Table 1 arrangements, Table 2 sharing, training details);
Kuratov et al. 2025, "Cramming 1568 tokens into a single vector" (the [mem] baseline
and the embedding-std initialisation).

A config checks itself when it is built (and on every `with_`), so a bad option fails where
it is given, with the field it names, as `InvalidInput` (CLI exit 2, HTTP 422), never deep
in an optimisation run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from numbers import Integral, Real

from .errors import InvalidInput
from .storage import check_storage, is_plain


class Arrangement(str, Enum):
    """How the two proto-tokens e and m fill an input of length N (paper, Table 1)."""

    ONE = "one"  # [e] x N: a single trainable vector repeated
    HALVES = "halves"  # [e] x ceil(N/2), then [m] x floor(N/2)
    PAIRS = "pairs"  # (e, m) pairs, cut to N positions
    E_MN = "e_mN"  # e, then [m] x N; e's own prediction is unsupervised
    E_MN1 = "e_mN-1"  # e, then [m] x (N-1): the paper's main scheme


class ShareMode(str, Enum):
    """Which proto-token is shared inside a group of texts (paper, Table 2)."""

    NONE = "none"  # e and m per text (and per seed)
    SHARED_M = "shared_m"  # one m per group and seed, trained jointly; e per text
    SHARED_E = "shared_e"  # one e per group and seed, trained jointly; m per text
    FROZEN_M = "frozen_m"  # m given (from an earlier shared run) and fixed; only e trains

    @property
    def joint(self) -> bool:
        """Several texts train one vector: their rows are judged together and never split across batches."""
        return self in (ShareMode.SHARED_M, ShareMode.SHARED_E)


class Method(str, Enum):
    """One forward pass from [e, m, ...] (the paper) or greedy decoding from [mem] (Kuratov)."""

    ONE_STEP = "one_step"
    AUTOREGRESSIVE = "autoregressive"


class Init(str, Enum):
    """Initialisation of trainable vectors."""

    NORMAL = "normal"  # N(0, 1) * init_scale: the paper's text
    EMBEDDING = "embedding"  # N(0, 1) * std(embedding matrix) * init_scale: Kuratov's repo


class StartFrom(str, Enum):
    """Where the first restart's e and m begin (later restarts, low-rank codes and [mem] begin at random)."""

    RANDOM = "random"  # drawn as `init` says
    WARM = "warm"  # the model's warm start (prototok/starts.py), or at random where it has none
    ENCODER = "encoder"  # predicted from the text by the model's encoder head (prototok/encoder.py)


class Schedule(str, Enum):
    CONSTANT = "constant"  # the paper
    COSINE = "cosine"  # linear warm-up, then cosine decay to lr * min_lr_ratio


def _coerce(obj: object, **enums: type[Enum]) -> None:
    """Let enum fields be given by value ("e_mN-1"), as the CLI and the API do."""
    for name, enum in enums.items():
        value = getattr(obj, name)
        try:
            object.__setattr__(obj, name, enum(value))
        except ValueError:
            raise InvalidInput(f"{name}: unknown value {value!r} (choose from "
                               f"{', '.join(m.value for m in enum)})") from None


def _integer(obj: object, name: str, low: int | None = None) -> None:
    value = getattr(obj, name)
    if not isinstance(value, Integral) or isinstance(value, bool) or (low is not None and value < low):
        raise InvalidInput(f"{name} must be an integer{'' if low is None else f' >= {low}'}, got {value!r}")


def _number(obj: object, name: str, low: float, high: float = math.inf, low_open: bool = False,
            high_open: bool = True) -> None:
    """A finite real in [low, high) (or (low, ...] as the flags say)."""
    value = getattr(obj, name)
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        span = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise InvalidInput(f"{name} must be a finite number in {span}, got {value!r}")


@dataclass(frozen=True)
class Recipe:
    """Optimisation recipe. Defaults are the paper's training details."""

    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.9  # the paper's (0.9, 0.9), not Adam's usual 0.999
    weight_decay: float = 0.01
    max_steps: int = 5000
    init: Init = Init.NORMAL
    init_e: Init | None = None  # e's own init, if it differs from m's (None = same as `init`)
    init_scale: float = 1.0  # multiplies the init std
    lr_e_scale: float = 1.0  # e's learning rate = lr x this (e alone must predict t1 at its position)
    sink: bool = False  # put the model's BOS embedding (frozen) before [e, m, ...]; see layouts.py
    schedule: Schedule = Schedule.CONSTANT
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of lr
    seeds: int = 1  # random restarts, run side by side in one batch; the best is kept
    seed: int = 0  # base seed; restart k uses seed + k
    stop_accuracy: float = 1.0  # a text stops training once a restart reaches this
    # A position counts as solved only when its correct logit leads every other by this much
    # (nats): argmax then survives another batch shape, thread count, dtype or device.
    margin: float = 0.0
    # Successive halving of restarts: every this many steps each text keeps the better half of
    # its restarts (by accuracy, then loss), down to one; 0 = every restart runs to the end.
    halve_every: int = 0
    # A restart still unsolved this many steps after it (re)started begins again from fresh
    # vectors (the next seed), with its own warm-up and cosine over this many steps; the best
    # state of all attempts is kept. 0 = never (the schedule then spans max_steps).
    restart_every: int = 0
    # Cross-entropy on logits where the right token's is lowered by this many nats (additive-margin
    # softmax): the loss keeps pushing a position until it leads its rivals by about this much,
    # which is what the stop test asks for (`margin`), while plain CE (0) spends its gradient
    # on positions that are already safe.
    loss_margin: float = 0.0
    # With a storage below float32 (EncodeConfig.storage): after the normal optimisation, up to this
    # many straight-through steps at the schedule's final lr (lr x min_lr_ratio), the stored value in the
    # forward pass, so the stored vectors decode without corrections where possible. 0 = none.
    ste_steps: int = 100
    # Where the first restart begins: at random, at the model's warm start (prototok/starts.py: an
    # m shared over many texts and the mean of their e's; random where the model has none), or at
    # the start its encoder head predicts from the text (prototok/encoder.py; an error where it has none).
    start: StartFrom = StartFrom.RANDOM
    # Spike guard: when a row's loss rises this many nats above its lowest so far, its vectors and
    # Adam moments go back to that lowest point, the update is skipped, and the row's lr is scaled by
    # `spike_lr`. Adam at a high lr now and then overshoots into a region it takes tens of steps to
    # leave (bench/results/levers.md, "A spike guard on the loss"). 0 = off.
    spike_guard: float = 0.0
    spike_lr: float = 0.7

    def __post_init__(self) -> None:
        _coerce(self, init=Init, schedule=Schedule, start=StartFrom)
        if self.init_e is not None:
            _coerce(self, init_e=Init)
        for name in ("max_steps", "seeds"):
            _integer(self, name, 1)
        for name in ("warmup_steps", "halve_every", "restart_every", "ste_steps"):
            _integer(self, name, 0)
        _integer(self, "seed")
        for name in ("lr", "init_scale", "lr_e_scale"):
            _number(self, name, 0, low_open=True)
        for name in ("beta1", "beta2"):
            _number(self, name, 0, 1)
        _number(self, "weight_decay", 0)
        _number(self, "min_lr_ratio", 0, 1, high_open=False)
        _number(self, "stop_accuracy", -math.inf)  # above 1: never stop early
        for name in ("margin", "loss_margin", "spike_guard"):  # nats
            _number(self, name, 0, 100)
        _number(self, "spike_lr", 0, 1, low_open=True, high_open=False)
        if not isinstance(self.sink, bool):
            raise InvalidInput(f"sink must be true or false, got {self.sink!r}")

    def with_(self, **changes: object) -> Recipe:
        """A copy with the given fields changed; None means keep."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(self).items()}


# The paper's recipe, verbatim.
PAPER = Recipe()

# The default: the paper's method with the recipe that makes SmolLM2-135M lossless in fewer steps
# on a CPU (docs/how-it-works/recipe.md; the numbers in bench/results/recipe.md, speed.md, levers.md):
# - a frozen BOS sink before [e, m, ...]: without it, e's own position never learns t1;
# - Kuratov's embedding-scale init, warm-up and cosine decay;
# - one restart at lr 0.08: about as many steps as the best of four at a lower lr, for a quarter
#   of the rows a step computes;
# - a 1-nat margin: an encoding decodes the same in another batch shape, thread count or dtype;
# - the model's warm start (prototok/starts.py): fewer steps, and no stalled texts;
# - the spike guard (back to the lowest-loss state at 0.7x the lr when the loss jumps 1 nat).
# The margin loss (`loss_margin`) and restarts of stalled runs (`restart_every`) are off: their
# fixed attempt length suits short texts and leaves longer ones unsolved.
TUNED = Recipe(
    lr=0.08,
    init=Init.EMBEDDING,
    schedule=Schedule.COSINE,
    warmup_steps=10,
    max_steps=1000,
    seeds=1,
    sink=True,
    margin=1.0,
    start=StartFrom.WARM,
    spike_guard=1.0,
)

RECIPES: dict[str, Recipe] = {"paper": PAPER, "tuned": TUNED}

# `prototok encode --compact` / the API's "compact": true. The smallest storage seen to keep the
# benchmark sentences lossless from the vectors alone on SmolLM2: int8 at full rank; rank 32 lost
# tokens (bench/results/size.md, size_rank_probe.md; docs/how-it-works/file-format.md).
COMPACT = {"storage": "int8", "rank": 0}


# Longer texts are split into chunks of at most this many tokens, each its own (e, m) row, optimised
# together in one batch. Shorter chunks need far fewer steps each and extra rows cost little, but
# every chunk stores two more vectors. 32 tokens (16 per stored vector) keeps 64-token prose
# lossless within the step budget on a CPU, where one 64-token chunk is not
# (bench/results/speed-chunks.md).
CHUNK_TOKENS = 32


@dataclass(frozen=True)
class EncodeConfig:
    """Everything that decides how texts become proto-tokens."""

    recipe: Recipe = field(default_factory=lambda: TUNED)
    method: Method = Method.ONE_STEP
    arrangement: Arrangement = Arrangement.E_MN1
    share: ShareMode = ShareMode.NONE
    group_size: int = 0  # texts per sharing group; 0 = the whole batch
    chunk_tokens: int = CHUNK_TOKENS  # longer texts are split into chunks of at most this many tokens
    mem_tokens: int = 1  # number of [mem] vectors for the autoregressive baseline
    max_batch_rows: int = 256  # sequences x restarts optimised in one batch
    # How the file stores e and m (prototok/storage.py): float32 | float16 | bfloat16 | int8 (per-vector
    # absmax scale), and `rank` > 0 optimises and stores them as that many coefficients in a fixed basis.
    storage: str = "float32"
    rank: int = 0
    # The model's shared m (prototok/starts.py: its start's m), frozen: each text trains only e, from the
    # start's e, and the file stores e plus a reference to m (`m_ref`), not m. Implies share=frozen_m.
    model_m: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, Recipe):
            raise InvalidInput(f"recipe must be a Recipe, got {type(self.recipe).__name__}")
        _coerce(self, method=Method, arrangement=Arrangement, share=ShareMode)
        for name, low in (("chunk_tokens", 1), ("mem_tokens", 1), ("group_size", 0), ("max_batch_rows", 1)):
            _integer(self, name, low)
        if self.model_m is not False:
            self._check_model_m()
        try:
            check_storage(self.storage, self.rank)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if not self.plain and not self.takes_storage:
            raise InvalidInput("storage and rank options are for one-step encodings without sharing (or with model_m)")
        if self.method is Method.AUTOREGRESSIVE:
            self._check_mem()

    def _check_model_m(self) -> None:
        """model_m freezes the model's m for every text: a one-step layout with an m, nothing else shared.
        Low rank is refused: a rank-128 e against the frozen start m rebuilt 11 of 15 tokens in 600
        steps on SmolLM2 (a probe), so it would mostly buy corrections."""
        if self.model_m is not True:
            raise InvalidInput(f"model_m must be true or false, got {self.model_m!r}")
        if self.method is not Method.ONE_STEP:
            raise InvalidInput("model_m is for one-step encodings; method=autoregressive has no m")
        if self.arrangement is Arrangement.ONE:
            raise InvalidInput("model_m: arrangement=one repeats e alone and has no m to share")
        if self.share not in (ShareMode.NONE, ShareMode.FROZEN_M) or self.group_size:
            raise InvalidInput(f"model_m freezes the model's own m; it does not combine with share={self.share.value} "
                               "or group_size")
        if self.rank:
            raise InvalidInput("model_m and rank: a low-rank e with the model's frozen m is not offered (it rebuilt "
                               "too few tokens); give one or the other")
        if self.recipe.start is StartFrom.ENCODER:
            raise InvalidInput("model_m and start=encoder: model_m begins at the model's warm start and freezes its m, "
                               "while the encoder predicts an m of its own; give one or the other")
        object.__setattr__(self, "share", ShareMode.FROZEN_M)

    def _check_mem(self) -> None:
        """[mem] trains k vectors per text, alone: the one-step layout and sharing options mean nothing to it."""
        if self.share is not ShareMode.NONE:
            raise InvalidInput(f"share={self.share.value} is for one-step encodings; method=autoregressive "
                               "trains each text's [mem] alone")
        if self.group_size:
            raise InvalidInput("group_size is for shared one-step encodings, not method=autoregressive")
        if self.arrangement is not Arrangement.E_MN1:
            raise InvalidInput(f"arrangement={self.arrangement.value} is a one-step layout; method=autoregressive "
                               "takes none (leave it at e_mN-1)")

    @property
    def plain(self) -> bool:
        """float32 full vectors, the format every prototok reads: no straight-through phase, no basis."""
        return is_plain(self.storage, self.rank)

    @property
    def step_budget(self) -> int:
        """Steps a progress bar counts to: max_steps, plus the straight-through polish below float32."""
        polish = self.recipe.ste_steps if self.storage != "float32" else 0
        return self.recipe.max_steps + polish

    @property
    def takes_storage(self) -> bool:
        """Storage options apply: one (e, m) per text, so each stored row rebuilds its own text; with
        model_m they apply to e (m is the model's, stored once as its start)."""
        return self.method is Method.ONE_STEP and (self.share is ShareMode.NONE or self.model_m)

    def with_(self, **changes: object) -> EncodeConfig:
        """A copy with the given fields changed; None means keep."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def encode_config(
    recipe: str = "tuned", *, max_steps: int | None = None, max_steps_limit: int | None = None,
    seeds: int | None = None, seed: int | None = None, lr: float | None = None, margin: float | None = None,
    sink: bool | None = None, start: str | None = None, arrangement: str | None = None, method: str | None = None,
    share: str | None = None, group_size: int | None = None, chunk_tokens: int | None = None,
    storage: str | None = None, rank: int | None = None, compact: bool | None = None,
    model_m: bool | None = None, default_storage: str = "float32", default_rank: int = 0,
) -> EncodeConfig:
    """The config of a request's options, the same for `prototok encode` and `POST /v1/encode`.

    None means the named recipe's value (or the config's default). `max_steps_limit` caps the
    step budget (the service's PROTOTOK_MAX_STEPS_LIMIT). With neither storage nor rank given,
    `default_storage`/`default_rank` apply where storage options do (one-step, no sharing or
    model_m; model_m takes the storage only, as it refuses low rank), so a server's compact default
    never turns a [mem], shared or model_m request into an invalid one.
    """
    if recipe not in RECIPES:
        raise InvalidInput(f"recipe: unknown recipe '{recipe}' (choose from {', '.join(RECIPES)})")
    if compact and (storage is not None or rank is not None):
        raise InvalidInput("compact: give compact or storage/rank, not both")
    base = RECIPES[recipe]
    steps = base.max_steps if max_steps is None else max_steps
    if max_steps_limit is not None:
        steps = min(steps, max_steps_limit)
    cfg = EncodeConfig(recipe=base.with_(max_steps=steps, seeds=seeds, seed=seed, lr=lr, sink=sink, margin=margin,
                                         start=start))
    cfg = cfg.with_(arrangement=arrangement, method=method, share=share, group_size=group_size,
                    chunk_tokens=chunk_tokens, model_m=model_m or None)
    if compact:
        return cfg.with_(**COMPACT)
    if storage is None and rank is None:
        if not cfg.takes_storage:
            return cfg
        return cfg.with_(storage=default_storage, rank=0 if cfg.model_m else default_rank)
    return cfg.with_(storage=storage or "float32", rank=rank or 0)
