"""core.checkpoint and core.run_settings: a run saved mid-training and continued by a fresh trainer ends with the
same weights, bit for bit, as one that never stopped; one rule reads a record that predates a setting."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from lite_helpers import cyclic_train_sequences, lite_llama_dir, one_torch_thread  # noqa: F401

from tslrec.backbones.base import BackboneConfig
from tslrec.backbones.registry import build_backbone
from tslrec.backbones.training import TrainConfig, train
from tslrec.core.checkpoint import Checkpoint
from tslrec.core.errors import InputError
from tslrec.core.run_settings import MISSING, RunSettings
from tslrec.core.run_state import RunState
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.lite_llm4rec.model import LiteConfig, build_lite_model
from tslrec.lite_llm4rec.training import LiteTrainConfig, train_lite
from tslrec.llm.loading import LLMConfig

CPU = torch.device("cpu")


@dataclass
class Toy:
    lr: float = field(default=0.1, metadata={"help": "x"})
    mode: str = field(default="new", metadata={"help": "x", "before": "old"})  # added later
    wide: bool = field(default=False, metadata={"help": "x", "replaces": ("narrow", {True: False, False: True})})


def test_one_rule_for_a_setting_added_later_and_one_renamed():
    now = RunSettings.of({"Toy": Toy(mode="old"), "data": "h1"})
    assert now.changes({"Toy": {"lr": 0.1, "narrow": True}, "data": "h1"}) == []  # predates mode; wide's old name
    default = RunSettings.of({"Toy": Toy(), "data": "h1"})
    assert default.changes({"Toy": {"lr": 0.1, "wide": False}, "data": "h1"}) == [("Toy.mode", MISSING, "new")]
    assert default.changes({"Toy": {"lr": 0.1, "mode": "new", "wide": False, "gone": 1}, "data": "h1"}) == [
        ("Toy.gone", 1, MISSING)
    ]
    with pytest.raises(InputError, match=r"^x: this run was written with Toy\.lr=0\.2, now 0\.1; .*--force") as e:
        default.refuse("x", {"Toy": {"lr": 0.2, "mode": "new", "wide": False}, "data": "h1"}, "run")
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="records no settings"):
        default.refuse("x", None)


def test_a_checkpoint_restores_every_generator(tmp_path):
    weights = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(weights.parameters())
    gen = torch.Generator().manual_seed(3)
    ckpt = Checkpoint(tmp_path / "c.pt", RunSettings.of({"Toy": Toy()}), CPU, generators={"gen": gen})
    torch.manual_seed(1)
    np.random.seed(2)
    ckpt.save(weights.state_dict(), opt, RunState(epoch=1), None)
    expected = (torch.rand(3), np.random.rand(3), torch.rand(3, generator=gen))
    torch.manual_seed(9)
    np.random.seed(9)
    gen.manual_seed(9)
    state = ckpt.restore(ckpt.load(), weights.load_state_dict, opt)
    assert state.epoch == 1
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert torch.equal(torch.rand(3, generator=gen), expected[2])
    with pytest.raises(InputError, match=r"Toy\.lr=0\.1, now 0\.5"):
        Checkpoint(tmp_path / "c.pt", RunSettings.of({"Toy": Toy(lr=0.5)}), CPU).load()


def test_a_checkpoint_continued_by_other_code_says_so(tmp_path, monkeypatch, capsys):
    """The settings may agree while the code changed between a kill and the resume (a campaign's checkout moved on):
    the resumed run says which code wrote the checkpoint and which continues it."""
    from tslrec.core import checkpoint

    weights = torch.nn.Linear(2, 2)
    ckpt = Checkpoint(tmp_path / "c.pt", RunSettings.of({"Toy": Toy()}), CPU)
    monkeypatch.setattr(checkpoint, "source_commit", lambda: "aaaaaaa")
    ckpt.save(weights.state_dict(), torch.optim.AdamW(weights.parameters()), RunState(epoch=1), None)
    assert ckpt.load() is not None and capsys.readouterr().err == ""
    monkeypatch.setattr(checkpoint, "source_commit", lambda: "bbbbbbb")
    ckpt.load()
    assert "c.pt was written by code aaaaaaa, continued by bbbbbbb" in capsys.readouterr().err


def test_a_backbone_run_continued_from_its_checkpoint_ends_bit_identical(cyclic_sequences, tmp_path):
    """Saved after 2 epochs, continued to 4 by a fresh model and trainer in another global RNG state: dropout,
    sampled negatives and the optimizer carry on as if the run had never stopped."""
    splits = LeaveOneOutSplits.from_sequences(cyclic_sequences, 8, max_len=10)
    cfg = TrainConfig(epochs=4, batch_size=16, lr=5e-3, patience=99, loss="bce")

    def model():
        torch.manual_seed(0)
        return build_backbone("sasrec", BackboneConfig(num_items=8, hidden=16, max_len=10, dropout=0.3))

    straight = model()
    ref = train(straight, splits, cfg, CPU, progress=False)
    ckpt = tmp_path / "checkpoint.pt"
    train(model(), splits, TrainConfig(**{**cfg.__dict__, "epochs": 2}), CPU, checkpoint=ckpt, progress=False)
    torch.manual_seed(123)
    resumed = model()
    res = train(resumed, splits, cfg, CPU, checkpoint=ckpt, progress=False)
    assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history]
    assert res.best_epoch == ref.best_epoch and res.test.metrics == ref.test.metrics
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_a_lite_run_continued_from_its_checkpoint_ends_bit_identical(lite_llama_dir, tmp_path):
    """LoRA dropout on: the CPU generator state travels in the checkpoint, so the continued run draws the masks the
    uninterrupted one drew. A changed setting is refused; a record made before a setting existed is not."""
    seqs = cyclic_train_sequences(n_items=12, n_users=8)
    splits = LeaveOneOutSplits.from_sequences(seqs, 12, max_len=8)
    vecs = torch.randn(13, 8, generator=torch.Generator().manual_seed(0))

    def run(max_steps: int, ckpt, **kw):
        model = build_lite_model(vecs, LiteConfig(lora_dropout=0.2), LLMConfig(name_or_path=str(lite_llama_dir)), 0)
        cfg = LiteTrainConfig(
            epochs=3, max_steps=max_steps, batch_size=2, precision="float32", eval_every=2, seed=0, segment_len=9, **kw
        )
        res = train_lite(model, [s[:-2] for s in seqs], splits, cfg, 8, CPU, checkpoint=ckpt, progress=False)
        return model, res

    straight, ref = run(8, None)
    run(4, tmp_path / "ckpt.pt")
    with pytest.raises(InputError, match=r"LiteTrainConfig\.lr=0\.0005, now 0\.001"):
        run(8, tmp_path / "ckpt.pt", lr=1e-3)
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    del saved["settings"]["LiteTrainConfig"]["negatives"]  # as written before the setting existed
    torch.save(saved, tmp_path / "ckpt.pt")
    torch.manual_seed(77)
    resumed, res = run(8, tmp_path / "ckpt.pt")
    assert res.steps == ref.steps == 8 and res.best_step == ref.best_step
    assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history]
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_a_stage1_checkpoint_folder_of_an_older_tslrec_is_refused_in_one_line(tmp_path):
    from tslrec.stage1_reconstruct.training import _older_checkpoints

    _older_checkpoints(tmp_path)  # none: fine
    (tmp_path / "checkpoint_all_users.old").mkdir()
    with pytest.raises(InputError, match=r"checkpoint_all_users: .*older tslrec.*--force") as e:
        _older_checkpoints(tmp_path)
    assert "\n" not in str(e.value)
