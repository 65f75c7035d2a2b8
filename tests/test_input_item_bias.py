"""The learned input-item bias: it reaches exactly the items of the model's own input, once each, in training
(each position sees only its prefix) and in scoring, and it learns to push items the users never repeat down."""

import pytest
import torch
import torch.nn.functional as F

from tslrec.backbones.base import BackboneConfig
from tslrec.backbones.input_items import add_input_item_bias, first_occurrences, prefix_items
from tslrec.backbones.item_embedding import FusionConfig
from tslrec.backbones.losses import full_softmax_ce, sampled_bce
from tslrec.backbones.registry import BACKBONES, build_backbone

N = 12


def make(name: str = "sasrec", bias: bool = True):
    torch.manual_seed(0)
    cfg = BackboneConfig(num_items=N, hidden=16, max_len=10, dropout=0.0, input_item_bias=bias)
    return build_backbone(name, cfg, FusionConfig(kind="base"))


def test_first_occurrences_and_prefixes_count_each_item_once_and_only_up_to_the_position():
    seq = torch.tensor([[3, 5, 3, 7, 0]])
    assert first_occurrences(seq).tolist() == [[True, True, False, True, False]]
    items, once = prefix_items(seq, seq > 0)  # 4 positions
    marked = [sorted(items[t][once[t]].tolist()) for t in range(4)]
    assert marked == [[3], [3, 5], [3, 5], [3, 5, 7]]


def test_scoring_adds_the_bias_once_to_each_input_item_and_nowhere_else():
    scores = torch.zeros(1, N + 1)
    out = add_input_item_bias(scores, torch.tensor([[3, 5, 3, 0]]), torch.tensor(-2.0))
    expected = torch.zeros(1, N + 1)
    expected[0, [3, 5]] = -2.0  # 3 occurs twice but is biased once; padding (column 0) untouched
    assert torch.equal(out, expected)


def test_ce_with_the_bias_matches_cross_entropy_on_biased_logits_in_value_and_gradients():
    torch.manual_seed(0)
    h = torch.randn(70, 8, requires_grad=True)
    table = torch.randn(N, 8, requires_grad=True)
    bias = torch.tensor(0.7, requires_grad=True)
    y = torch.randint(0, N, (70,))
    items = torch.randint(0, N, (70, 5))
    once = torch.rand(70, 5) < 0.6
    once[:, 1] &= items[:, 1] != items[:, 0]  # `once` never marks one item twice in a row
    ours = full_softmax_ce(h, table, y, rows=16, seen=(items, once), bias=bias)  # chunks of 16 rows
    ours.backward()
    got = h.grad.clone(), table.grad.clone(), bias.grad.clone()
    h.grad = table.grad = bias.grad = None
    marks = torch.zeros(70, N).scatter_add(1, items, once.float())
    ref = F.cross_entropy(h @ table.t() + bias * marks, y)
    ref.backward()
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(got[0], h.grad, atol=1e-6) and torch.allclose(got[1], table.grad, atol=1e-6)
    assert torch.allclose(got[2], bias.grad, atol=1e-6)
    with torch.no_grad():  # the no-grad path (validation loss) adds the same bias
        assert torch.allclose(full_softmax_ce(h, table, y, seen=(items, once), bias=bias), ref, atol=1e-5)


def test_training_only_sees_each_positions_own_prefix():
    """Position 0's loss must not depend on item 9 at position 2: a bias leaking the future window would."""
    model = make()
    with torch.no_grad():
        model.input_item_bias.fill_(5.0)
    inputs, targets = torch.tensor([[4, 6, 9]]), torch.tensor([[9, 0, 0]])  # only position 0 has a target
    alone = model.loss(torch.tensor([[4]]), torch.tensor([[9]]))
    assert torch.allclose(model.loss(inputs, targets), alone, atol=1e-6)


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_the_bias_learns_to_push_down_items_that_never_come_back(loss):
    model = make()
    inputs = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]] * 4)
    targets = torch.tensor([[2, 3, 4, 5, 6], [7, 8, 9, 10, 11]] * 4)  # no target is ever in its own prefix
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        opt.zero_grad()
        model.loss(inputs, targets, loss, gen).backward()
        opt.step()
    assert float(model.input_item_bias.detach()) < -0.1


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_scores_with_the_bias_and_refuses_to_score_without_its_input(name):
    model = make(name).eval()
    seq, lengths = torch.tensor([[1, 2, 3]]), torch.tensor([3])
    with torch.no_grad():
        model.input_item_bias.fill_(-100.0)
        scores = model.score(model(seq, lengths), seq)  # [1, N+1]
    assert scores[0, 1:4].max() < scores[0, 4:].min()
    with pytest.raises(ValueError, match="input_item_bias"):
        model.score(model(seq, lengths))
    assert make(name, bias=False).input_item_bias is None


def test_sampled_bce_bias_reaches_only_marked_items():
    h, table = torch.zeros(2, 4), torch.zeros(N + 1, 4)
    targets = torch.tensor([3, 5])
    seen = (torch.tensor([[2, 0], [2, 0]]), torch.tensor([[True, False], [False, False]]))  # row 0 has item 3
    bias = torch.tensor(-3.0, requires_grad=True)
    sampled_bce(h, table, targets, torch.Generator().manual_seed(0), seen=seen, bias=bias).backward()
    assert bias.grad is not None and float(bias.grad) != 0.0
