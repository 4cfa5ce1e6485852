"""The spike guard (Recipe.spike_guard): a row whose loss jumps goes back to its lowest-loss state."""

import pytest
import torch

from prototok import EncodeConfig, Method, decode, encode_texts
from prototok.errors import InvalidInput
from prototok.recipe import TUNED
from prototok.rowadam import RowAdamW

GUARD = TUNED.with_(max_steps=50, warmup_steps=2, spike_guard=1.0, spike_lr=0.5)


def steps(opt: RowAdamW, table: torch.Tensor, losses: list[list[float]], gen: torch.Generator) -> None:
    for loss in losses:
        opt.watch(torch.arange(table.shape[0]), torch.tensor(loss))
        table.grad = torch.randn(table.shape, generator=gen)
        opt.step()


def test_a_spiking_row_goes_back_to_its_lowest_point_and_slows_down():
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(3, 4, generator=gen).requires_grad_(True)
    opt = RowAdamW([table], [1.0], GUARD)
    steps(opt, table, [[5.0, 5.0, 5.0]], gen)
    at_low = (table.detach()[0].clone(), opt.exp_avg[0][0].clone(), opt.exp_avg_sq[0][0].clone())
    steps(opt, table, [[3.0, 4.0, 6.0]], gen)  # row 0's lowest: the state it had before this update
    steps(opt, table, [[3.5, 4.5, 5.5]], gen)  # within 1 nat of each row's lowest: nothing happens
    assert opt.lr_mult[0].tolist() == [1.0, 1.0, 1.0]
    before = table.detach().clone()
    opt.watch(torch.arange(3), torch.tensor([4.2, 4.5, 5.9]))  # row 0 is 1.2 nats above its lowest (3.0)
    table.grad = torch.randn(table.shape, generator=gen)
    opt.step()
    torch.testing.assert_close(table.detach()[0], at_low[0])
    torch.testing.assert_close(opt.exp_avg[0][0], at_low[1])
    torch.testing.assert_close(opt.exp_avg_sq[0][0], at_low[2])
    assert not torch.equal(table.detach()[1:], before[1:])  # the others took their step
    assert opt.lr_mult[0].tolist() == [0.5, 1.0, 1.0]


def test_without_spikes_the_guard_changes_nothing():
    """Falling losses only save states: the updates are the unguarded optimiser's."""
    gen, gen2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = torch.randn(2, 5, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    b = a.detach().clone().requires_grad_(True)
    guarded, plain = RowAdamW([a], [1.0], GUARD), RowAdamW([b], [1.0], GUARD.with_(spike_guard=0.0))
    falling = [[9.0 - k, 8.0 - k] for k in range(6)]
    steps(guarded, a, falling, gen)
    for _ in falling:
        b.grad = torch.randn(b.shape, generator=gen2)
        plain.step()
    torch.testing.assert_close(a, b)


def test_a_restarted_row_forgets_its_lowest_loss_and_lr_cut():
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(2, 4, generator=gen).requires_grad_(True)
    opt = RowAdamW([table], [1.0], GUARD)
    steps(opt, table, [[2.0, 2.0], [5.0, 2.0]], gen)  # row 0 spikes
    assert opt.lr_mult[0].tolist() == [0.5, 1.0]
    opt.restart(torch.tensor([0]), [torch.zeros(1, 4)])
    assert opt.lr_mult[0].tolist() == [1.0, 1.0]
    assert opt.watch(torch.arange(2), torch.tensor([9.0, 2.5])) == 0  # a fresh start's high loss is no spike


@pytest.mark.parametrize("method", list(Method))
def test_guarded_encodings_decode_exactly(tiny, method, monkeypatch):
    """The tiny model's loss falls smoothly, so every fourth step the guard is told of a spike: rows go
    back to earlier states inside the real loop, and the encoding still decodes to its text."""
    spikes, watch = [], RowAdamW.watch

    def spiky(self, rows, loss):
        spikes.append(watch(self, rows, loss + 10.0 * (len(spikes) % 4 == 3)))
        return spikes[-1]

    monkeypatch.setattr(RowAdamW, "watch", spiky)
    recipe = TUNED.with_(max_steps=40, lr=0.3, spike_guard=1.0, spike_lr=0.9)
    [enc] = encode_texts(tiny, ["guard me well"], EncodeConfig(recipe=recipe, method=method))
    assert sum(spikes) > 0  # the guard did put rows back
    assert decode(tiny, [enc])[0].text == "guard me well"


@pytest.mark.parametrize("field, value", [("spike_guard", -1.0), ("spike_lr", 0.0), ("spike_lr", 1.5)])
def test_bad_guard_settings_are_named(field, value):
    with pytest.raises(InvalidInput, match=field):
        TUNED.with_(**{field: value})
