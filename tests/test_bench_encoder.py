"""`bench.encoder` on a tiny model: both starts measured on one text, summarised and drawn (the
timed run on the evaluation set is a benchmark, not a test)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prototok import TUNED, load_model
from prototok.encoder import candidates as head_files
from prototok.encoder import find_encoder, new_encoder, write_encoder
from prototok.start_training import train_start
from prototok.starts import candidates, write_start

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench_encoder(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # bench/ is not an installed package
    from bench import encoder

    return encoder


def test_both_starts_encode_the_text_and_the_summary_and_figure_follow(bench_encoder, start_cache, tmp_path):
    lm = load_model("tiny-llama")
    e, m, how = train_start(lm, [[5, 9, 13, 2, 7], [3, 3, 8, 1, 4]], 2, TUNED.with_(max_steps=2, warmup_steps=1))
    write_start(candidates(lm)[0], lm, e, m, **how)
    enc = new_encoder(lm, e, m)
    torch.nn.init.normal_(enc.head.mlp_out.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    write_encoder(head_files(lm)[0], lm, enc)  # start=encoder encodes find it installed
    enc = find_encoder(lm)
    rows = [bench_encoder.measure(lm, enc, kind, "hi there", 4, order, max_steps=30)
            for kind, order in (("prose", ("warm", "encoder")), ("mixed", ("encoder", "warm")))]
    for row in rows:
        assert row["tokens"] == 8 and row["warm_loss0"] != row["encoder_loss0"]
        for s in ("warm", "encoder"):
            assert len(row[f"{s}_curve"]) == row[f"{s}_steps"] <= 30 and row[f"{s}_s"] > 0
    table = {r["kind"]: r for r in bench_encoder.summary(rows)}
    assert set(table) == {"prose", "mixed", "all"} and table["all"]["texts"] == 2
    assert table["all"]["warm_median_steps"] == (rows[0]["warm_steps"] + rows[1]["warm_steps"]) / 2
    assert table["all"]["encoder_lossless"] == sum(r["encoder_lossless"] for r in rows)
    bench_encoder.figure(rows, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000
