"""Which transformers class loads a Lite-LLM4Rec model.

Loading itself is stage 1's `load_llm` (one loader for both methods). Built-in names keep
their own kind ("smollm2" is a causal LM, "minilm" an encoder).

Item LLM (`model_kind`): every other folder, .gguf file or hub id loads through `AutoModel`
("encoder" kind), which gives the bare transformer of any family (LlamaModel, BertModel,
T5Model, ...).

Recommendation LLM (`rec_llm_kind`): the model's config decides. A text encoder
(`ENCODER_TYPES`: T5's encoder stack alone, or a BERT-style encoder) loads through
`AutoModelForTextEncoding`; a causal LM through `AutoModel` (its transformer body, no
vocabulary head); anything else (a vision model, a folder without config.json) is a
one-line InputError naming `LLMConfig.name_or_path` (the CLI shows `--llm`). Lite never
needs a vocabulary head.
"""

from __future__ import annotations

from pathlib import Path

from tslrec.core.errors import InputError
from tslrec.llm.loading import BUILTIN_MODELS, LLMConfig, read_model_config, resolve_model_source

# Bidirectional text encoders the Recommendation LLM may be (model_type -> AutoModelForTextEncoding class):
# T5 family -> its encoder stack only (T5EncoderModel, no decoder weights); BERT family -> the bare encoder.
ENCODER_TYPES = ("t5", "mt5", "umt5", "bert", "roberta", "xlm-roberta", "distilbert", "electra", "albert")


def model_kind(name_or_path: str) -> str:
    """`load_llm` kind for a model used as a feature extractor: the built-in's own kind, else "encoder"."""
    spec = BUILTIN_MODELS.get(name_or_path.lower())
    return spec.kind if spec is not None else "encoder"


def rec_llm_kind(cfg: LLMConfig) -> str:
    """`load_llm` kind of the Recommendation LLM named by `cfg`, from its config's model_type.

    "text_encoder" for a supported encoder (ENCODER_TYPES), "encoder" (AutoModel: the bare body) for a
    causal LM or, with trust_remote_code, a custom model. InputError for any other model.
    """
    if cfg.name_or_path.lower() in BUILTIN_MODELS:
        return model_kind(cfg.name_or_path)
    folder = Path(cfg.name_or_path).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise InputError(
            f"LLMConfig.name_or_path={cfg.name_or_path}: no config.json in this folder, so it is not a model folder; "
            "point it at a causal LM or a text encoder saved by save_pretrained (or a built-in name)"
        )
    source, gguf_file = resolve_model_source(cfg.name_or_path, "encoder")
    model_type = str(getattr(read_model_config(cfg, source, gguf_file), "model_type", ""))
    if model_type in ENCODER_TYPES:
        return "text_encoder"
    if _is_causal_lm_type(model_type) or cfg.trust_remote_code:
        return "encoder"
    raise InputError(
        f"LLMConfig.name_or_path={cfg.name_or_path}: model_type '{model_type}' is neither a causal LM nor a supported "
        f"text encoder ({', '.join(ENCODER_TYPES)}); use a decoder LLM (e.g. smollm2), a T5 checkpoint or a "
        "BERT-style encoder (e.g. minilm)"
    )


def _is_causal_lm_type(model_type: str) -> bool:
    """Whether transformers has a causal-LM class for this model_type (Llama, Qwen2, GPT-2, ...)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
