"""Which transformers class loads a Lite-LLM4Rec model.

Loading itself is stage 1's `load_llm` (one loader for both methods). Built-in names keep
their own kind ("smollm2" is a causal LM, "minilm" an encoder); every other folder, .gguf
file or hub id loads through `AutoModel` ("encoder" kind), which gives the bare transformer
of any family (LlamaModel, BertModel, T5Model, ...). Lite never needs a vocabulary head.
"""

from __future__ import annotations

from tslrec.llm.loading import BUILTIN_MODELS


def model_kind(name_or_path: str) -> str:
    """`load_llm` kind for a model used as a feature extractor: the built-in's own kind, else "encoder"."""
    spec = BUILTIN_MODELS.get(name_or_path.lower())
    return spec.kind if spec is not None else "encoder"
