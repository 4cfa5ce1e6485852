"""The tensors a run keeps (trained e, m, control points), one .pt file per task under `vectors/`.

A task that saves tensors counts as done only when its file is there too, so a later task
that loads them (a frozen m, the ends of a curve) never finds them missing after a resume.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


class VectorFiles:
    """`<folder>/<name>.pt` files, written atomically."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name.replace('/', '_')}.pt"

    def has(self, name: str) -> bool:
        return self.path(name).is_file()

    def save(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        tmp = self.path(name).with_suffix(".tmp")
        torch.save({k: v.detach().cpu() for k, v in tensors.items()}, tmp)
        os.replace(tmp, self.path(name))  # atomic: a killed run never leaves half a file

    def load(self, name: str) -> dict[str, torch.Tensor]:
        return torch.load(self.path(name))
