"""Input layouts: the one place that turns trainable vectors into the model's input rows.

One-step (the paper): a layout is a list of roles (0 = e, 1 = m) and an offset: output
position `offset + i` must predict token t_(i+1), for every arrangement of Table 1.
[mem] (Kuratov): k vectors, then the text shifted by one; output k-1+i predicts t_(i+1).
Right padding is safe without an attention mask: under the causal mask a padded tail
cannot change the positions before it.

An optional fixed *sink* (the model's BOS embedding, frozen, not trained) can sit before
the proto-tokens: models trained with BOS always at position 0 use that position as an
attention sink (Xiao et al. 2023, which the paper cites), and without it e's own position
must both be the sink and predict t1 (docs/how-it-works/recipe.md, "Why the sink").
"""

from __future__ import annotations

import torch

from .recipe import Arrangement

E, M = 0, 1


def layout(arrangement: Arrangement, n: int) -> tuple[list[int], int]:
    """Roles of the input positions for a text of n tokens, and the first supervised position."""
    if n < 1:
        raise ValueError("a text needs at least one token")
    if arrangement is Arrangement.ONE:
        return [E] * n, 0
    if arrangement is Arrangement.HALVES:
        half = (n + 1) // 2
        return [E] * half + [M] * (n - half), 0
    if arrangement is Arrangement.PAIRS:
        return [E if i % 2 == 0 else M for i in range(n)], 0
    if arrangement is Arrangement.E_MN:
        return [E] + [M] * n, 1
    return [E] + [M] * (n - 1), 0  # E_MN1


def input_length(arrangement: Arrangement, n: int) -> int:
    roles, _ = layout(arrangement, n)
    return len(roles)


class BatchLayout:
    """Roles, target positions and a loss mask for a batch of texts of different lengths."""

    def __init__(self, arrangement: Arrangement, lengths: list[int], device: torch.device,
                 sink: torch.Tensor | None = None):
        layouts = [layout(arrangement, n) for n in lengths]
        shift = 0 if sink is None else 1
        width = max(len(roles) for roles, _ in layouts)
        roles = torch.full((len(lengths), width), M, dtype=torch.long)
        positions = torch.zeros((len(lengths), max(lengths)), dtype=torch.long)
        mask = torch.zeros((len(lengths), max(lengths)), dtype=torch.bool)
        for row, ((r, offset), n) in enumerate(zip(layouts, lengths)):
            roles[row, : len(r)] = torch.tensor(r)
            positions[row, :n] = torch.arange(offset + shift, offset + shift + n)
            mask[row, :n] = True
        self.widths = torch.tensor([len(r) for r, _ in layouts], device=device)  # (B,) input lengths
        self.roles = roles.to(device)  # (B, L)
        self.positions = positions.to(device)  # (B, Nmax): output position predicting each token
        self.mask = mask.to(device)  # (B, Nmax): False on padding
        self.lengths = torch.tensor(lengths, device=device)  # (B,)
        self.sink = None if sink is None else sink.reshape(1, 1, -1).to(device)  # (1, 1, d)

    def subset(self, rows: torch.Tensor) -> BatchLayout:
        """The layout of some rows only, trimmed to their own longest input."""
        sub = object.__new__(BatchLayout)
        width, n = int(self.widths[rows].max()), int(self.lengths[rows].max())
        sub.widths, sub.lengths = self.widths[rows], self.lengths[rows]
        sub.roles = self.roles[rows, :width]
        sub.positions, sub.mask = self.positions[rows, :n], self.mask[rows, :n]
        sub.sink = self.sink
        return sub

    def inputs(self, e: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """(B, d), (B, d) -> (B, L, d): the arranged proto-token sequence (after the sink, if any)."""
        pair = torch.stack([e, m], dim=1)  # (B, 2, d)
        index = self.roles.unsqueeze(-1).expand(-1, -1, pair.shape[-1])  # (B, L, d)
        z = torch.gather(pair, 1, index)  # (B, L, d)
        return with_sink(z, self.sink)  # (B, [1 +] L, d)

    def target_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, L, V) -> (B, Nmax, V): the logits that predict t_1..t_N of each row."""
        index = self.positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])  # (B, Nmax, V)
        return torch.gather(logits, 1, index)


class MemLayout:
    """Target positions and loss mask of [mem x k, text] rows of different lengths."""

    def __init__(self, k: int, lengths: torch.Tensor):
        n = int(lengths.max())
        ar = torch.arange(n, device=lengths.device)
        self.lengths = lengths  # (A,)
        self.positions = (k - 1 + ar).expand(len(lengths), n)  # (A, Nmax)
        self.mask = ar[None, :] < lengths[:, None]  # (A, Nmax)


def with_sink(x: torch.Tensor, sink: torch.Tensor | None) -> torch.Tensor:
    """(B, L, d) -> (B, 1 + L, d) with the frozen sink (d elements) first, or unchanged without one."""
    if sink is None:
        return x
    return torch.cat([sink.to(x.device, x.dtype).reshape(1, 1, -1).expand(len(x), 1, -1), x], 1)
