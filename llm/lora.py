"""LoRA on a loaded LLM (peft), and a saved adapter read back; one place for both stage 1 and Lite-LLM4Rec."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from tslrec.core.errors import InputError

from .loading import peft_deprecations_filtered

# Default LoRA targets for model types peft 0.21 has no default for (text encoders Lite-LLM4Rec accepts).
EXTRA_DEFAULT_TARGETS = {"distilbert": ["q_lin", "v_lin"], "albert": ["query", "value"], "umt5": ["q", "v"]}


def add_lora(
    llm: nn.Module,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | None,
    quantized: bool = False,
    gradient_checkpointing: bool = False,
) -> nn.Module:
    """Wrap `llm` with trainable LoRA layers. target_modules None = peft's default for the model type
    (or EXTRA_DEFAULT_TARGETS); named modules the model lacks -> InputError. quantized: prepare a
    bitsandbytes model for training first."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if not target_modules:
        target_modules = EXTRA_DEFAULT_TARGETS.get(getattr(getattr(llm, "config", None), "model_type", ""))
    if target_modules:
        names = {n.rsplit(".", 1)[-1] for n, _ in llm.named_modules()}
        missing = [t for t in target_modules if t not in names]
        if missing:
            linear = sorted(n for n in names if "proj" in n or n in ("q", "v", "query", "value"))[:6]
            raise InputError(
                f"lora_target_modules: {', '.join(missing)} not found in this model; pick from its "
                f"linear layers, e.g. {', '.join(linear)}"
            )
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules) if target_modules else None,
        bias="none",
    )
    try:
        with peft_deprecations_filtered():
            if quantized:
                llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=gradient_checkpointing)
            peft_model = get_peft_model(llm, config)
    except ValueError as e:  # peft knows no default target modules for this model type
        raise InputError(
            f"LoRA: {str(e).splitlines()[0][:120]}; set lora_target_modules (e.g. q_proj,v_proj)"
        ) from None
    peft_model.train()
    return peft_model


def load_adapter(llm: nn.Module, folder: str | Path, rerun: str) -> nn.Module:
    """`llm` with the frozen LoRA adapter saved in `folder`; a missing or unreadable one -> InputError telling
    the user to re-run `rerun` (e.g. "tslrec stage1")."""
    from peft import PeftModel

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise InputError(f"{folder}: LoRA adapter missing; re-run `{rerun}`")
    try:
        with peft_deprecations_filtered():
            return PeftModel.from_pretrained(llm, str(folder), is_trainable=False)
    except RuntimeError as e:
        if "size mismatch" not in str(e):
            raise InputError(
                f"{folder}: LoRA adapter is unreadable ({str(e).splitlines()[0][:100]}); re-run `{rerun}`"
            ) from None
        hidden = getattr(getattr(llm, "config", None), "hidden_size", "?")
        raise InputError(
            f"{folder}: LoRA adapter does not fit this LLM (hidden size {hidden}; the adapter's weights have other "
            f"shapes): load the LLM it was trained with, or re-run `{rerun}` with this one"
        ) from None
    except (OSError, ValueError, KeyError) as e:
        raise InputError(
            f"{folder}: LoRA adapter is unreadable ({str(e).splitlines()[0][:100]}); re-run `{rerun}`"
        ) from None


def save_adapter(llm: nn.Module, folder: Path) -> None:
    """The LoRA adapter (peft save_pretrained) into `folder`, with `target_modules` sorted: peft writes it from a set,
    in an order that changes between processes, so the same adapter would otherwise be another file."""
    llm.save_pretrained(folder, safe_serialization=True)
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        path.write_text(json.dumps(config, indent=2) + "\n")
