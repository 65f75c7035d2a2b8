"""Build a ReconstructionModel (LLM + LoRA + projection + head), save it, load it back.

Files in a stage 1 output folder that this module reads and writes (training.py adds
groups.safetensors, metrics.json and log.json; see docs/stage1.md):
    config.json          Stage1Config, LLMConfig, item_dim, K, prompt texts
    adapter/             LoRA adapter (peft save_pretrained; absent for the no-LoRA baseline)
    heads.safetensors    item_proj.{weight,bias}, head.{weight,bias}
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from tslrec.core.artifacts import atomic_folder, load_tensors, read_json, resolve_device, save_tensors
from tslrec.core.errors import InputError
from tslrec.llm.loading import LLMConfig, load_llm
from tslrec.llm.lora import add_lora, load_adapter, save_adapter
from tslrec.llm.soft_prompt import ItemTokens, tokenize_item_texts
from tslrec.llm.weights import copy_weights

from .config import Stage1Config
from .data import item_texts_sha256
from .model import LLMSequenceEncoder, ReconstructionModel

HEADS_FILE = "heads.safetensors"
ADAPTER_DIR = "adapter"
CONFIG_FILE = "config.json"


def with_lora(llm: nn.Module, cfg: Stage1Config, llm_cfg: LLMConfig) -> nn.Module:
    """`llm` with fresh trainable LoRA layers as `cfg` asks (unchanged when cfg.lora is off)."""
    if not cfg.lora:
        return llm
    quantized = llm_cfg.quantization is not None
    lora = (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    return add_lora(llm, *lora, quantized=quantized, gradient_checkpointing=llm_cfg.gradient_checkpointing)


def build_reconstruction_model(
    llm: nn.Module, tokenizer, item_dim: int, cfg: Stage1Config, llm_cfg: LLMConfig, titles: ItemTokens | None = None
) -> ReconstructionModel:
    """Fresh model for training: LoRA (if cfg.lora) + new projection + new head, seeded by the caller.
    titles: every item's title tokens, shown in the prompt when cfg.item_text."""
    llm = with_lora(llm, cfg, llm_cfg)
    encoder = LLMSequenceEncoder.from_config(llm, tokenizer, item_dim, cfg)
    if cfg.pack_tokens and (why := encoder.why_not_packed()):
        print(f"note: Stage1Config.pack_tokens={cfg.pack_tokens} does not apply here: {why}", file=sys.stderr)
    if cfg.item_text:
        if titles is None:
            raise ValueError("Stage1Config.item_text: build_reconstruction_model needs the items' title tokens")
        encoder.use_item_text(titles)
    return ReconstructionModel(encoder, cfg.k, cfg.head_norm)


def save_reconstruction_model(model: ReconstructionModel, out_dir: str | Path) -> None:
    """Write adapter/ (if LoRA) and heads.safetensors, each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    llm = model.encoder.llm
    if hasattr(llm, "peft_config"):
        with atomic_folder(out_dir / ADAPTER_DIR) as tmp:
            save_adapter(llm, tmp)
    save_tensors(out_dir / HEADS_FILE, _head_tensors(model))


def _head_tensors(model: ReconstructionModel) -> dict[str, torch.Tensor]:
    """The weights trained beside the LLM, by their name in heads.safetensors."""
    encoder = model.encoder
    names = ("item_proj.weight", "item_proj.bias", "head.weight", "head.bias")
    tensors = (encoder.item_proj.weight, encoder.item_proj.bias, model.head.weight, model.head.bias)
    return dict(zip(names, tensors))


def load_reconstruction_model(
    stage1_dir: str | Path,
    device: str | torch.device = "auto",
    llm_override: LLMConfig | None = None,
    item_texts: list[str] | None = None,
) -> tuple[ReconstructionModel, dict]:
    """Load a trained stage 1 model from its output folder -> (model on `device`, config dict).

    device: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:N" or a torch.device.

    llm_override: load the LLM differently (e.g. another dtype) than it was trained with;
    the name must still point to the same weights.
    item_texts: each item's text ([0] = padding), needed when stage 1 showed item text (its config's
    stage1.item_text); it must be the text stage 1 was trained on (config.json's item_text_sha256).
    """
    stage1_dir = Path(stage1_dir)
    config = read_json(stage1_dir / CONFIG_FILE, "stage 1 config")
    try:
        cfg = Stage1Config.from_dict(config["stage1"])
        llm_cfg = llm_override or LLMConfig(**config["llm"])
        item_dim = int(config["item_dim"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{stage1_dir / CONFIG_FILE}: missing or bad field ({e}); re-run `tslrec stage1`") from None
    llm, tokenizer = load_llm(llm_cfg, kind="causal_lm")
    if cfg.lora:
        llm = load_adapter(llm, stage1_dir / ADAPTER_DIR, rerun="tslrec stage1")
    encoder = LLMSequenceEncoder.from_config(llm, tokenizer, item_dim, cfg)
    if cfg.item_text:
        _check_item_texts(stage1_dir / CONFIG_FILE, config, item_texts)
        encoder.use_item_text(tokenize_item_texts(tokenizer, item_texts, cfg.item_text_tokens))
    model = ReconstructionModel(encoder, cfg.k, cfg.head_norm)
    heads = load_tensors(stage1_dir / HEADS_FILE, "stage 1 projection/head weights")
    copy_weights(_head_tensors(model), heads, stage1_dir / HEADS_FILE, rerun="tslrec stage1")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(resolve_device(device) if isinstance(device, str) else device), config


def _check_item_texts(source: Path, config: dict, item_texts: list[str] | None) -> None:
    """The item texts must be those stage 1 was trained on (InputError naming the config file otherwise)."""
    if item_texts is None:
        raise InputError(
            f"{source}: field stage1.item_text is true, so the prompt shows item titles, but no item text was "
            "given; use the dataset stage 1 was trained on (it has item text)"
        )
    recorded = config.get("item_text_sha256")
    if recorded != item_texts_sha256(item_texts):
        raise InputError(
            f"{source}: field item_text_sha256 ({str(recorded)[:12]}) does not match this dataset's item texts "
            f"({item_texts_sha256(item_texts)[:12]}); use the dataset stage 1 was trained on"
        )
