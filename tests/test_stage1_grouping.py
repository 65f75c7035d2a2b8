"""k-means groups and user targets: hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
from stage1_helpers import clustered_items

from tslrec.core.errors import InputError
from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.data import prepare_stage1_data
from tslrec.stage1_reconstruct.grouping import global_mean_mse, kmeans_item_groups, user_group_targets


def test_kmeans_recovers_planted_clusters_and_excludes_padding():
    table, truth = clustered_items(n_items=80, k=5, seed=3)
    groups = kmeans_item_groups(table, k=5, seed=0)
    assert groups.item_group[0] == -1 and groups.item_group.shape == (81,)
    # same partition as the planted clusters, up to label names
    pairs = set(zip(truth[1:].tolist(), groups.item_group[1:].tolist()))
    assert len(pairs) == 5 and len({a for a, _ in pairs}) == 5 and len({b for _, b in pairs}) == 5
    assert groups.sizes.sum() == 80 and groups.centroids.shape == (5, table.shape[1])
    again = kmeans_item_groups(table, k=5, seed=0)
    assert np.array_equal(again.item_group, groups.item_group)  # seeded
    mini = kmeans_item_groups(table, k=5, seed=0, algorithm="minibatch")
    assert len(set(zip(truth[1:].tolist(), mini.item_group[1:].tolist()))) == 5


def test_targets_are_normalised_counts_of_training_items():
    item_group = np.array([-1, 0, 0, 1, 2, 2, 2])  # ids 1..6
    targets = user_group_targets([np.array([1, 3, 4, 5]), np.array([6]), np.array([], dtype=np.int64)], item_group, k=3)
    assert np.allclose(targets[0], [0.25, 0.25, 0.5])
    assert np.allclose(targets[1], [0, 0, 1])
    assert np.allclose(targets[2], 0)  # no training item -> zero row (dropped by prepare_stage1_data)


def test_validation_and_test_items_never_enter_targets():
    """Full sequences end with two items of group 2, which appears nowhere else; the training part excludes them."""
    table, _ = clustered_items(n_items=30, k=3, seed=1)
    groups = kmeans_item_groups(table, k=3, seed=0)
    ig = groups.item_group
    only_g = {g: np.flatnonzero(ig == g) for g in range(3)}
    full = [
        np.array([only_g[0][0], only_g[1][0], only_g[0][1], only_g[2][0], only_g[2][1]]),
        np.array([only_g[1][2], only_g[1][3], only_g[0][2], only_g[2][2], only_g[2][3]]),
    ]
    train = [s[:-2] for s in full]  # leave-one-out: drop the validation and test items
    targets = user_group_targets(train, ig, k=3)
    assert np.allclose(targets[:, 2], 0.0)
    assert np.allclose(targets[0], [2 / 3, 1 / 3, 0]) and np.allclose(targets[1], [1 / 3, 2 / 3, 0])


def test_prepare_data_drops_empty_users_and_splits_disjointly():
    table, truth = clustered_items(n_items=40, k=4)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 41, size=int(rng.integers(1, 8))) for _ in range(30)] + [np.array([], dtype=np.int64)]
    data = prepare_stage1_data(table, seqs, Stage1Config(k=4, val_fraction=0.2, test_fraction=0.1))
    splits = [data.train_users, data.val_users, data.test_users]
    assert data.dropped_users == 1 and all(30 not in s for s in splits)
    assert len(np.unique(np.concatenate(splits))) == 30  # disjoint and complete
    assert (len(data.val_users), len(data.test_users)) == (6, 3)
    assert np.allclose(data.targets[data.train_users].sum(1), 1.0)


def test_global_mean_mse():
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert global_mean_mse(train, np.array([[1.0, 0.0]])) == pytest.approx(0.25)


@pytest.mark.parametrize("case", ["k_too_big", "nan", "id_out_of_range", "k_one"])
def test_bad_inputs_are_one_line_input_errors(case):
    table, truth = clustered_items(n_items=10, k=2)
    seqs = [np.array([1, 2, 3]), np.array([4, 5, 6])] * 3
    cfg = Stage1Config(k=4)
    if case == "k_too_big":
        cfg = Stage1Config(k=11)
    elif case == "nan":
        table[3, 1] = np.nan
    elif case == "id_out_of_range":
        seqs[0] = np.array([1, 11])
    with pytest.raises(InputError) as err:
        if case == "k_one":
            Stage1Config(k=1)
        else:
            prepare_stage1_data(table, seqs, cfg)
    assert "\n" not in str(err.value)
    assert {"k_too_big": "Stage1Config.k=11", "nan": "NaN", "id_out_of_range": "item ids", "k_one": "Stage1Config.k=1"}[
        case
    ] in str(err.value)
