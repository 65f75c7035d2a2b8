"""Lite-LLM4Rec model: shapes, mean pooling, prefix sharing, the T5 encoder path, the shared loader, save/load."""

from __future__ import annotations

import pytest
import torch
from lite_helpers import lite_llama_dir, one_torch_thread, tiny_t5_dir  # noqa: F401

from tslrec.lite_llm4rec.model import LiteConfig, build_lite_model
from tslrec.lite_llm4rec.model_io import load_lite_model, save_lite_model
from tslrec.llm.loading import LLMConfig


def item_vectors(n: int = 12, dim: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n + 1, dim, generator=g)
    v[0] = 0
    return v


@pytest.fixture(scope="module")
def llama_model(lite_llama_dir):
    model = build_lite_model(item_vectors(), LiteConfig(), LLMConfig(name_or_path=str(lite_llama_dir)))
    return model.eval()


def test_shapes_and_trainable_parts(llama_model):
    seq = torch.tensor([[3, 4, 5, 0, 0], [7, 8, 9, 10, 11]])  # right-padded, as the evaluator passes them
    h = llama_model(seq, torch.tensor([3, 5]))
    scores = llama_model.score(h)
    assert h.shape == (2, 32) and scores.shape == (2, 13)
    assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    trainable = {
        n.split(".")[0] if not n.startswith("rec.") else n.split(".")[1]
        for n, p in llama_model.named_parameters()
        if p.requires_grad
    }
    assert trainable == {"llm", "adapter", "head"}  # LoRA inside the LLM, the adapter and W; item vectors frozen
    assert any("lora_" in n for n, p in llama_model.named_parameters() if p.requires_grad)
    assert llama_model.rec.causal and llama_model.rec.num_prefix == 1  # BOS in front, never pooled


def test_mean_pooling_ignores_padding_and_bos(llama_model):
    with torch.no_grad():
        right = llama_model(torch.tensor([[3, 4, 5, 0, 0, 0]]))
        left = llama_model(torch.tensor([[0, 0, 3, 4, 5]]))
        alone = llama_model(torch.tensor([[3, 4, 5]]))
        batched = llama_model(torch.tensor([[3, 4, 5, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7]]))[:1]
        hidden, item_mask = llama_model.rec.states(
            llama_model.item_vectors[torch.tensor([[3, 4, 5]])], torch.ones(1, 3, dtype=torch.bool)
        )
    for other in (right, left, batched):
        torch.testing.assert_close(other, alone, atol=1e-5, rtol=1e-4)
    assert item_mask.tolist() == [[False, True, True, True]]  # BOS attended, not pooled
    torch.testing.assert_close(alone, hidden[:, 1:].mean(1), atol=1e-6, rtol=1e-5)


def test_prefix_states_equal_running_each_prefix_alone(llama_model):
    ids = torch.tensor([[0, 0, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])  # left-padded
    with torch.no_grad():
        states = llama_model.rec.prefix_states(llama_model.item_vectors[ids], ids > 0)  # [2, 6, H]
        for row in range(2):
            items = ids[row][ids[row] > 0]
            offset = ids.shape[1] - len(items)
            for t in range(1, len(items) + 1):
                alone = llama_model(items[:t].unsqueeze(0))[0]
                torch.testing.assert_close(states[row, offset + t - 1], alone, atol=1e-5, rtol=1e-4)


def test_loss_counts_every_target_of_a_causal_row(llama_model):
    ids = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    targets = torch.tensor([[0, 2, 3, 4], [0, 0, 0, 8]])
    loss, n = llama_model.loss(ids, targets)
    assert n == 4 and torch.isfinite(loss)


def test_t5_encoder_path(tiny_t5_dir):
    """A T5 checkpoint works as the Recommendation LLM: its encoder stack, bidirectional, no position ids."""
    model = build_lite_model(item_vectors(), LiteConfig(), LLMConfig(name_or_path=str(tiny_t5_dir))).eval()
    assert not model.rec.causal
    assert type(model.rec.llm.get_base_model()).__name__ == "T5Model"
    with torch.no_grad():
        h = model(torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7]]))
        left = model(torch.tensor([[0, 1, 2, 3]]))
    assert h.shape == (2, 32)
    torch.testing.assert_close(h[:1], left, atol=1e-5, rtol=1e-4)
    loss, n = model.loss(torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[0, 0, 3], [0, 0, 6]]))
    loss.backward()
    assert n == 2 and model.head.weight.grad is not None
    with pytest.raises(ValueError, match="one target per row"):
        model.loss(torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 4]]))


def test_stage1_and_lite_load_through_the_same_function(lite_llama_dir, monkeypatch):
    """The issue's requirement: one loader. Both paths call stage 1's load_llm and get the same weights."""
    from tslrec.lite_llm4rec import model as lite_model
    from tslrec.llm import loading as llm_loading
    from tslrec.stage1_reconstruct import model_io
    from tslrec.stage1_reconstruct.config import Stage1Config

    calls = []
    real = llm_loading.load_llm

    def spy(cfg, kind="causal_lm"):
        calls.append((cfg.name_or_path, kind))
        return real(cfg, kind)

    assert lite_model.load_llm is real and model_io.load_llm is real
    monkeypatch.setattr(lite_model, "load_llm", spy)
    monkeypatch.setattr(model_io, "load_llm", spy)
    llm_cfg = LLMConfig(name_or_path=str(lite_llama_dir))
    stage1_llm, tok = model_io.load_llm(llm_cfg)  # stage 1's path (as in its training and model_io)
    stage1 = model_io.build_reconstruction_model(stage1_llm, tok, 8, Stage1Config(k=4), llm_cfg)
    lite = build_lite_model(item_vectors(), LiteConfig(), llm_cfg)
    assert [c[0] for c in calls] == [str(lite_llama_dir)] * 2
    w1 = stage1.encoder.llm.get_base_model().model.layers[0].mlp.up_proj.weight
    w2 = lite.rec.llm.get_base_model().layers[0].mlp.up_proj.weight
    assert torch.equal(w1, w2)
    assert type(stage1.encoder.prompt) is type(lite.rec.prompt)  # the same soft-prompt packing code


@pytest.mark.parametrize("num_layers", [None, 1])
def test_save_and_load_round_trip(lite_llama_dir, tmp_path, num_layers):
    cfg, llm_cfg = LiteConfig(), LLMConfig(name_or_path=str(lite_llama_dir), num_layers=num_layers)
    model = build_lite_model(item_vectors(), cfg, llm_cfg)
    with torch.no_grad():  # make the LoRA B matrices non-zero so the adapter matters
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    model.eval()
    seq = torch.tensor([[1, 2, 3, 0], [5, 6, 7, 8]])
    with torch.no_grad():
        before = model.score(model(seq))
    save_lite_model(model, tmp_path / "m", cfg, llm_cfg)
    loaded, config = load_lite_model(tmp_path / "m")
    with torch.no_grad():
        after = loaded.score(loaded(seq))
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
    assert config["num_items"] == 12 and (tmp_path / "m" / "lora" / "adapter_model.safetensors").is_file()
    assert len(loaded.rec.llm.get_base_model().layers) == (num_layers or 2)  # the shallower model comes back as saved


def test_full_finetune_unfreezes_the_llm(lite_llama_dir):
    model = build_lite_model(
        item_vectors(), LiteConfig(finetune="full", tune_item_vectors=True), LLMConfig(name_or_path=str(lite_llama_dir))
    )
    assert all(p.requires_grad for p in model.rec.llm.parameters()) and model.item_vectors.requires_grad
