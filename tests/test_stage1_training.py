"""Stage 1 training on a tiny random Llama: learning, resuming after a kill, saved artefacts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stage1_helpers import clustered_items, quick_stage1_cfg, tiny_llama_dir, tiny_llm_cfg, user_sequences  # noqa: F401

from tslrec.core.artifacts import load_tensors, read_json
from tslrec.core.errors import InputError
from tslrec.core.precision import cpu_capability
from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.data import prepare_stage1_data
from tslrec.stage1_reconstruct.evaluation import distribution_mse, predict_distributions
from tslrec.stage1_reconstruct.model_io import load_reconstruction_model
from tslrec.stage1_reconstruct.training import train_stage1

TABLE, TRUTH = clustered_items(n_items=60, dim=8, k=4, seed=0)
SEQS = user_sequences(TRUTH, n_users=48, k=4, seed=0)


def quick_cfg(**kw) -> Stage1Config:
    return quick_stage1_cfg(**kw)


class Killed(Exception):
    """Stands in for SIGKILL: raised from inside the loop, nothing after it runs."""


@pytest.fixture(scope="module")
def full_run(tiny_llm_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, train_stage1(TABLE, SEQS, out, quick_cfg(), tiny_llm_cfg, device="cpu", progress=False)


def test_training_learns_the_distributions(full_run):
    out, metrics = full_run
    m = metrics["metrics"]
    log = read_json(out / "log.json")
    losses = [r["loss"] for r in log if "loss" in r]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])  # the training loss falls
    assert m["mse"] < 0.5 * m["mse_global_mean"]  # test users: well below the global-mean baseline
    assert m["mse_val"] < 0.5 * m["mse_global_mean_val"] and m["reported_on"] == "test users"
    assert metrics["users"] == {"train": 31, "val": 12, "test": 5, "dropped_no_train_items": 0}
    assert metrics["steps"] == metrics["total_steps_planned"] == 3 * 8  # 31 users / 4 per batch, 3 epochs
    assert metrics["timing"]["train_llm_passes"] == 3 * 31  # one LLM pass per user per epoch


def test_a_stage1_run_records_the_precision_it_resolved_to_and_the_cpu(full_run):
    timing = full_run[1]["timing"]
    assert timing["precision"] in ("float32", "bf16")  # never "auto"
    assert timing["cpu_capability"] == cpu_capability()


def test_saved_model_reloads_with_the_same_predictions(full_run, tiny_llm_cfg):
    out, metrics = full_run
    model, config = load_reconstruction_model(out)
    assert config["k"] == 4 and (out / "adapter" / "adapter_config.json").is_file()
    groups = load_tensors(out / "groups.safetensors")
    assert groups["item_group"][0].item() == -1 and groups["user_targets"].shape == (48, 4)
    cfg = quick_cfg()
    data = prepare_stage1_data(TABLE, SEQS, cfg)
    assert np.array_equal(groups["test_users"].numpy(), data.test_users)
    _, probs = predict_distributions(model, data.item_embeddings, data, data.test_users, cfg, torch.device("cpu"))
    mse, _ = distribution_mse(probs, data.targets[data.test_users])
    assert mse == pytest.approx(metrics["metrics"]["mse"], rel=1e-4)
    emb, probs = model.encode_items(data.item_embeddings[1:], progress=False)
    assert emb.shape == (60, 32) and torch.allclose(probs.sum(1), torch.ones(60), atol=1e-5)
    # a finished folder is not trained again, and other settings are refused
    again = train_stage1(TABLE, SEQS, out, quick_cfg(), tiny_llm_cfg, device="cpu", progress=False)
    assert again["metrics"]["mse"] == metrics["metrics"]["mse"]
    with pytest.raises(InputError, match=r"Stage1Config\.lora_r=8, now 4; .*--force"):
        train_stage1(TABLE, SEQS, out, quick_cfg(lora_r=4), tiny_llm_cfg, device="cpu", progress=False)


def test_resume_after_kill_reaches_the_same_step_count_and_result(full_run, tiny_llm_cfg, tmp_path):
    _, uninterrupted = full_run
    out = tmp_path / "killed"

    def kill_at_11(step: int) -> None:
        if step == 11:  # last checkpoint was at step 10; step 11 is lost
            raise Killed

    with pytest.raises(Killed):
        train_stage1(TABLE, SEQS, out, quick_cfg(), tiny_llm_cfg, device="cpu", on_step=kill_at_11, progress=False)
    assert not (out / "metrics.json").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["state"]["step"] == 10
    steps_seen: list[int] = []
    resumed = train_stage1(
        TABLE, SEQS, out, quick_cfg(), tiny_llm_cfg, device="cpu", on_step=steps_seen.append, progress=False
    )
    assert steps_seen[0] == 11 and steps_seen[-1] == 24
    assert resumed["steps"] == uninterrupted["steps"] == 24
    log_steps = [r["step"] for r in read_json(out / "log.json") if "loss" in r]
    assert log_steps == list(range(1, 25))  # every optimizer step exactly once
    # same data order, optimizer, scheduler and RNG state: the same model
    assert resumed["metrics"]["mse"] == pytest.approx(uninterrupted["metrics"]["mse"], rel=1e-4)
    assert not (out / "checkpoint.pt").exists()  # removed once the run is complete


def test_grad_accumulation_max_steps_and_untuned_baseline(tiny_llm_cfg, tmp_path):
    cfg = quick_cfg(grad_accum=2, max_steps=7, untuned_baseline="head", eval_every=3)
    metrics = train_stage1(TABLE, SEQS, tmp_path / "acc", cfg, tiny_llm_cfg, device="cpu", progress=False)
    assert metrics["steps_per_epoch"] == 4 and metrics["steps"] == 7  # ceil(8 batches / 2), capped at 7
    assert metrics["timing"]["train_llm_passes"] == 31 + 3 * 2 * 4  # all of epoch 1 + 3 steps of 2 batches of 4
    log = read_json(tmp_path / "acc" / "log.json")
    assert [r["step"] for r in log if "val_mse" in r] == [3, 6, 7]
    assert 0 < metrics["metrics"]["mse_untuned_llm"] and 0 <= metrics["metrics"]["untuned_llm_best_step"] <= 1000


def test_minutes_budget_stops_after_one_step_and_validates_it(tiny_llm_cfg, tmp_path):
    cfg = quick_cfg(max_minutes=1e-9, untuned_baseline="none")  # spent after the first step
    metrics = train_stage1(TABLE, SEQS, tmp_path / "budget", cfg, tiny_llm_cfg, device="cpu", progress=False)
    assert metrics["steps"] == 1
    log = read_json(tmp_path / "budget" / "log.json")
    assert [r["step"] for r in log if "val_mse" in r] == [1]  # the last weights are validated before stopping


def test_rms_head_norm_reads_the_pooled_state_at_one_scale_and_reloads_with_it(tiny_llm_cfg, tmp_path):
    cfg = quick_cfg(head_norm="rms", max_steps=3)
    metrics = train_stage1(TABLE, SEQS, tmp_path / "rms", cfg, tiny_llm_cfg, device="cpu", progress=False)
    model, _ = load_reconstruction_model(tmp_path / "rms")
    assert model.head_norm == "rms"  # stage 2 reads the head as it was trained
    data = prepare_stage1_data(TABLE, SEQS, cfg)
    _, probs = predict_distributions(model, data.item_embeddings, data, data.test_users, cfg, torch.device("cpu"))
    mse, _ = distribution_mse(probs, data.targets[data.test_users])
    assert mse == pytest.approx(metrics["metrics"]["mse"], rel=1e-4)
    h = torch.randn(5, model.encoder.hidden)
    assert torch.allclose(model.group_probs(3.0 * h), model.group_probs(h), atol=1e-6)  # an LLM 3x louder: same head
    model.head_norm = "none"
    assert not torch.allclose(model.group_probs(3.0 * h), model.group_probs(h), atol=1e-6)
    assert Stage1Config.from_dict({}).head_norm == "none"  # a run recorded before the setting: the paper's head


def test_every_stage1_schedule_offered_builds_and_the_others_are_refused_at_once():
    """transformers schedulers that need a metric, a minimum rate or decay steps stopped at the first step, after
    the LLM had loaded; the setting offers only those that run and refuses the others when the config is made."""
    from typing import get_args

    from transformers import get_scheduler

    from tslrec.stage1_reconstruct.config import LRSchedule

    for name in get_args(LRSchedule):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        scheduler = get_scheduler(name, opt, num_warmup_steps=2, num_training_steps=10)
        opt.step()
        scheduler.step()
    for name in ("reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay", "no-such"):
        with pytest.raises(InputError, match="lr_schedule"):
            Stage1Config(lr_schedule=name)
