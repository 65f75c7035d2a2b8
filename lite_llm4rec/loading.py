"""Which transformers class loads a Lite-LLM4Rec model, and LoRA on top of it.

Loading itself is stage 1's `load_llm` (one loader for both methods). Built-in names keep
their own kind ("smollm2" is a causal LM, "minilm" an encoder); every other folder, .gguf
file or hub id loads through `AutoModel` ("encoder" kind), which gives the bare transformer
of any family (LlamaModel, BertModel, T5Model, ...). Lite never needs a vocabulary head.
"""
from __future__ import annotations

from torch import nn

from tslrec.backbones.errors import InputError
from tslrec.stage1_reconstruct.llm_loading import BUILTIN_MODELS, peft_deprecations_filtered


def model_kind(name_or_path: str) -> str:
    """`load_llm` kind for a model used as a feature extractor: the built-in's own kind, else "encoder"."""
    spec = BUILTIN_MODELS.get(name_or_path.lower())
    return spec.kind if spec is not None else "encoder"


def add_lora(llm: nn.Module, r: int, alpha: int, dropout: float, target_modules: list[str] | None) -> nn.Module:
    """Wrap `llm` with trainable LoRA layers (peft). target_modules None = peft's default for the model type."""
    from peft import LoraConfig, get_peft_model

    if target_modules:
        names = {n.rsplit(".", 1)[-1] for n, _ in llm.named_modules()}
        missing = [t for t in target_modules if t not in names]
        if missing:
            raise InputError(f"--lora-target-modules: {', '.join(missing)} not found in this model; pick from its "
                             f"linear layers, e.g. {', '.join(sorted(n for n in names if 'proj' in n or n in ('q', 'v', 'query', 'value'))[:6])}")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none")
    try:
        with peft_deprecations_filtered():
            peft_model = get_peft_model(llm, config)
    except ValueError as e:  # peft knows no default target modules for this model type
        raise InputError(f"LoRA: {str(e).splitlines()[0][:120]}; pass --lora-target-modules (e.g. q_proj,v_proj)") from None
    peft_model.train()
    return peft_model
