"""Next-item losses over the item table.

`full_softmax_ce` is softmax cross-entropy over all N items, computed in row chunks: the [T, N]
logits are never held at once, so each chunk's logits, softmax and gradient stay in cache. The
forward pass computes the gradients too (it has the softmax in hand), and the backward pass only
scales them: 3 matmuls per chunk, as for the unfused loss, and no second pass over [T, N].
Under autocast the matmuls run in the autocast dtype; the softmax, the loss and the table's
gradient accumulate in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 28}  # logits per chunk: ~4 MB on a CPU (cache), ~1 GB on a GPU


def chunk_rows(num_items: int, device: torch.device) -> int:
    """Rows of [rows, N] logits per chunk for this device."""
    return max(64, CHUNK_ELEMENTS.get(device.type, 1 << 26) // max(num_items, 1))


class _ChunkedSoftmaxCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, table: torch.Tensor, y: torch.Tensor, rows: int, dtype: torch.dtype):
        # h [T, H], table [N, H], y [T] in 0..N-1 -> mean loss []
        T = h.shape[0]
        hc_all, w = h.detach().to(dtype), table.detach().to(dtype)
        grad_h = torch.empty(h.shape, dtype=dtype, device=h.device)  # [T, H]
        grad_w = torch.zeros(table.shape, dtype=torch.float32, device=h.device)  # [N, H]
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        rows_idx = torch.arange(min(rows, T), device=h.device)
        with torch.autocast(h.device.type, enabled=False):
            for s in range(0, T, rows):
                hc, yc = hc_all[s : s + rows], y[s : s + rows]  # [R, H], [R]
                r = rows_idx[: len(yc)]
                logp = torch.log_softmax(hc @ w.t(), dim=1, dtype=torch.float32)  # [R, N]
                loss -= logp[r, yc].sum()
                p = logp.exp_()  # softmax
                p[r, yc] -= 1.0  # d loss_i / d logits_i
                p = p.to(dtype)
                torch.mm(p, w, out=grad_h[s : s + rows])
                grad_w += (p.t() @ hc).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.scale = 1.0 / max(T, 1)
        ctx.dtypes = (h.dtype, table.dtype)
        return loss * ctx.scale

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        g = grad_out * ctx.scale
        return (grad_h * g).to(ctx.dtypes[0]), (grad_w * g).to(ctx.dtypes[1]), None, None, None


def full_softmax_ce(
    h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, rows: int | None = None
) -> torch.Tensor:
    """Mean softmax cross-entropy of states h [T, H] against every row of `table` [N, H]; targets [T] in 0..N-1.

    Equal to F.cross_entropy(h @ table.T, targets) (up to float rounding), with the same gradients.
    """
    dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else torch.float32
    if not (h.requires_grad or table.requires_grad):
        return F.cross_entropy((h.to(dtype) @ table.to(dtype).t()).float(), targets)
    return _ChunkedSoftmaxCE.apply(h, table, targets, rows or chunk_rows(table.shape[0], h.device), dtype)


def sampled_bce(h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None):
    """Binary cross-entropy of each target against one uniformly sampled negative. table [N+1, H] (row 0 = pad)."""
    neg = torch.randint(1, table.size(0), targets.shape, device=targets.device, generator=generator)  # [T]
    pos_logit = (h * table[targets]).sum(-1)
    neg_logit = (h * table[neg]).sum(-1)
    return F.binary_cross_entropy_with_logits(
        pos_logit, torch.ones_like(pos_logit)
    ) + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
