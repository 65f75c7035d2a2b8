"""Soft prompt packing, pooling and the encoder forward (tiny random Llama, no network)."""

from __future__ import annotations

import pytest
import torch
from stage1_helpers import adapted_reconstruction_model, make_tiny_tokenizer, tiny_llama_dir, tiny_llm_cfg  # noqa: F401  (fixtures)

from tslrec.llm.loading import load_llm, transformer_body
from tslrec.llm.packing import pack_tails, packed_attention_mask
from tslrec.llm.pooling import last_token_pool, masked_mean_pool
from tslrec.llm.soft_prompt import SoftPromptBuilder, left_pad_ids
from tslrec.stage1_reconstruct.model import LLMSequenceEncoder, ReconstructionModel

PREFIX = "Given the user's purchase history, predict the user's distribution among 4 purchase preferences."


def test_packed_prompt_layout_is_left_padded_with_items_between_prefix_and_suffix():
    tok = make_tiny_tokenizer()
    builder = SoftPromptBuilder(tok, PREFIX, "Response:")
    H = 6
    embed = torch.nn.Embedding(len(tok), H)
    P, S = builder.prefix_ids.numel(), builder.suffix_ids.numel()
    assert builder.prefix_ids[0].item() == tok.bos_token_id  # BOS added once
    soft = torch.arange(3 * 4 * H, dtype=torch.float32).reshape(3, 4, H) + 1000.0  # [B, T, H], distinct values
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [1, 0, 1, 0]])  # row 2 has holes: kept items keep their order
    inputs, attn, pos = builder(embed, soft, mask)
    L = P + 4 + S
    assert inputs.shape == (3, L, H) and attn.shape == (3, L) and pos.shape == (3, L)
    prefix_vecs, suffix_vecs = embed(builder.prefix_ids), embed(builder.suffix_ids)
    for row, kept in enumerate([[0, 1, 2, 3], [2, 3], [0, 2]]):
        n_pad = 4 - len(kept)
        assert attn[row].tolist() == [0] * n_pad + [1] * (P + len(kept) + S)
        assert torch.all(inputs[row, :n_pad] == 0)  # padding vectors are zero
        assert torch.allclose(inputs[row, n_pad : n_pad + P], prefix_vecs)
        assert torch.equal(inputs[row, n_pad + P : n_pad + P + len(kept)], soft[row, kept])
        assert torch.allclose(inputs[row, -S:], suffix_vecs)  # last position = last suffix token
        assert pos[row, n_pad:].tolist() == list(range(P + len(kept) + S))


def test_left_pad_ids_keeps_the_last_n_items():
    ids, mask = left_pad_ids([[1, 2, 3, 4, 5], [7], []], max_items=3)
    assert ids.tolist() == [[3, 4, 5], [0, 0, 7], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_pooling_last_and_masked_mean():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # [B, L, H]
    left = torch.tensor([[0, 1, 1], [0, 0, 1]])
    right = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.equal(last_token_pool(hidden, left), hidden[:, -1])
    assert torch.equal(last_token_pool(hidden, right), torch.stack([hidden[0, 1], hidden[1, 0]]))
    assert torch.allclose(masked_mean_pool(hidden, left), torch.stack([hidden[0, 1:].mean(0), hidden[1, 2]]))


def test_padded_batch_gives_the_same_user_vector_as_each_user_alone(tiny_llm_cfg):
    """Left padding, attention mask and position ids must make padding invisible."""
    llm, tok = load_llm(tiny_llm_cfg)
    torch.manual_seed(0)
    for pooling in ("last", "mean"):
        enc = LLMSequenceEncoder(
            llm, tok, item_dim=5, prefix_text=PREFIX, suffix_text="Response:", pooling=pooling
        ).eval()
        x = torch.randn(3, 6, 5)
        mask = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
        with torch.no_grad():
            batched = enc(x, mask)
            alone = [
                enc(x[i : i + 1, mask[i].bool()], torch.ones(1, int(mask[i].sum()), dtype=torch.long)) for i in range(3)
            ]
        assert torch.allclose(batched, torch.cat(alone), atol=1e-5), pooling
        P, S = enc.prompt.prefix_ids.numel(), enc.prompt.suffix_ids.numel()
        assert enc.llm_passes == 6 and enc.llm_tokens == 4 * P + 2 * (10 + 3 * S)  # the prefix once per call
        # the items matter: changing one item changes the user vector
        x2 = x.clone()
        x2[0, 2] += 1.0
        with torch.no_grad():
            assert not torch.allclose(enc(x2[:1], mask[:1]), batched[:1], atol=1e-4)


def test_encode_items_equals_one_item_users(tiny_llm_cfg):
    llm, tok = load_llm(tiny_llm_cfg)
    torch.manual_seed(0)
    model = ReconstructionModel(LLMSequenceEncoder(llm, tok, 5, PREFIX, "Response:"), k=4)
    items = torch.randn(7, 5)
    model.train()
    emb, probs = model.encode_items(items, batch_size=3, progress=False)
    assert model.training and model.encoder.llm.training  # encode_items restored the mode it found
    assert emb.shape == (7, 32) and probs.shape == (7, 4)
    assert torch.allclose(probs.sum(1), torch.ones(7), atol=1e-5)
    model.eval()
    with torch.no_grad():
        h, p = model(items[4:5].unsqueeze(1), torch.ones(1, 1, dtype=torch.long))
    assert torch.allclose(emb[4], h[0], atol=1e-5) and torch.allclose(probs[4], p[0], atol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_cached_prefix_gives_the_same_items_as_the_full_prompt_and_off_runs_every_whole_prompt(tiny_llm_cfg, pooling):
    model, tok = adapted_reconstruction_model(tiny_llm_cfg, pooling)
    items = torch.randn(7, 5)
    prefix_len = model.encoder.prompt.prefix_ids.numel()
    suffix_len = model.encoder.prompt.suffix_ids.numel()
    model.encoder.llm_tokens = 0
    full_emb, full_probs = model.encode_items(items, batch_size=3, progress=False, cache_prefix=False)
    assert model.encoder.llm_tokens == 7 * (prefix_len + 1 + suffix_len)  # without the cache: every whole prompt
    model.encoder.llm_tokens = 0
    emb, probs = model.encode_items(items, batch_size=3, progress=False)
    torch.testing.assert_close(emb, full_emb, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(probs, full_probs, atol=1e-6, rtol=1e-4)
    assert prefix_len > 1 and model.encoder.llm_tokens == prefix_len + 7 * (1 + suffix_len)  # the prefix ran once
    assert not torch.allclose(emb[0], emb[1])  # and the items still differ


@pytest.mark.parametrize("pack_tokens", [0, 8])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_shared_prefix_forward_is_the_full_prompts_function_with_gradients(tiny_llm_cfg, pooling, pack_tokens):
    """Training and validation run the prefix once per batch and let every row attend to its keys and values: the
    user vectors and every gradient (LoRA through the prefix's keys and values too, the projection) equal those of
    each row's whole prompt, for left- and right-padded rows and a row with no item; with the prompts packed
    several to a row too (pack_tokens 8), where a prompt that saw another one's tokens would differ."""
    model, _ = adapted_reconstruction_model(tiny_llm_cfg, pooling)
    enc = model.encoder.eval()  # no LoRA dropout, gradients on
    enc.pack_tokens = pack_tokens
    torch.manual_seed(1)
    x = torch.randn(4, 6, 5)
    mask = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1], [1, 1, 0, 0, 0, 0], [0] * 6])
    weights = torch.randn(4, enc.hidden)
    outs, grads, tokens = [], [], []
    for forward in (enc.forward, enc.full_forward):
        enc.zero_grad()
        enc.llm_tokens = 0
        h = forward(x, mask)  # [4, H]
        (h * weights).sum().backward()
        outs.append(h.detach())
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None})
        tokens.append(enc.llm_tokens)
    P, S = enc.prompt.prefix_ids.numel(), enc.prompt.suffix_ids.numel()
    assert tokens == [P + 11 + 4 * S, 11 + 4 * (P + S)]  # the shared forward ran the prefix once
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    assert grads[0].keys() == grads[1].keys()
    assert any("lora_A" in n for n in grads[0]) and "item_proj.weight" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_packing_puts_several_prompts_in_a_row_each_once_and_in_order():
    """Tails of 8, 5, 4, 2 and 3 tokens in rows of 10: three rows, not five, none over 10, every token of every
    prompt once and in its order; a tail longer than the capacity gets a row of its own."""
    lengths = torch.tensor([8, 5, 4, 2, 3])
    packed = pack_tails(lengths, 10)
    assert packed.rows == 3 and packed.source.shape[1] <= 10
    starts = torch.cumsum(lengths, 0) - lengths
    for b, n in enumerate(lengths.tolist()):
        where = packed.segment == b
        assert int(where.sum()) == n and int(where.any(dim=1).sum()) == 1  # whole, in one row
        assert packed.source[where].tolist() == list(range(int(starts[b]), int(starts[b]) + n))
        assert packed.position[where].tolist() == list(range(n))
    assert sorted(packed.source[packed.source >= 0].tolist()) == list(range(int(lengths.sum())))
    assert pack_tails(torch.tensor([12, 3]), 10).source.shape[1] == 12


def test_packed_mask_lets_a_token_see_the_prefix_and_its_own_earlier_tokens_only():
    packed = pack_tails(torch.tensor([2, 3]), 8)  # one row: prompt 1 (3 tokens), then prompt 0 (2), no padding
    mask = packed_attention_mask(packed, prefix_len=2)[0, 0].int()  # [5, 2 + 5]
    assert mask.tolist() == [
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0, 1, 0],
        [1, 1, 0, 0, 0, 1, 1],
    ]


def test_packing_sends_fewer_rows_through_the_llm(tiny_llm_cfg):
    """With pack_tokens the 4 prompts after the shared prefix go through the LLM in fewer rows than prompts."""
    model, _ = adapted_reconstruction_model(tiny_llm_cfg, "last")
    enc = model.encoder.eval()
    rows: list[int] = []
    hook = transformer_body(enc.llm).register_forward_pre_hook(
        lambda _module, _args, kwargs: rows.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True
    )
    x, mask = torch.randn(4, 6, 5), torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1], [0] * 5 + [1]])
    with torch.no_grad():
        for pack in (0, 32):
            enc.pack_tokens = pack
            enc(x, mask)
    hook.remove()
    assert rows == [1, 4, 1, 1]  # (prefix, rows) padded, then (prefix, rows) packed


def test_packing_asked_for_but_impossible_says_why(tiny_llm_cfg, capsys):
    """With activation checkpointing no key/value cache is kept, so stage 1 runs every prompt whole and padded:
    pack_tokens (on by default) then changes nothing, and training says so instead of silently losing its speed."""
    from dataclasses import replace

    from tslrec.llm.loading import load_llm
    from tslrec.stage1_reconstruct.config import Stage1Config
    from tslrec.stage1_reconstruct.model_io import build_reconstruction_model

    for checkpointing in (False, True):
        llm_cfg = replace(tiny_llm_cfg, gradient_checkpointing=checkpointing)
        llm, tok = load_llm(llm_cfg)
        model = build_reconstruction_model(llm, tok, 5, Stage1Config(k=4), llm_cfg)
        err = capsys.readouterr().err
        assert ("pack_tokens=512 does not apply here: activation checkpointing" in err) is checkpointing, err
        assert (model.encoder.why_not_packed() is None) is not checkpointing
