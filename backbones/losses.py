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
    def forward(ctx, h, table, y, rows: int, dtype: torch.dtype, seen: torch.Tensor, once: torch.Tensor, bias):
        # h [T, H], table [N, H], y [T] in 0..N-1; seen [T, S] in 0..N-1 and once [T, S] float: where the
        # scalar `bias` is added to row t's logits (S = 0: no bias) -> mean loss []
        T = h.shape[0]
        grad_bias = torch.zeros((), dtype=torch.float32, device=h.device)
        hc_all, w = h.detach().to(dtype), table.detach().to(dtype)
        grad_h = torch.empty(h.shape, dtype=dtype, device=h.device)  # [T, H]
        grad_w = torch.zeros(table.shape, dtype=torch.float32, device=h.device)  # [N, H]
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        rows_idx = torch.arange(min(rows, T), device=h.device)
        with torch.autocast(h.device.type, enabled=False):
            for s in range(0, T, rows):
                hc, yc = hc_all[s : s + rows], y[s : s + rows]  # [R, H], [R]
                r = rows_idx[: len(yc)]
                logits = hc @ w.t()  # [R, N]
                if seen.shape[1]:
                    sc, oc = seen[s : s + rows], once[s : s + rows]  # [R, S]
                    logits = logits.float().scatter_add_(1, sc, oc * bias)
                logp = torch.log_softmax(logits, dim=1, dtype=torch.float32)  # [R, N]
                loss -= logp[r, yc].sum()
                p = logp.exp_()  # softmax
                p[r, yc] -= 1.0  # d loss_i / d logits_i
                if seen.shape[1]:
                    grad_bias += (p.gather(1, sc) * oc).sum()
                p = p.to(dtype)
                torch.mm(p, w, out=grad_h[s : s + rows])
                grad_w += (p.t() @ hc).float()
        ctx.save_for_backward(grad_h, grad_w, grad_bias)
        ctx.scale = 1.0 / max(T, 1)
        ctx.dtypes = (h.dtype, table.dtype, bias.dtype)
        return loss * ctx.scale

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w, grad_bias = ctx.saved_tensors
        g = grad_out * ctx.scale
        dh, dw, db = (grad_h * g).to(ctx.dtypes[0]), (grad_w * g).to(ctx.dtypes[1]), (grad_bias * g).to(ctx.dtypes[2])
        return dh, dw, None, None, None, None, None, db


def full_softmax_ce(
    h: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    rows: int | None = None,
    seen: tuple[torch.Tensor, torch.Tensor] | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean softmax cross-entropy of states h [T, H] against every row of `table` [N, H]; targets [T] in 0..N-1.

    Equal to F.cross_entropy(h @ table.T, targets) (up to float rounding), with the same gradients. With
    `seen` = (items [T, S] in 0..N-1, once [T, S] bool) and a scalar `bias`, row t's logits get `bias` added
    at each items[t, s] where once[t, s] (the input-item bias; `bias` gets its gradient too).
    """
    dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else torch.float32
    if seen is None or bias is None:
        items, once, bias = targets.new_zeros(len(targets), 0), h.new_zeros(len(targets), 0, dtype=torch.float32), None
    else:
        items, once = seen[0], seen[1].float()
    if not (h.requires_grad or table.requires_grad or (bias is not None and bias.requires_grad)):
        logits = (h.to(dtype) @ table.to(dtype).t()).float()  # [T, N]
        if bias is not None:
            logits = logits.scatter_add(1, items, once * bias.float())
        return F.cross_entropy(logits, targets)
    b = bias.float() if bias is not None else h.new_zeros((), dtype=torch.float32)
    rows = rows or chunk_rows(table.shape[0], h.device)
    return _ChunkedSoftmaxCE.apply(h, table, targets, rows, dtype, items, once, b)


def sampled_bce(
    h: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator | None,
    seen: tuple[torch.Tensor, torch.Tensor] | None = None,
    bias: torch.Tensor | None = None,
):
    """Binary cross-entropy of each target against one uniformly sampled negative. table [N+1, H] (row 0 = pad).

    `seen` and `bias` as in `full_softmax_ce` (items index table[1:])."""
    neg = torch.randint(1, table.size(0), targets.shape, device=targets.device, generator=generator)  # [T]
    pos_logit = (h * table[targets]).sum(-1)
    neg_logit = (h * table[neg]).sum(-1)
    if seen is not None and bias is not None:
        items, once = seen  # [T, S]

        def in_input(ids: torch.Tensor) -> torch.Tensor:  # [T] ids in 1..N -> [T] 0/1
            return ((items == (ids - 1)[:, None]) & once).any(1).to(pos_logit.dtype)

        pos_logit = pos_logit + bias * in_input(targets)
        neg_logit = neg_logit + bias * in_input(neg)
    return F.binary_cross_entropy_with_logits(
        pos_logit, torch.ones_like(pos_logit)
    ) + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
