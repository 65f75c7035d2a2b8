"""Stage 1's continuation on all users (Stage1Config.all_users_epochs): held-out MSEs measured before it, saved
weights after it, every user trained on, resumable after a kill, a bad value refused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from stage1_helpers import clustered_items, quick_stage1_cfg, tiny_llama_dir, tiny_llm_cfg, user_sequences  # noqa: F401

from tslrec.core.artifacts import load_tensors, read_json
from tslrec.core.errors import InputError
from tslrec.pipelines.cli import main
from tslrec.pipelines.stage1_job import Stage1Outcome, print_outcome
from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.training import TRACE_ENV, StepTrace, read_step_traces, train_stage1

TABLE, TRUTH = clustered_items(n_items=40, dim=8, k=4, seed=1)
SEQS = user_sequences(TRUTH, n_users=24, k=4, seed=1, length=(5, 10))
# 24 users: 6 validation, 6 test, 12 training = 3 steps of 4 users per epoch, 2 epochs = 6 steps; then one epoch
# over all 24 users = 6 steps of the continuation, checkpointed every 2
MAIN_STEPS, ALL_USERS_STEPS = 6, 6


def cfg(**kw: Any) -> Stage1Config:
    return quick_stage1_cfg(epochs=2, test_fraction=0.25, **kw)


class Killed(Exception):
    """Stands in for SIGKILL: raised from inside the loop, nothing after it runs."""


@dataclass
class Runs:
    """The same stage 1 without and with one epoch of continuation on all users (this one traced)."""

    plain: Path
    continued: Path
    traces: list[StepTrace]  # the continued run's, one per optimizer step


@pytest.fixture(scope="module")
def runs(tiny_llm_cfg, tmp_path_factory: pytest.TempPathFactory) -> Runs:  # noqa: F811
    root = tmp_path_factory.mktemp("all-users")
    train_stage1(TABLE, SEQS, root / "plain", cfg(), tiny_llm_cfg, device="cpu", progress=False)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(TRACE_ENV, str(root / "trace"))
        train_stage1(
            TABLE, SEQS, root / "continued", cfg(all_users_epochs=1), tiny_llm_cfg, device="cpu", progress=False
        )
    return Runs(root / "plain", root / "continued", read_step_traces(root / "trace")[0])


def saved_weights(out: Path) -> dict[str, Any]:
    """The trainable weights stage 2 reads: LoRA adapter and projection/head, by file and name."""
    adapter = load_tensors(out / "adapter" / "adapter_model.safetensors")
    return {**{f"adapter.{k}": v for k, v in adapter.items()}, **load_tensors(out / "heads.safetensors")}


def test_held_out_mse_is_measured_before_and_saved_weights_after_the_continuation(runs: Runs) -> None:
    plain, continued = read_json(runs.plain / "metrics.json"), read_json(runs.continued / "metrics.json")
    held_out = [k for k in plain["metrics"] if k.startswith("mse")]
    assert "mse" in held_out and "mse_val" in held_out and "mse_mean_embedding" in held_out
    for key in held_out:  # the same seed and early-stopped training: the very same numbers
        assert continued["metrics"][key] == plain["metrics"][key], key
    assert continued["steps"] == plain["steps"] == MAIN_STEPS and continued["best_step"] == plain["best_step"]
    before, after = saved_weights(runs.plain), saved_weights(runs.continued)
    assert sorted(before) == sorted(after)
    changed = [k for k in before if not before[k].equal(after[k])]
    assert any(k.startswith("adapter.") for k in changed) and "head.weight" in changed  # LoRA and head trained on
    # off (the default), nothing of it shows: config.json as before the setting existed, no "all_users" record
    assert "all_users_epochs" not in read_json(runs.plain / "config.json")["stage1"] and "all_users" not in plain
    assert read_json(runs.continued / "config.json")["stage1"]["all_users_epochs"] == 1


def test_the_continuation_trains_on_every_user_held_out_ones_included(runs: Runs, capsys) -> None:
    groups = load_tensors(runs.continued / "groups.safetensors")
    train = set(groups["train_users"].tolist())
    held_out = set(groups["val_users"].tolist()) | set(groups["test_users"].tolist())
    assert len(train) == 12 and len(held_out) == 12
    assert [t.step for t in runs.traces] == list(range(1, MAIN_STEPS + ALL_USERS_STEPS + 1))
    main_users = {u for t in runs.traces[:MAIN_STEPS] for u in t.users}
    continuation = [u for t in runs.traces[MAIN_STEPS:] for u in t.users]
    assert main_users == train  # early stopping never trained on a held-out user ...
    assert sorted(continuation) == sorted(train | held_out)  # ... its continuation on each user once (one epoch)
    record = read_json(runs.continued / "metrics.json")["all_users"]
    assert (record["users"], record["held_out_users"], record["steps"]) == (24, 12, ALL_USERS_STEPS)
    assert record["train_llm_passes"] == 24 and record["train_seconds"] > 0
    log = read_json(runs.continued / "log.json")
    assert [r["step"] for r in log if r.get("all_users")] == list(
        range(MAIN_STEPS + 1, MAIN_STEPS + ALL_USERS_STEPS + 1)
    )
    assert not any("val_mse" in r for r in log if r.get("all_users"))  # nothing is left to validate on
    print_outcome(Stage1Outcome(read_json(runs.continued / "metrics.json"), "toy", runs.continued, True))
    assert f"{MAIN_STEPS} steps then {ALL_USERS_STEPS} on all 24 users" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("killed_at", "checkpoint", "at_step"),
    [
        (MAIN_STEPS + 1, "checkpoint.pt", MAIN_STEPS),  # before the continuation's first checkpoint: it starts over
        (MAIN_STEPS + 3, "checkpoint_all_users.pt", 2),  # after its checkpoint at its step 2: its step 3 is lost
    ],
)
def test_a_killed_continuation_resumes_to_the_same_weights(
    runs: Runs, tiny_llm_cfg, tmp_path: Path, killed_at: int, checkpoint: str, at_step: int
) -> None:
    out = tmp_path / "killed"

    def kill(step: int) -> None:
        if step == killed_at:
            raise Killed

    with pytest.raises(Killed):
        train_stage1(
            TABLE, SEQS, out, cfg(all_users_epochs=1), tiny_llm_cfg, device="cpu", on_step=kill, progress=False
        )
    assert torch.load(out / checkpoint, weights_only=True)["state"]["step"] == at_step
    with pytest.raises(InputError, match=r"checkpoint was written with Stage1Config\.all_users_epochs=1, now 2"):
        train_stage1(TABLE, SEQS, out, cfg(all_users_epochs=2), tiny_llm_cfg, device="cpu", progress=False)
    steps: list[int] = []
    resumed = train_stage1(
        TABLE, SEQS, out, cfg(all_users_epochs=1), tiny_llm_cfg, device="cpu", on_step=steps.append, progress=False
    )
    assert steps == list(range(killed_at, MAIN_STEPS + ALL_USERS_STEPS + 1))  # on from the last checkpoint
    uninterrupted = read_json(runs.continued / "metrics.json")
    assert resumed["metrics"] == uninterrupted["metrics"] and resumed["all_users"]["steps"] == ALL_USERS_STEPS
    expected, got = saved_weights(runs.continued), saved_weights(out)
    assert all(expected[k].equal(got[k]) for k in expected)  # same data, optimizer, schedule and RNG: same weights
    assert not (out / "checkpoint.pt").exists() and not (out / "checkpoint_all_users.pt").exists()


@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_a_bad_value_is_refused_naming_the_setting(value: float, tmp_path: Path, capsys) -> None:
    with pytest.raises(InputError, match=r"^Stage1Config\.all_users_epochs=.*: must be 0 \(off\)") as e:
        Stage1Config(all_users_epochs=value)
    assert "\n" not in str(e.value)
    argv = ["stage1", "--train-dir", str(tmp_path / "no-train"), "--out", str(tmp_path / "s1")]
    assert main([*argv, "--all-users-epochs", str(value)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--all-users-epochs" in err, err
