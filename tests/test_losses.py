"""The chunked full-softmax cross-entropy equals torch's, in value and gradients, across chunk boundaries."""

import torch
import torch.nn.functional as F

from tslrec.backbones.losses import full_softmax_ce


def test_chunked_ce_matches_cross_entropy_and_its_gradients():
    torch.manual_seed(0)
    h = torch.randn(301, 16, requires_grad=True)  # 301 rows: 4 full chunks of 64 and a partial one
    table = torch.randn(50, 16, requires_grad=True)
    y = torch.randint(0, 50, (301,))
    ours = full_softmax_ce(h * 2, table, y, rows=64)
    ours.backward()
    got = h.grad.clone(), table.grad.clone()
    h.grad = table.grad = None
    ref = F.cross_entropy((h * 2) @ table.t(), y)
    ref.backward()
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(got[0], h.grad, atol=1e-6) and torch.allclose(got[1], table.grad, atol=1e-6)


def test_chunked_ce_under_bf16_autocast_keeps_float32_loss_and_gradients():
    torch.manual_seed(0)
    h = torch.randn(100, 16, requires_grad=True)
    table = torch.randn(30, 16, requires_grad=True)
    y = torch.randint(0, 30, (100,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = full_softmax_ce(h, table, y, rows=32)
    loss.backward()
    ref = F.cross_entropy(h @ table.t(), y)
    assert loss.dtype == torch.float32 and h.grad.dtype == torch.float32 and table.grad.dtype == torch.float32
    assert abs(float(loss.detach()) - float(ref.detach())) < 0.05  # bf16 matmuls, float32 softmax
