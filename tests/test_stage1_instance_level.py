"""Instance-level (E4SRec-style) baseline: instance counting and the cost comparison."""

from __future__ import annotations

import numpy as np
from stage1_helpers import clustered_items, tiny_llama_dir, tiny_llm_cfg, user_sequences  # noqa: F401

from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.data import prepare_stage1_data
from tslrec.stage1_reconstruct.instance_level import epoch_cost, measure_sft_cost, training_instances


def test_instances_are_every_prefix_with_its_next_item():
    seqs = [np.array([5, 6, 7]), np.array([1]), np.array([2, 3, 4, 8, 9])]
    inst = training_instances(seqs, np.array([0, 1, 2]))
    assert inst.tolist() == [[0, 1], [0, 2], [2, 1], [2, 2], [2, 3], [2, 4]]


def test_epoch_cost_counts_passes_and_tokens_exactly():
    cost = epoch_cost(np.array([3, 5]), max_items=3, text_tokens=10)
    assert cost["user_level"] == {"passes": 2, "tokens": (3 + 10) + (3 + 10)}
    # prefixes: [1, 2] and [1, 2, 3, 4] -> capped at 3 items
    assert cost["instance_level"] == {"passes": 2 + 4, "tokens": (1 + 2 + 1 + 2 + 3 + 3) + 6 * 10}


def test_measured_cost_matches_the_counters(tiny_llm_cfg):
    table, truth = clustered_items(n_items=40, dim=8, k=4)
    seqs = user_sequences(truth, n_users=20, k=4, length=(5, 9))
    cfg = Stage1Config(k=4, batch_size=4, max_items=6, precision="float32", val_fraction=0.2)
    r = measure_sft_cost(table, seqs, cfg, tiny_llm_cfg, steps=2, device="cpu")
    u, i = r["user_level"], r["instance_level"]
    train_users = prepare_stage1_data(table, seqs, cfg).train_users
    assert u["passes"] == len(train_users) == r["train_users"]  # one pass per training user per epoch
    assert u["steps_timed"] == 2 and u["passes_timed"] == 8  # 2 timed batches of 4 users
    assert i["passes"] == sum(len(seqs[k]) - 1 for k in train_users) and i["passes_timed"] == 8
    assert r["ratio_instance_over_user"]["passes"] == i["passes"] / u["passes"] > 3
    assert u["seconds_per_epoch_extrapolated"] == u["seconds_per_step"] * np.ceil(len(train_users) / 4) > 0
    assert i["steps_per_epoch"] == int(np.ceil(i["passes"] / 4))
