"""TSLRec stage 1, information reconstruction: user-level SFT of an LLM on item-group distributions.

Public API (stage 2 imports from here; the LLM loader, soft prompts, pooling and LoRA are `tslrec.llm`):
    LLMSequenceEncoder, ReconstructionModel     -- model (forward, encode_items)
    load_reconstruction_model                   -- model_io (read a `tslrec stage1` folder)
    Stage1Config, train_stage1                  -- config, training
    kmeans_item_groups, user_group_targets      -- grouping
    measure_sft_cost                            -- instance_level (user- vs instance-level cost)
"""

from .config import Stage1Config
from .grouping import ItemGroups, kmeans_item_groups, user_group_targets
from .instance_level import measure_sft_cost
from .model import LLMSequenceEncoder, ReconstructionModel
from .model_io import load_reconstruction_model
from .training import train_stage1

__all__ = [
    "ItemGroups",
    "LLMSequenceEncoder",
    "ReconstructionModel",
    "Stage1Config",
    "kmeans_item_groups",
    "load_reconstruction_model",
    "measure_sft_cost",
    "train_stage1",
    "user_group_targets",
]
