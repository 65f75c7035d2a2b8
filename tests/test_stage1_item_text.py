"""`--item-text` (beyond the paper): each item in the prompt is its title tokens, then its soft token, in stage 1
and stage 2 alike (tiny random Llama, word-level tokenizer, no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stage1_helpers import (  # noqa: F401
    adapted_reconstruction_model,
    clustered_items,
    make_tiny_tokenizer,
    tiny_llama_dir,
    tiny_llm_cfg,
    user_sequences,
)

from tslrec.core.artifacts import read_json, save_tensors, write_json
from tslrec.core.errors import InputError
from tslrec.data import DataConfig, load_dataset
from tslrec.formats.item_table import load_item_embeddings
from tslrec.llm.loading import load_llm
from tslrec.llm.soft_prompt import tokenize_item_texts
from tslrec.pipelines.cli import main
from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.model import LLMSequenceEncoder
from tslrec.stage1_reconstruct.model_io import load_reconstruction_model

PREFIX = "Given the user's purchase history, predict the user's distribution among 4 purchase preferences."
# item 0 = padding; item 3 has no title; item 4's title is longer than the cap of 3 used below
TITLES = ["", "next item", "purchase history", "", "given the user's distribution among purchase preferences", "64"]
WORDS = ["next", "item", "purchase", "history", "distribution", "preferences", "2", "4", "8", "16", "32", "64"]


def token_ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_title_tokens_are_cut_at_the_cap():
    tok = make_tiny_tokenizer()
    full = tokenize_item_texts(tok, TITLES, cap=16)
    cut = tokenize_item_texts(tok, TITLES, cap=3)
    assert full.lengths.tolist() == [0, 2, 2, 0, 9, 1] and full.untruncated.tolist() == [0, 2, 2, 0, 9, 1]
    assert cut.lengths.tolist() == [0, 2, 2, 0, 3, 1] and cut.untruncated.tolist() == [0, 2, 2, 0, 9, 1]
    assert cut.ids.shape == (6, 3) and cut.ids[4].tolist() == token_ids(tok, TITLES[4])[:3]
    assert cut.ids[1, :2].tolist() == token_ids(tok, "next item") and cut.ids[0].tolist() == [0, 0, 0]
    with pytest.raises(InputError, match="Stage1Config.item_text_tokens"):
        Stage1Config(item_text=True, item_text_tokens=0)


def test_prompt_shows_each_items_capped_title_right_before_its_soft_token(tiny_llm_cfg):
    llm, tok = load_llm(tiny_llm_cfg)
    torch.manual_seed(0)
    enc = LLMSequenceEncoder(llm, tok, item_dim=5, prefix_text=PREFIX, suffix_text="Response:")
    enc.use_item_text(tokenize_item_texts(tok, TITLES, cap=3))
    table = torch.randn(6, 5)  # [N+1, D]
    ids = torch.tensor([[1, 4, 3, 5], [0, 0, 2, 1]])  # row 1 is left-padded
    mask = (ids > 0).long()
    inputs, attn, pos = enc.build_prompt(table[ids], mask, ids)  # [B, L, H]
    embed = enc.llm.get_input_embeddings()
    soft = enc.item_proj(table)  # [N+1, H]
    prefix, suffix = enc.prompt.prefix_ids.tolist(), enc.prompt.suffix_ids.tolist()
    for row in range(2):
        expected = [embed(torch.tensor(t)) for t in prefix]
        for item in ids[row][mask[row].bool()].tolist():
            expected += [embed(torch.tensor(t)) for t in token_ids(tok, TITLES[item])[:3]]  # the capped title
            expected.append(soft[item])  # then the item's own soft token
        expected += [embed(torch.tensor(t)) for t in suffix]
        n = len(expected)
        n_pad = inputs.shape[1] - n
        assert attn[row].tolist() == [0] * n_pad + [1] * n and pos[row, n_pad:].tolist() == list(range(n))
        torch.testing.assert_close(inputs[row, n_pad:], torch.stack(expected).detach())
        torch.testing.assert_close(inputs[row, -1], embed(torch.tensor(suffix[-1])).detach())  # last = "Response:"
    assert inputs.shape[1] == len(prefix) + (2 + 1) + (3 + 1) + (0 + 1) + (1 + 1) + len(suffix)  # no all-pad column


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_items_with_titles_cached_batched_and_alone_agree(tiny_llm_cfg, pooling):
    """Stage 2's prefix cache with titles (items batched by title length) equals the full prompt, item by item."""
    model, tok = adapted_reconstruction_model(tiny_llm_cfg, pooling)
    model.encoder.use_item_text(tokenize_item_texts(tok, TITLES, cap=3))
    table = torch.randn(6, 5)
    ids = torch.arange(1, 6)  # [N]
    full = model.encode_items(table[1:], batch_size=2, progress=False, cache_prefix=False, item_ids=ids)
    cached = model.encode_items(table[1:], batch_size=2, progress=False, item_ids=ids)
    torch.testing.assert_close(cached[0], full[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cached[1], full[1], atol=1e-6, rtol=1e-4)
    model.eval()
    with torch.no_grad():
        for i in (1, 3, 4):
            h, _ = model(table[i].view(1, 1, 5), torch.ones(1, 1, dtype=torch.long), torch.tensor([[i]]))
            torch.testing.assert_close(cached[0][i - 1], h[0], atol=1e-5, rtol=1e-4)
        model.encoder.item_text_len[1] = 0  # item 1 without its title: another vector
        h, _ = model(table[1].view(1, 1, 5), torch.ones(1, 1, dtype=torch.long), torch.tensor([[1]]))
    assert not torch.allclose(cached[0][0], h[0], atol=1e-4)


def write_titled_run(tmp_path, n_items: int = 30, n_users: int = 24):
    """A RecBole .inter + .item dataset with titles, and the folder `tslrec train --export-item-embeddings` writes."""
    table, truth = clustered_items(n_items=n_items, dim=8, k=4, seed=5)
    seqs = user_sequences(truth, n_users=n_users, k=4, seed=5, length=(5, 10))
    data = tmp_path / "data"
    data.mkdir()
    rows = [f"{u}\t{i + 1}\t5\t{t}" for u, s in enumerate(seqs) for t, i in enumerate(s)]
    (data / "toy.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "\n".join(rows))
    titles = {i + 1: " ".join(WORDS[(i + r) % len(WORDS)] for r in range(1 + i % 5)) for i in range(n_items)}
    items = [f"{i}\t{t}\t1995\tdrama" for i, t in titles.items()]
    header = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    (data / "toy.item").write_text(header + "\n".join(items))
    inter = data / "toy.inter"
    ds = load_dataset(str(inter), DataConfig())
    emb = np.zeros((ds.num_items + 1, 8), dtype=np.float32)
    for internal, original in enumerate(ds.item_ids[1:], start=1):
        emb[internal] = table[int(original) - 1]
    train_dir = tmp_path / "train"
    save_tensors(train_dir / "item_embeddings.safetensors", {"embeddings": torch.from_numpy(emb)})
    write_json(
        train_dir / "metrics.json",
        {
            "dataset": ds.name,
            "model": "sasrec",
            "dataset_source": str(inter),
            "dataset_info": {"name": ds.name, "hash": ds.hash, "items": ds.num_items},
            "config": {"data": {"kcore": 0, "min_rating": None, "max_len": 50}},
        },
    )
    return inter, ds, train_dir, emb


def stage1_argv(train_dir, data, out, llm, *extra: str) -> list[str]:
    paths = ["--train-dir", str(train_dir), "--dataset", str(data), "--out", str(out), "--llm", str(llm)]
    quick = "--k 4 --epochs 1 --max-steps 2 --batch-size 8 --max-items 10 --precision float32".split()
    quick += ["--untuned-baseline", "none"]
    return ["stage1", *paths, *quick, "--device", "cpu", "--no-progress", *extra]


def test_item_text_in_stage1_and_stage2_records_its_cost_and_feeds_titles(tmp_path, tiny_llama_dir, capsys):
    inter, ds, train_dir, emb = write_titled_run(tmp_path)
    titles = ds.item_titles()
    assert titles[1] == ds.item_text[1].split(";")[0] and titles[1].endswith("(1995)")  # title + year, no genres
    out = tmp_path / "s1"
    assert main(stage1_argv(train_dir, inter, out, tiny_llama_dir, "--item-text", "--item-text-tokens", "4")) == 0
    summary = capsys.readouterr().out
    config, metrics = read_json(out / "config.json"), read_json(out / "metrics.json")
    assert config["stage1"]["item_text"] and config["stage1"]["item_text_tokens"] == 4 and config["item_text_sha256"]
    cost = metrics["prompt_tokens"]
    tok = load_llm(_llm_cfg(out))[1]
    kept = tokenize_item_texts(tok, titles, cap=4).lengths.numpy()
    fixed = len(token_ids(tok, config["prompt"]["prefix"])) + 1 + len(token_ids(tok, "Response:"))  # + BOS
    shown = [s[-10:] for s in ds.train_sequences()]
    assert cost["users"] == ds.num_users and cost["title_tokens_cap"] == 4
    assert cost["per_user_mean_without_text"] == pytest.approx(np.mean([fixed + len(s) for s in shown]))
    assert cost["per_user_max"] == max(fixed + len(s) + int(kept[s].sum()) for s in shown)
    assert cost["title_tokens_per_item_mean"] == pytest.approx(kept[1:].mean()) and cost["titles_cut"] > 0
    assert "item text:" in summary and "cut at 4" in summary

    export = tmp_path / "export"
    assert (
        main(
            [
                "stage2",
                "--stage1-dir",
                str(out),
                "--out",
                str(export),
                "--batch-size",
                "4",
                "--precision",
                "float32",  # compared with a float32 forward below (`auto` is bf16 on a CPU with native bf16)
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    found = load_item_embeddings(export, num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids)
    assert found.manifest["source"]["item_text"]["title_tokens_cap"] == 4
    model, _ = load_reconstruction_model(out, "cpu", item_texts=titles)
    model.eval()
    item = int(np.argmax(kept))  # an item with a long title
    one = torch.ones(1, 1, dtype=torch.long)
    with torch.no_grad():
        h, _ = model(torch.from_numpy(emb[item]).view(1, 1, 8), one, torch.tensor([[item]]))
        torch.testing.assert_close(found.embeddings[item], h[0], atol=1e-5, rtol=1e-4)  # stage 2 fed the title
        model.encoder.item_text_len[item] = 0
        untitled, _ = model(torch.from_numpy(emb[item]).view(1, 1, 8), one, torch.tensor([[item]]))
    assert not torch.allclose(found.embeddings[item], untitled[0], atol=1e-4)
    with pytest.raises(InputError, match="item_text_sha256"):
        load_reconstruction_model(out, "cpu", item_texts=[t.upper() for t in titles])


def _llm_cfg(stage1_dir):
    from tslrec.llm.loading import LLMConfig

    return LLMConfig(**read_json(stage1_dir / "config.json")["llm"])


def test_item_text_on_a_dataset_without_text_exits_2_in_one_line(tmp_path, tiny_llama_dir, capsys):
    table, truth = clustered_items(n_items=20, dim=8, k=4, seed=1)
    seqs = user_sequences(truth, n_users=12, k=4, seed=1)
    data = tmp_path / "plain.txt"  # S3-Rec format: ids only, no item text
    data.write_text("".join(f"u{u} " + " ".join(f"i{i}" for i in s) + "\n" for u, s in enumerate(seqs)))
    ds = load_dataset(str(data), DataConfig())
    train_dir = tmp_path / "train"
    save_tensors(train_dir / "item_embeddings.safetensors", {"embeddings": torch.zeros(ds.num_items + 1, 8)})
    info = {"name": ds.name, "hash": ds.hash, "items": ds.num_items}
    config = {"data": {"kcore": 0, "min_rating": None, "max_len": 50}}
    write_json(train_dir / "metrics.json", {"dataset": ds.name, "dataset_info": info, "config": config})
    code = main(stage1_argv(train_dir, data, tmp_path / "s1", tiny_llama_dir, "--item-text"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--item-text" in err and "'plain'" in err and "no item text" in err
    assert not (tmp_path / "s1").exists()  # refused before any work


@pytest.mark.parametrize("pack_tokens", [0, 8])
def test_shared_prefix_forward_with_titles_is_the_full_prompts_function(tiny_llm_cfg, pack_tokens):
    """Training's shared prefix with item titles (rows of other title lengths, one left-padded) equals each row's
    whole prompt, with the prompts in padded rows or packed."""
    model, tok = adapted_reconstruction_model(tiny_llm_cfg, "last")
    enc = model.encoder.eval()
    enc.pack_tokens = pack_tokens
    enc.use_item_text(tokenize_item_texts(tok, TITLES, cap=3))
    table = torch.randn(6, 5)
    ids = torch.tensor([[1, 4, 3, 5], [0, 0, 2, 1]])
    mask = (ids > 0).long()
    with torch.no_grad():
        shared, full = enc(table[ids], mask, ids), enc.full_forward(table[ids], mask, ids)
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-4)
