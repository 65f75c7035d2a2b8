"""TSLRec stage 1, information reconstruction: user-level SFT of an LLM on item-group distributions.

Public API (stage 2 and Lite-LLM4Rec import from here):
    LLMConfig, load_llm, hidden_size            -- llm_loading (shared model loader)
    SoftPromptBuilder, left_pad_ids             -- soft_prompt (text + soft vectors -> inputs_embeds)
    last_token_pool, masked_mean_pool, pool     -- pooling
    LLMSequenceEncoder, ReconstructionModel     -- model (forward, encode_items)
    load_reconstruction_model                   -- model_io (read a `tslrec stage1` folder)
    Stage1Config, train_stage1                  -- config, training
    kmeans_item_groups, user_group_targets      -- grouping
    measure_sft_cost                            -- instance_level (user- vs instance-level cost)
"""
from .config import Stage1Config
from .grouping import ItemGroups, kmeans_item_groups, user_group_targets
from .instance_level import measure_sft_cost
from .llm_loading import LLMConfig, hidden_size, load_llm
from .model import LLMSequenceEncoder, ReconstructionModel
from .model_io import load_reconstruction_model
from .pooling import last_token_pool, masked_mean_pool, pool
from .soft_prompt import SoftPromptBuilder, left_pad_ids
from .training import train_stage1

__all__ = ["ItemGroups", "LLMConfig", "LLMSequenceEncoder", "ReconstructionModel", "SoftPromptBuilder", "Stage1Config",
           "hidden_size", "kmeans_item_groups", "last_token_pool", "left_pad_ids", "load_llm",
           "load_reconstruction_model", "masked_mean_pool", "measure_sft_cost", "pool", "train_stage1",
           "user_group_targets"]
