"""The forward passes that turn vectors back into token ids: one pass over [e, m, ...] for the
paper's method, greedy generation from [mem] for the baseline. No checks and no corrections:
`codec.decode` adds those for encodings; the experiments time and probe these passes bare.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache

from .layouts import BatchLayout, with_sink
from .models import LanguageModel
from .recipe import Arrangement


@torch.inference_mode()
def one_pass_logits(lm: LanguageModel, arrangement: Arrangement, e: torch.Tensor, m: torch.Tensor,
                    lengths: list[int], sink: bool = False) -> torch.Tensor:
    """The one forward pass over [e, m, ...] for K sequences: (K, d), (K, d) -> (K, Nmax, V) target logits."""
    layout = BatchLayout(arrangement, lengths, lm.device, lm.sink_embedding() if sink else None)
    z = layout.inputs(e.to(lm.device, torch.float32), m.to(lm.device, torch.float32))  # (K, L, d)
    logits = lm.model(inputs_embeds=z.to(lm.dtype)).logits  # (K, L, V)
    return layout.target_logits(logits)  # (K, Nmax, V), on the model's device


def decode_ids(lm: LanguageModel, arrangement: Arrangement, e: torch.Tensor, m: torch.Tensor,
               lengths: list[int], sink: bool = False) -> list[list[int]]:
    """One forward pass over [e, m, ...] for K sequences: (K, d), (K, d) -> K lists of ids."""
    pred = one_pass_logits(lm, arrangement, e, m, lengths, sink).argmax(-1).cpu()  # (K, Nmax)
    return [pred[i, :n].tolist() for i, n in enumerate(lengths)]


def _cache_kwarg(model: torch.nn.Module) -> str:
    """transformers 5.x renamed `past_key_values` to `cache` (the old name warns, then goes)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.inference_mode()
def generate(lm: LanguageModel, mem: torch.Tensor, length: int, forced: list[dict[int, int]] | None = None,
             sink: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding from [mem]: (B, k, d) -> raw argmax ids and emitted ids, both (B, length).

    `forced[b]` maps positions to the token emitted there instead of the argmax (stored
    corrections): with the prefix kept right, every later argmax is the teacher-forced one.
    """
    forced = forced or [{} for _ in range(mem.shape[0])]
    mem = with_sink(mem.to(lm.device, torch.float32), lm.sink_embedding() if sink else None)
    cache = {_cache_kwarg(lm.model): DynamicCache()}  # filled in place by every forward
    out = lm.model(inputs_embeds=mem.to(lm.dtype), use_cache=True, **cache)
    raw, emitted = [], []
    for i in range(length):
        if i:
            out = lm.model(inputs_embeds=lm.embed(emitted[-1][:, None]), use_cache=True, **cache)
        guess = out.logits[:, -1].argmax(-1)  # (B,)
        fix = torch.tensor([f.get(i, -1) for f in forced], device=guess.device)
        raw.append(guess)
        emitted.append(torch.where(fix >= 0, fix, guess))
    return torch.stack(raw, 1), torch.stack(emitted, 1)  # (B, length) each


def generate_grouped(lm: LanguageModel, mems: list[torch.Tensor], lengths: list[int],
                     fixes: list[dict[int, int]], sink: bool) -> list[tuple[list[int], list[int]]]:
    """Greedy decoding batched over chunks with the same number of [mem] vectors:
    (raw, emitted) ids per chunk, each cut to its length."""
    res: list[tuple[list[int], list[int]]] = [([], [])] * len(mems)
    for k in {m.shape[0] for m in mems}:
        idx = [i for i, m in enumerate(mems) if m.shape[0] == k]
        raw, emitted = generate(lm, torch.stack([mems[i] for i in idx]), max(lengths[i] for i in idx),
                                [fixes[i] for i in idx], sink)
        for row, i in enumerate(idx):
            res[i] = (raw[row, : lengths[i]].tolist(), emitted[row, : lengths[i]].tolist())
    return res
