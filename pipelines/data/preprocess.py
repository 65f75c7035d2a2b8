"""The papers' preprocessing: rating threshold, iterative k-core, chronological order, id remap, min 3 items."""
from __future__ import annotations

import numpy as np

from tslrec.backbones.errors import InputError

from .dataset import SequenceDataset
from .readers import RawInteractions


def _sorted_tokens(tokens: np.ndarray) -> np.ndarray:
    """Unique tokens, numerically sorted when every token is an integer, else lexically."""
    uniq = np.unique(tokens)
    try:
        return uniq[np.argsort(uniq.astype(np.int64), kind="stable")]
    except (ValueError, OverflowError):
        return uniq


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Rows kept by iterative k-core filtering (every kept user and item has >= k rows), repeated to a fixed point."""
    keep = np.ones(len(users), dtype=bool)
    _, u_inv = np.unique(users, return_inverse=True)
    _, i_inv = np.unique(items, return_inverse=True)
    while True:
        u_cnt = np.bincount(u_inv[keep], minlength=u_inv.max() + 1)
        i_cnt = np.bincount(i_inv[keep], minlength=i_inv.max() + 1)
        new_keep = keep & (u_cnt[u_inv] >= k) & (i_cnt[i_inv] >= k)
        if new_keep.sum() == keep.sum():
            return keep
        keep = new_keep


def preprocess(raw: RawInteractions, name: str, kcore: int = 0, min_rating: float | None = None) -> SequenceDataset:
    """Filter, order and remap `raw` into per-user chronological sequences."""
    keep = np.ones(len(raw.users), dtype=bool)
    if min_rating is not None:
        if raw.ratings is None:
            raise InputError(f"{raw.source}: --min-rating needs a 'rating' column and this file has none; drop --min-rating")
        keep &= raw.ratings >= min_rating
    rows = np.nonzero(keep)[0]
    if kcore and kcore > 1:
        rows = rows[kcore_mask(raw.users[rows], raw.items[rows], kcore)]
    users, items = raw.users[rows], raw.items[rows]
    if len(rows) == 0:
        raise InputError(f"{raw.source}: no interaction is left after filtering (kcore={kcore}, min_rating={min_rating}); relax the filters")

    user_tokens = _sorted_tokens(users)
    u_code = _codes(user_tokens, users)
    ts = raw.timestamps[rows] if raw.timestamps is not None else np.zeros(len(rows))
    order = np.lexsort((rows, ts, u_code))  # user, then time, then file order (stable tie-break)
    u_code, items = u_code[order], items[order]
    counts = np.bincount(u_code, minlength=len(user_tokens))
    enough = counts >= 3
    dropped = int((~enough).sum())
    if not enough.any():
        raise InputError(f"{raw.source}: no user has at least 3 items after filtering ({dropped} users dropped); "
                         "leave-one-out needs 3 per user: relax --kcore/--min-rating or use more data")
    row_ok = enough[u_code]
    u_code, items = u_code[row_ok], items[row_ok]

    item_tokens = _sorted_tokens(items)
    i_code = _codes(item_tokens, items) + 1  # 1..N, 0 = padding
    bounds = np.cumsum(counts[enough])[:-1]
    sequences = [s.astype(np.int64) for s in np.split(i_code, bounds)]
    item_ids = ["[PAD]"] + [str(t) for t in item_tokens]
    text = None
    if raw.item_text is not None:
        text = [""] + [raw.item_text.get(t, "") for t in item_ids[1:]]
    return SequenceDataset(
        name=name,
        sequences=sequences,
        user_ids=[str(t) for t in user_tokens[enough]],
        item_ids=item_ids,
        item_text=text,
        dropped_users=dropped,
        preprocessing={"kcore": kcore, "min_rating": min_rating},
    )


def _codes(sorted_uniq: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in `sorted_uniq` (which may be numerically, not lexically, sorted)."""
    lookup = {t: i for i, t in enumerate(sorted_uniq.tolist())}
    return np.fromiter((lookup[v] for v in values.tolist()), dtype=np.int64, count=len(values))
