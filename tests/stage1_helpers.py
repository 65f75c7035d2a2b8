"""Tiny models and data for the stage 1 tests (no network, a few MB, loads in well under a second)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

WORDS = (
    "given the user's purchase history , predict distribution among purchase preferences . "
    "response : next item 2 4 8 16 32 64"
).split()


def make_tiny_tokenizer():
    """A word-level fast tokenizer with <s>, </s>, <pad>, <unk> (ids 0..3) and the prompt words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for w in WORDS + ["user", "'s", ":", "response:", "Response", "Given", "K", "purchase"]:
        vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def make_tiny_llama(folder: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a random tiny LlamaForCausalLM + tokenizer folder (save_pretrained layout)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def clustered_items(n_items: int = 60, dim: int = 8, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Item table [N+1, D] (row 0 = padding) with k well-separated clusters, and each item's true cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, size=(k, dim))
    truth = rng.integers(0, k, size=n_items)
    emb = centres[truth] + rng.normal(0, 0.3, size=(n_items, dim))
    table = np.concatenate([np.zeros((1, dim)), emb]).astype(np.float32)
    return table, np.concatenate([[-1], truth])


def user_sequences(truth: np.ndarray, n_users: int = 40, k: int = 4, seed: int = 0, length=(6, 14)) -> list[np.ndarray]:
    """Users who each prefer one or two clusters, so targets differ between users."""
    rng = np.random.default_rng(seed)
    by_cluster = [np.flatnonzero(truth == c) for c in range(k)]
    out = []
    for _ in range(n_users):
        liked = rng.choice(k, size=2, replace=False)
        n = int(rng.integers(*length))
        picks = [rng.choice(by_cluster[liked[0] if rng.random() < 0.8 else liked[1]]) for _ in range(n)]
        out.append(np.asarray(picks, dtype=np.int64))
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A random 2-layer, 32-wide Llama with a word-level tokenizer, saved as a model folder."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_llm_cfg(tiny_llama_dir):
    from tslrec.llm.loading import LLMConfig

    return LLMConfig(name_or_path=str(tiny_llama_dir))


def quick_stage1_cfg(**overrides):
    """A small, fast Stage1Config for the toy data of these tests (K = 4, no baseline run, fp32)."""
    from tslrec.stage1_reconstruct.config import Stage1Config

    base = dict(
        k=4,
        epochs=3,
        batch_size=4,
        lr=5e-3,
        head_lr=1e-2,
        precision="float32",
        checkpoint_every=2,
        val_fraction=0.25,
        max_items=10,
        untuned_baseline="none",
        patience=5,
    )
    return Stage1Config(**{**base, **overrides})


PREFIX = "Given the user's purchase history, predict the user's distribution among 4 purchase preferences."


def adapted_reconstruction_model(llm_cfg, pooling: str = "last"):
    """A ReconstructionModel (item dim 5, K = 4) on the tiny LLM with a LoRA adapter whose B matrices are non-zero,
    as after training, so that the adapter changes every output."""
    from tslrec.llm.loading import load_llm
    from tslrec.llm.lora import add_lora
    from tslrec.stage1_reconstruct.model import LLMSequenceEncoder, ReconstructionModel

    llm, tok = load_llm(llm_cfg)
    llm = add_lora(llm, 8, 16, 0.05, ["q_proj", "v_proj"])
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in llm.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)
    return ReconstructionModel(LLMSequenceEncoder(llm, tok, 5, PREFIX, "Response:", pooling=pooling), k=4), tok
