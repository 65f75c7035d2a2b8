"""Lite-LLM4Rec: Item LLM -> Recommendation LLM -> item projection head.

Public API:
    ItemLLMConfig, item_vectors_for_dataset, encode_texts  -- item_llm (Eq. 1-3, cached as an export)
    LiteConfig, LiteLLM4Rec, RecommendationLLM, build_lite_model  -- model (Eq. 4-6)
    sampling_rows, all_prefix_rows                         -- segments (the two training strategies)
    LiteTrainConfig, train_lite, evaluate_lite             -- training (full-ranking leave-one-out)
    save_lite_model, load_lite_model                       -- model_io
    GenerativeConfig, generate_top_k                       -- generative (the beam-search baseline)
"""

from .generative import GenerativeConfig, generate_top_k
from .item_llm import ItemLLMConfig, encode_texts, item_vectors_for_dataset
from .model import LiteConfig, LiteLLM4Rec, RecommendationLLM, build_lite_model
from .model_io import load_lite_model, save_lite_model
from .segments import all_prefix_rows, sampling_rows
from .training import LiteTrainConfig, evaluate_lite, train_lite

__all__ = [
    "GenerativeConfig",
    "ItemLLMConfig",
    "LiteConfig",
    "LiteLLM4Rec",
    "LiteTrainConfig",
    "RecommendationLLM",
    "all_prefix_rows",
    "build_lite_model",
    "encode_texts",
    "evaluate_lite",
    "generate_top_k",
    "item_vectors_for_dataset",
    "load_lite_model",
    "sampling_rows",
    "save_lite_model",
    "train_lite",
]
