"""Metrics of the paper (C_tokens, H_LM), and the lead of a right token over its best rival,
which decides whether a reconstruction survives another batch shape, dtype or device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models import LanguageModel


def c_tokens(predicted: list[int], target: list[int]) -> int:
    """Positions where the proto-tokens alone give the right token (paper, eq. 1)."""
    return sum(int(p == t) for p, t in zip(predicted, target))


def lead(logits: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """(A, N, V) float logits, (A, N) targets -> (A, N) nats by which the right token's logit leads
    the best other one (negative where another token wins)."""
    correct = logits.gather(-1, tgt[..., None])[..., 0]  # (A, N)
    rival = logits.scatter(-1, tgt[..., None], float("-inf")).amax(-1)  # (A, N): best other token
    return correct - rival


@torch.inference_mode()
def h_lm(lm: LanguageModel, ids: list[int]) -> float:
    """Information content in nats: sum_i -log P_LM(t_i | t_<i), teacher-forced (eq. 2).

    t_1 is scored after the tokenizer's BOS (or EOS) token; a text longer than the
    model's context is scored in context-sized windows.
    """
    window = lm.max_length - 1
    total = 0.0
    for start in range(0, len(ids), window):
        piece = ids[start : start + window]
        prefix = [lm.bos_id] if lm.bos_id is not None else []
        x = torch.tensor([prefix + piece], device=lm.device)  # (1, P+n)
        logits = lm.model(input_ids=x).logits[0, :-1].float()  # (P+n-1, V)
        target = x[0, 1:]
        nll = F.cross_entropy(logits, target, reduction="none")  # (P+n-1,)
        total += float(nll.sum())  # without a BOS, t_1 has no prediction and is not scored
    return total
