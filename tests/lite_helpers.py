"""Tiny models and datasets for the Lite-LLM4Rec tests (random weights, a few MB, no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stage1_helpers import make_tiny_llama  # noqa: F401  (re-exported for the Lite tests)

GENRES = ["action", "comedy", "drama", "horror", "romance", "western"]
TITLE_WORDS = ["red", "blue", "green", "night", "day", "river", "city", "star", "stone", "wind", "fire", "moon"]


def make_text_tokenizer():
    """Word-level fast tokenizer knowing the toy titles' words and digits; BERT-style [CLS]/[SEP], plus <s>/</s>."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", "[CLS]", "[SEP]"])}
    for w in GENRES + TITLE_WORDS + list("0123456789") + ["genres", ":", ";", "(", ")", "the"]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 4), ("[SEP]", 5)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


def make_tiny_bert(folder: Path, hidden: int = 24, seed: int = 0) -> Path:
    """A random 2-layer BERT encoder + tokenizer folder (stands in for all-MiniLM-L6-v2)."""
    from transformers import BertConfig, BertModel

    tok = make_text_tokenizer()
    torch.manual_seed(seed)
    model = BertModel(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=128,
            pad_token_id=0,
        )
    )
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def make_tiny_t5(folder: Path, d_model: int = 32, seed: int = 0) -> Path:
    """A random 2-layer T5 (encoder-decoder) + tokenizer folder.

    No T5 weights ship on PyPI, so the path is tested so.
    """
    from transformers import T5Config, T5Model

    tok = make_text_tokenizer()
    torch.manual_seed(seed)
    model = T5Model(
        T5Config(
            vocab_size=len(tok),
            d_model=d_model,
            d_ff=2 * d_model,
            d_kv=8,
            num_layers=2,
            num_heads=4,
            pad_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=0,
        )
    )
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def make_tiny_encoder(folder: Path, model_type: str, hidden: int = 16, seed: int = 0) -> Path:
    """A random 2-layer encoder of another family ("roberta", "distilbert" or "mt5") + the title tokenizer."""
    from transformers import (
        DistilBertConfig,
        DistilBertModel,
        MT5Config,
        MT5Model,
        RobertaConfig,
        RobertaModel,
    )

    tok = make_text_tokenizer()
    common = {"vocab_size": len(tok), "pad_token_id": 0}
    configs = {
        "roberta": lambda: RobertaModel(
            RobertaConfig(
                hidden_size=hidden,
                intermediate_size=2 * hidden,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=130,
                **common,
            )
        ),
        "distilbert": lambda: DistilBertModel(
            DistilBertConfig(dim=hidden, hidden_dim=2 * hidden, n_layers=2, n_heads=2, **common)
        ),
        "mt5": lambda: MT5Model(
            MT5Config(
                d_model=hidden, d_ff=2 * hidden, num_layers=2, num_heads=2, d_kv=8, decoder_start_token_id=0, **common
            )
        ),
    }
    torch.manual_seed(seed)
    configs[model_type]().save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def make_tiny_text_llama(folder: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A random 2-layer LlamaForCausalLM with the title tokenizer (digits are tokens): the generative baseline's LLM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_text_tokenizer()
    tok.post_processor = None
    torch.manual_seed(seed)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
    )
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def item_title(i: int) -> str:
    return (
        f"the {TITLE_WORDS[i % len(TITLE_WORDS)]} {TITLE_WORDS[(i // 3) % len(TITLE_WORDS)]} {i} "
        f"(19{i % 100:02d}); genres: {GENRES[i % len(GENRES)]}"
    )


def write_text_dataset(
    folder: Path, n_items: int = 30, n_users: int = 40, with_text: bool = True, seed: int = 0, name: str = "toy"
) -> Path:
    """RecBole atomic files: users walk items i -> i+1 (mod n) from random starts; `.item` titles if with_text."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for u in range(n_users):
        start, length = int(rng.integers(0, n_items)), int(rng.integers(6, 14))
        rows += [(f"u{u}", f"i{(start + t) % n_items}", 1000 * u + t) for t in range(length)]
    inter = folder / f"{name}.inter"
    inter.write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows)
    )
    if with_text:
        (folder / f"{name}.item").write_text(
            "item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\t{item_title(i)}\n" for i in range(n_items))
        )
    return inter


def cyclic_train_sequences(n_items: int = 12, n_users: int = 24, seed: int = 0) -> list[np.ndarray]:
    """Leave-one-out-ready sequences (ids 1..n) where the next item is always the current one + 1."""
    rng = np.random.default_rng(seed)
    return [
        np.array([(s + t) % n_items + 1 for t in range(int(rng.integers(6, 12)))], dtype=np.int64)
        for s in rng.integers(0, n_items, size=n_users)
    ]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, and far faster than on two when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    return make_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def lite_llama_dir(tmp_path_factory) -> Path:
    """A random 2-layer, 32-wide Llama (Recommendation LLM stand-in for SmolLM2)."""
    return make_tiny_llama(tmp_path_factory.mktemp("lite-llama"))
