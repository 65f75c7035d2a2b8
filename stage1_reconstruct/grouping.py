"""Latent item categories and per-user preference distributions (the stage 1 targets).

Items are grouped by k-means over the pretrained sequential recommender's item embeddings.
A user's target is the normalised count of their TRAINING items in each group, so the
validation and test items (the last two of each sequence) never leak into stage 1.

Default K = 32: large enough that the distribution says something about a user, small
enough that each group has many items on small catalogues (ML-100K: ~1.6k items, ~50 per
group) and that MSE over a softmax of K classes still gives useful gradients. Sweep it with
`--k` (the paper treats the number of categories as a hyper-parameter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import numpy as np

from tslrec.core.errors import InputError

from .config import KmeansAlgorithm

MINIBATCH_AUTO_ITEMS = 50_000  # above this many items, "auto" uses MiniBatchKMeans


@dataclass
class ItemGroups:
    """Result of grouping items."""

    item_group: np.ndarray  # int64 [N+1]: group of each internal item id; row 0 (padding) = -1
    centroids: np.ndarray  # float32 [K, D]: k-means centres
    sizes: np.ndarray  # int64 [K]: number of items per group


def kmeans_item_groups(
    item_embeddings: np.ndarray,
    k: int,
    seed: int = 0,
    algorithm: KmeansAlgorithm = "auto",
    normalize: bool = False,
    n_init: int = 4,
    source: str = "item embeddings",
) -> ItemGroups:
    """k-means over rows 1..N of `item_embeddings` [N+1, D] (row 0 is padding and gets group -1).

    algorithm: "kmeans" (sklearn KMeans), "minibatch" (MiniBatchKMeans, for big catalogues) or
    "auto" (minibatch above 50k items). normalize: L2-normalise rows first (cosine k-means).
    """
    emb = np.asarray(item_embeddings)
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise InputError(f"{source}: expected a [N+1, D] matrix with row 0 = padding, got shape {tuple(emb.shape)}")
    items = emb[1:].astype(np.float64)
    if not np.isfinite(items).all():
        bad = int((~np.isfinite(items)).any(axis=1).sum())
        raise InputError(f"{source}: {bad} item rows hold NaN/inf; re-train the backbone that exported them")
    n_items = items.shape[0]
    if not 2 <= k <= n_items:
        raise InputError(
            f"Stage1Config.k={k}: the number of groups must be between 2 and the number of items ({n_items}); "
            "choose a smaller --k"
        )
    distinct = len(np.unique(items, axis=0)) if n_items <= 200_000 else n_items
    if distinct < k:
        raise InputError(
            f"{source}: only {distinct} distinct item embeddings for Stage1Config.k={k}; choose a smaller k"
        )
    if normalize:
        items = items / np.clip(np.linalg.norm(items, axis=1, keepdims=True), 1e-12, None)
    from sklearn.cluster import KMeans, MiniBatchKMeans

    use_minibatch = algorithm == "minibatch" or (algorithm == "auto" and n_items > MINIBATCH_AUTO_ITEMS)
    if algorithm not in get_args(KmeansAlgorithm):
        raise InputError(f"k-means algorithm '{algorithm}' is not one of {', '.join(get_args(KmeansAlgorithm))}")
    if use_minibatch:
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=n_init, batch_size=4096)
    else:
        km = KMeans(n_clusters=k, random_state=seed, n_init=n_init)
    labels = km.fit_predict(items).astype(np.int64)  # [N]
    item_group = np.concatenate([[-1], labels]).astype(np.int64)  # [N+1]
    sizes = np.bincount(labels, minlength=k).astype(np.int64)
    return ItemGroups(item_group=item_group, centroids=km.cluster_centers_.astype(np.float32), sizes=sizes)


def user_group_targets(train_sequences: list[np.ndarray], item_group: np.ndarray, k: int) -> np.ndarray:
    """Normalised group counts of each user's training items: float32 [U, K].

    `train_sequences[u]` holds internal item ids (1..N) of user u's TRAINING part only
    (validation/test items already removed). Padding ids (0) are ignored. A user with no
    training item gets an all-zero row; callers drop such users.
    """
    targets = np.zeros((len(train_sequences), k), dtype=np.float32)
    n_rows = item_group.shape[0]
    for u, seq in enumerate(train_sequences):
        ids = np.asarray(seq, dtype=np.int64)
        ids = ids[ids > 0]
        if ids.size == 0:
            continue
        if ids.max() >= n_rows:
            raise InputError(
                f"user {u}: item id {int(ids.max())} is outside the embedding table "
                f"({n_rows - 1} items); the dataset and the embeddings do not match"
            )
        counts = np.bincount(item_group[ids], minlength=k)[:k]
        targets[u] = counts / counts.sum()
    return targets


def global_mean_mse(train_targets: np.ndarray, eval_targets: np.ndarray) -> float:
    """MSE (mean over users and K) of predicting the mean training distribution for every eval user."""
    mean = train_targets.mean(axis=0, keepdims=True)  # [1, K]
    return float(((eval_targets - mean) ** 2).mean())
