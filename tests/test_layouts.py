import pytest
import torch

from prototok.layouts import BatchLayout, E, M, layout
from prototok.recipe import Arrangement


@pytest.mark.parametrize(
    "arr, n, roles, offset",
    [
        (Arrangement.ONE, 3, [E, E, E], 0),
        (Arrangement.HALVES, 5, [E, E, E, M, M], 0),
        (Arrangement.PAIRS, 5, [E, M, E, M, E], 0),
        (Arrangement.E_MN, 3, [E, M, M, M], 1),
        (Arrangement.E_MN1, 4, [E, M, M, M], 0),
        (Arrangement.E_MN1, 1, [E], 0),
    ],
)
def test_layout_matches_table_1(arr, n, roles, offset):
    assert layout(arr, n) == (roles, offset)


def test_batch_layout_pads_and_masks():
    bl = BatchLayout(Arrangement.E_MN, [2, 4], torch.device("cpu"))
    assert bl.roles.shape == (2, 5)  # e + 4 m for the longest row
    assert bl.positions[0, :2].tolist() == [1, 2] and bl.positions[1].tolist() == [1, 2, 3, 4]
    assert bl.mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    e, m = torch.zeros(2, 3), torch.ones(2, 3)
    z = bl.inputs(e, m)  # (2, 5, 3)
    assert z.shape == (2, 5, 3) and z[1, 0].sum() == 0 and z[1, 1:].eq(1).all()


def test_padding_does_not_leak_into_logits_or_gradients(tiny):
    """A short text padded next to a long one gets the same logits and gradient as alone."""
    d = tiny.hidden_size
    torch.manual_seed(0)
    e, m = torch.randn(2, d, requires_grad=True), torch.randn(2, d, requires_grad=True)
    both = BatchLayout(Arrangement.E_MN1, [3, 7], tiny.device)
    alone = BatchLayout(Arrangement.E_MN1, [3], tiny.device)
    lp = both.target_logits(tiny.model(inputs_embeds=both.inputs(e, m)).logits)[0, :3]
    la = alone.target_logits(tiny.model(inputs_embeds=alone.inputs(e[:1], m[:1])).logits)[0]
    assert torch.allclose(lp, la, atol=1e-5)
    g_pad = torch.autograd.grad(lp.sum(), e)[0][0]
    g_alone = torch.autograd.grad(la.sum(), e)[0][0]
    assert torch.allclose(g_pad, g_alone, atol=1e-5)


def test_subset_trims_to_its_own_rows():
    bl = BatchLayout(Arrangement.E_MN1, [2, 6, 3], torch.device("cpu"))
    sub = bl.subset(torch.tensor([0, 2]))
    assert sub.roles.shape == (2, 3) and sub.mask.shape == (2, 3)


def test_sink_goes_first_and_shifts_every_target():
    sink = torch.full((3,), 7.0)
    bl = BatchLayout(Arrangement.E_MN1, [2, 3], torch.device("cpu"), sink)
    z = bl.inputs(torch.zeros(2, 3), torch.ones(2, 3))  # (2, 1 + 3, 3)
    assert z.shape == (2, 4, 3) and z[:, 0].eq(7).all() and z[:, 1].eq(0).all() and z[:, 2:].eq(1).all()
    assert bl.positions.tolist() == [[1, 2, 0], [1, 2, 3]]  # e's output (position 1) predicts t1
    sub = bl.subset(torch.tensor([0]))
    assert sub.inputs(torch.zeros(1, 3), torch.ones(1, 3))[0, 0].eq(7).all()
