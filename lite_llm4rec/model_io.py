"""Save a trained Lite-LLM4Rec model and load it back.

<folder>/config.json        LiteConfig, LLMConfig, item dim, number of items
<folder>/weights.safetensors adapter.{weight,bias}, head.weight, item_vectors [N+1, D]
<folder>/lora/              peft adapter (finetune=lora)
<folder>/llm/               the whole fine-tuned LLM + tokenizer, save_pretrained (finetune=full)
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from tslrec.core.artifacts import atomic_folder, load_tensors, read_json, save_tensors, write_json
from tslrec.core.errors import InputError
from tslrec.llm.loading import LLMConfig, load_llm
from tslrec.llm.lora import load_adapter, save_adapter
from tslrec.llm.weights import copy_weights

from .loading import rec_llm_kind
from .model import LiteConfig, LiteLLM4Rec, RecommendationLLM

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
LORA_DIR = "lora"
LLM_DIR = "llm"


def save_lite_model(model: LiteLLM4Rec, folder: str | Path, cfg: LiteConfig, llm_cfg: LLMConfig) -> Path:
    """Write the model folder; each file atomically, config.json last."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    llm = model.rec.llm
    with atomic_folder(folder / (LORA_DIR if cfg.finetune == "lora" else LLM_DIR)) as tmp:
        if cfg.finetune == "lora":
            save_adapter(llm, tmp)
        else:
            llm.save_pretrained(tmp, safe_serialization=True)
            model.rec.tokenizer.save_pretrained(tmp)
    save_tensors(
        folder / WEIGHTS_FILE,
        {
            "adapter.weight": model.rec.adapter.weight,
            "adapter.bias": model.rec.adapter.bias,
            "head.weight": model.head.weight,
            "item_vectors": model.item_vectors,
        },
    )
    write_json(
        folder / CONFIG_FILE,
        {
            "lite": asdict(cfg),
            "llm": asdict(llm_cfg),
            "attention": model.rec.attention,
            "item_dim": model.item_vectors.shape[1],
            "num_items": model.num_items,
        },
    )
    return folder


def load_lite_model(folder: str | Path, device: str | torch.device = "cpu") -> tuple[LiteLLM4Rec, dict]:
    """(model in eval mode on `device`, config dict) from a folder written by `save_lite_model`."""
    folder = Path(folder)
    config = read_json(folder / CONFIG_FILE, "Lite-LLM4Rec model config")
    try:
        cfg = LiteConfig(**config["lite"])
        llm_cfg = LLMConfig(**config["llm"])
    except (KeyError, TypeError) as e:
        raise InputError(f"{folder / CONFIG_FILE}: missing or bad field ({e}); re-run `tslrec lite`") from None
    weights = load_tensors(folder / WEIGHTS_FILE, "Lite-LLM4Rec weights")
    if cfg.finetune == "full":
        llm_cfg = LLMConfig(**{**asdict(llm_cfg), "name_or_path": str(folder / LLM_DIR)})
    llm, tokenizer = load_llm(llm_cfg, kind=rec_llm_kind(llm_cfg))
    if cfg.finetune == "lora":
        llm = load_adapter(llm, folder / LORA_DIR, rerun="tslrec lite")
    if "item_vectors" not in weights:
        raise InputError(f"{folder / WEIGHTS_FILE}: no item_vectors tensor; re-run `tslrec lite`")
    rec = RecommendationLLM(llm, tokenizer, int(config["item_dim"]), cfg.add_bos, cfg.attention)
    model = LiteLLM4Rec(rec, weights["item_vectors"], tune_item_vectors=False)
    targets = {"adapter.weight": rec.adapter.weight, "adapter.bias": rec.adapter.bias, "head.weight": model.head.weight}
    copy_weights(targets, weights, folder / WEIGHTS_FILE, rerun="tslrec lite")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval(), config
