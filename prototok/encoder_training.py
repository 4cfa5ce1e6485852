"""Training an encoder head (encoder.py) for one model, resumably.

Data: token windows of 8-32 tokens at seeded offsets of the shipped prose passages 0..n-1 and
random-word texts (GloVe words, seed `RANDOM_SEED`), none of them in the evaluation set
(bench/data/eval.jsonl holds passages prototok/data/prose.jsonl does not ship, and its random
texts were drawn with seed 2026). Passages from `VALIDATION_FROM` on, and random texts of another
seed, are the run's own validation windows: what the closing evaluation reports.

Objectives:
- `reconstruct`: the encode loss itself, end to end: the cross-entropy of each window from
  [sink, e, m, ..., m] through the frozen model, with e and m the head's prediction;
- `regress`: the squared distance (in units of the head's scale) to vectors the tuned recipe
  solved from the warm start in `target_steps` steps, for a seeded sample of `regress_windows`
  windows; those targets are computed first (the expensive part: a solve each) and kept in the
  checkpoint.

A checkpoint (head, Adam state, targets, iteration) is written beside the output every
`checkpoint_every` iterations; a run with the same settings goes on from it.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .encoder import Encoder, hidden_states, new_encoder
from .errors import InvalidInput
from .layouts import BatchLayout
from .metrics import lead
from .models import LanguageModel
from .problem import pad_right, token_loss
from .recipe import TUNED, Arrangement, EncodeConfig
from .starts import find_start, write_atomically

RANDOM_SEED = 7  # training random-word texts; the validation ones use RANDOM_SEED + 1
VALIDATION_FROM = 120  # shipped passages from here on are validation, not training
OBJECTIVES = ("reconstruct", "regress")


@dataclass(frozen=True)
class TrainConfig:
    objective: str = "reconstruct"
    passages: int = 120  # training passages 0..n-1 (at most VALIDATION_FROM)
    windows_per_passage: int = 12
    random_texts: int = 240
    min_tokens: int = 8
    max_tokens: int = 32
    iterations: int = 400
    batch: int = 16
    lr: float = 1e-3
    warmup: int = 20
    layer: int | None = None
    mlp: int = 512
    seed: int = 0
    target_steps: int = 60  # regress: steps of the tuned recipe that make each target
    regress_windows: int = 128  # regress: windows it solves and learns from (a seeded sample), the cost
    checkpoint_every: int = 25

    def check(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InvalidInput(f"objective: choose from {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not 1 <= self.passages <= VALIDATION_FROM:
            raise InvalidInput(f"passages must be in 1..{VALIDATION_FROM} (later ones validate), got {self.passages}")
        if not 2 <= self.min_tokens <= self.max_tokens:
            raise InvalidInput("windows need 2 <= min_tokens <= max_tokens")


@dataclass
class Progress:
    iteration: int
    iterations: int
    loss: float
    phase: str  # "features" | "targets" | "train" | "evaluate"


def windows(ids: list[int], n: int, low: int, high: int, rng: random.Random) -> list[list[int]]:
    """n windows of low..high tokens at random offsets of one token sequence."""
    out = []
    for _ in range(n):
        size = min(rng.randint(low, high), len(ids))
        if size >= low:
            start = rng.randint(0, len(ids) - size)
            out.append(ids[start:start + size])
    return out


def random_word_windows(lm: LanguageModel, n: int, seed: int, high: int) -> list[list[int]]:
    """n texts of 12 GloVe words (the paper's random texts), at most `high` tokens each."""
    from .experiments.datasets import glove_words

    words, rng = glove_words(), random.Random(seed)
    return [lm.tokenize(" ".join(rng.choice(words) for _ in range(12)))[:high] for _ in range(n)]


def training_windows(lm: LanguageModel, cfg: TrainConfig) -> tuple[list[list[int]], list[list[int]]]:
    """(training windows, validation windows), the same for the same settings."""
    from .experiments.datasets import passages

    texts = [p["text"] for p in passages()]
    rng = random.Random(cfg.seed)
    train = [w for t in texts[: cfg.passages]
             for w in windows(lm.tokenize(t), cfg.windows_per_passage, cfg.min_tokens, cfg.max_tokens, rng)]
    train += random_word_windows(lm, cfg.random_texts, RANDOM_SEED, cfg.max_tokens)
    val = [w for t in texts[VALIDATION_FROM:] for w in windows(lm.tokenize(t), 2, 16, 16, rng)]
    val += random_word_windows(lm, 16, RANDOM_SEED + 1, cfg.max_tokens)
    return train, val


def reconstruction(lm: LanguageModel, e: torch.Tensor, m: torch.Tensor,
                   seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) encode loss of each sequence from [sink, e, m, ..., m] (the tuned recipe's layout) and
    (B,) its token accuracy; the loss keeps its graph to e and m."""
    sink = lm.sink_embedding() if TUNED.sink else None
    layout = BatchLayout(Arrangement.E_MN1, [len(q) for q in seqs], lm.device, sink)
    logits = layout.target_logits(lm.model(inputs_embeds=layout.inputs(e, m).to(lm.dtype)).logits).float()
    tgt = pad_right(seqs).to(lm.device)
    right = (lead(logits.detach(), tgt) > 0) & layout.mask
    return token_loss(logits, tgt, layout.mask), right.sum(1) / layout.mask.sum(1)


def step0(lm: LanguageModel, enc: Encoder, seqs: list[list[int]], batch: int = 16) -> dict:
    """Mean encode loss and token accuracy of the head's start and of the warm start it changes,
    before any optimisation step."""
    out: dict[str, list[float]] = {"encoder_loss": [], "encoder_accuracy": [], "warm_loss": [], "warm_accuracy": []}
    with torch.no_grad():
        for i in range(0, len(seqs), batch):
            part = seqs[i:i + batch]
            hidden, mask = hidden_states(lm, part, enc.layer)
            e, m = enc.head(hidden, mask)
            base = enc.head.base.to(lm.device)
            for name, (ve, vm) in {"encoder": (e, m), "warm": (base[0].expand_as(e), base[1].expand_as(m))}.items():
                loss, acc = reconstruction(lm, ve, vm, part)
                out[f"{name}_loss"] += loss.tolist()
                out[f"{name}_accuracy"] += acc.tolist()
    return {k: round(sum(v) / len(v), 4) for k, v in out.items()} | {"windows": len(seqs)}


def solved_targets(lm: LanguageModel, seqs: list[list[int]], steps: int,
                   report: Callable[[int], None] | None = None) -> torch.Tensor:
    """(S, 2, d) e and m of each sequence after `steps` steps of the tuned recipe from the warm start."""
    from .optimize import optimize

    cfg = EncodeConfig(recipe=TUNED.with_(max_steps=steps, margin=0.0, stop_accuracy=2.0))
    out = []
    for i in range(0, len(seqs), 16):
        sols = optimize(lm, seqs[i:i + 16], cfg)
        out += [torch.stack([s.vectors["e"], s.vectors["m"]]) for s in sols]
        if report:
            report(len(out))
    return torch.stack(out)


class Trainer:
    """One training run: its data, head, optimiser and checkpoint."""

    def __init__(self, lm: LanguageModel, cfg: TrainConfig, checkpoint: Path,
                 progress: Callable[[Progress], None] | None = None):
        cfg.check()
        start = find_start(lm)
        if start is None:
            raise InvalidInput(f"an encoder changes the model's warm start, and '{lm.name}' has none here; "
                               f"make one first with `prototok start train --model {lm.name}`")
        self.lm, self.cfg, self.path, self.progress = lm, cfg, checkpoint, progress or (lambda p: None)
        self.enc = new_encoder(lm, start.e, start.m, cfg.layer, cfg.mlp, cfg.seed)
        self.enc.meta["start_made"] = start.meta.get("made")
        self.opt = torch.optim.AdamW(self.enc.head.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.train, self.val = training_windows(lm, cfg)
        if cfg.objective == "regress":  # each target costs a solve: a seeded sample of the windows
            keep = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(cfg.seed))
            self.train = [self.train[i] for i in keep[: cfg.regress_windows].tolist()]
        self.iteration, self.curve, self.targets = 0, [], None
        self.seconds: dict[str, float] = {"features": 0.0, "targets": 0.0, "train": 0.0, "evaluate": 0.0}
        self._resume()

    def run(self) -> tuple[Encoder, dict]:
        """Train to the end (from the checkpoint, if any); the head and what the run measured."""
        feats = self._timed("features", lambda: self._features(self.train))
        if self.cfg.objective == "regress" and self.targets is None:
            self.targets = self._timed("targets", lambda: solved_targets(
                self.lm, self.train, self.cfg.target_steps,
                lambda k: self.progress(Progress(k, len(self.train), math.nan, "targets"))))
            self._save()
        t0 = time.perf_counter()
        while self.iteration < self.cfg.iterations:
            loss = self._step(feats, self._batch(self.iteration))
            self.iteration += 1
            self.curve.append(round(loss, 4))
            self.progress(Progress(self.iteration, self.cfg.iterations, loss, "train"))
            if self.iteration % self.cfg.checkpoint_every == 0:
                self.seconds["train"] += time.perf_counter() - t0
                self._save()
                t0 = time.perf_counter()
        self.seconds["train"] += time.perf_counter() - t0
        self.enc.head.eval().requires_grad_(False)
        result = self._timed("evaluate", lambda: step0(self.lm, self.enc, self.val))
        return self.enc, self._how(result)

    def _how(self, result: dict) -> dict:
        return {"train": asdict(self.cfg), "windows": len(self.train), "validation": result,
                "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
                "dtype": str(self.lm.dtype).removeprefix("torch."), "curve_every_10": self.curve[::10]}

    def _timed(self, phase: str, work: Callable[[], object]):
        t0 = time.perf_counter()
        out = work()
        self.seconds[phase] += time.perf_counter() - t0
        return out

    def _features(self, seqs: list[list[int]]) -> list[torch.Tensor]:
        """Each window's layer states over [BOS] + window, unpadded (the frozen model reads it once)."""
        out = []
        for i in range(0, len(seqs), 32):
            hidden, mask = hidden_states(self.lm, seqs[i:i + 32], self.enc.layer)
            out += [h[k] for h, k in zip(hidden, mask)]
            self.progress(Progress(len(out), len(seqs), math.nan, "features"))
        return out

    def _batch(self, iteration: int) -> list[int]:
        """The windows of one iteration: a seeded permutation per epoch, so a resumed run sees the same."""
        per_epoch = max(1, len(self.train) // self.cfg.batch)
        epoch, k = divmod(iteration, per_epoch)
        perm = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch))
        return perm[k * self.cfg.batch:(k + 1) * self.cfg.batch].tolist()

    def _step(self, feats: list[torch.Tensor], idx: list[int]) -> float:
        head, cfg = self.enc.head.train(), self.cfg
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (self.iteration + 1) / max(1, cfg.warmup))
        width = max(len(feats[i]) for i in idx)
        hidden = torch.zeros(len(idx), width, feats[idx[0]].shape[-1], device=self.lm.device)
        mask = torch.zeros(len(idx), width, dtype=torch.bool, device=self.lm.device)
        for row, i in enumerate(idx):
            hidden[row, : len(feats[i])], mask[row, : len(feats[i])] = feats[i], True
        e, m = head(hidden, mask)
        if cfg.objective == "reconstruct":
            loss = reconstruction(self.lm, e, m, [self.train[i] for i in idx])[0].mean()
        else:
            target = self.targets[idx].to(self.lm.device)
            loss = ((torch.stack([e, m], 1) - target) / head.scale).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def _settings(self) -> str:
        return json.dumps({**asdict(self.cfg), "iterations": None, "checkpoint_every": None,
                           "weights_fingerprint": self.lm.weights_fingerprint}, sort_keys=True)

    def _save(self) -> None:
        """Head, Adam moments, targets and counters in one safetensors file (no pickle)."""
        tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in self.enc.head.state_dict().items()}
        for i, p in enumerate(self.enc.head.parameters()):
            state = self.opt.state.get(p, {})
            for name in ("exp_avg", "exp_avg_sq"):
                if name in state:
                    tensors[f"adam.{i}.{name}"] = state[name].detach().cpu().contiguous()
        if self.targets is not None:
            tensors["targets"] = self.targets.cpu().contiguous()
        meta = {"settings": self._settings(), "iteration": str(self.iteration), "curve": json.dumps(self.curve),
                "seconds": json.dumps(self.seconds)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, lambda tmp: save_file(tensors, tmp, metadata=meta))

    def _resume(self) -> None:
        """Go on from a checkpoint made with the same settings; another settings' checkpoint is ignored
        (and replaced at the first save)."""
        if not self.path.is_file():
            return
        with safe_open(str(self.path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("settings") != self._settings():
                return
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        head_state = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
        self.enc.head.load_state_dict(head_state)
        params = list(self.enc.head.parameters())
        step = int(meta["iteration"])
        for i, p in enumerate(params):
            if f"adam.{i}.exp_avg" in tensors:
                self.opt.state[p] = {"step": torch.tensor(float(step)), "exp_avg": tensors[f"adam.{i}.exp_avg"],
                                     "exp_avg_sq": tensors[f"adam.{i}.exp_avg_sq"]}
        self.targets = tensors.get("targets")
        self.iteration, self.curve = step, json.loads(meta["curve"])
        self.seconds.update(json.loads(meta["seconds"]))
