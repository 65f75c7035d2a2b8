"""The papers' preprocessing: rating threshold, iterative k-core, chronological order, id remap, min 3 items."""

from __future__ import annotations

import numpy as np

from tslrec.core.errors import InputError

from .dataset import SequenceDataset
from .raw import RawInteractions


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes [R], tokens [U]) with tokens sorted numerically when all are integers, else lexically."""
    lookup: dict[str, int] = {}
    first = np.fromiter((lookup.setdefault(v, len(lookup)) for v in values.tolist()), dtype=np.int64, count=len(values))
    tokens = np.array(list(lookup), dtype=object)
    try:
        order = np.argsort(tokens.astype(np.int64), kind="stable")
    except (ValueError, OverflowError):
        order = np.argsort(tokens.astype(str), kind="stable")
    rank = np.empty(len(tokens), dtype=np.int64)
    rank[order] = np.arange(len(tokens))
    return rank[first], tokens[order]


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Rows kept by iterative k-core filtering (every kept user and item has >= k rows), repeated to a fixed point."""
    keep = np.ones(len(users), dtype=bool)
    u_inv = users if users.dtype == np.int64 else factorize(users)[0]
    i_inv = items if items.dtype == np.int64 else factorize(items)[0]
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
            raise InputError(
                f"{raw.source}: --min-rating needs a 'rating' column and this file has none; drop --min-rating"
            )
        keep &= raw.ratings >= min_rating
    all_users, user_tokens = factorize(raw.users)
    all_items, item_tokens = factorize(raw.items)
    rows = np.nonzero(keep)[0]
    if kcore and kcore > 1:
        rows = rows[kcore_mask(all_users[rows], all_items[rows], kcore)]
    if len(rows) == 0:
        raise InputError(
            f"{raw.source}: no interaction is left after filtering (kcore={kcore}, min_rating={min_rating}); "
            "relax the filters"
        )

    u_code, items = all_users[rows], all_items[rows]
    ts = raw.timestamps[rows] if raw.timestamps is not None else np.zeros(len(rows))
    order = np.lexsort((rows, ts, u_code))  # user, then time, then file order (stable tie-break)
    u_code, items = u_code[order], items[order]
    counts = np.bincount(u_code, minlength=len(user_tokens))
    enough = counts >= 3
    dropped = int(((counts > 0) & ~enough).sum())
    if not enough.any():
        raise InputError(
            f"{raw.source}: no user has at least 3 items after filtering ({dropped} users dropped); "
            "leave-one-out needs 3 per user: relax --kcore/--min-rating or use more data"
        )
    row_ok = enough[u_code]
    u_code, items = u_code[row_ok], items[row_ok]

    kept_items = np.unique(items)  # sorted codes = sorted tokens
    item_tokens = item_tokens[kept_items]
    i_code = np.searchsorted(kept_items, items) + 1  # 1..N, 0 = padding
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
