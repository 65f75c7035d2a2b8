"""tslrec: TSLRec (an LLM-enhanced item table gated into sequential recommenders) and Lite-LLM4Rec, CPU first.

The Python API: one import per job, each a typed job config and the function that runs it, as the command line
does (`tslrec train` is `train(TrainJob(...))`), and one loader for any item table. Imported on first use, so
`import tslrec` is quick. Examples: docs/python.md.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("tslrec")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"

_EXPORTS = {
    "TrainJob": "tslrec.pipelines.train_job",
    "train": ("tslrec.pipelines.train_job", "train_backbone"),
    "Stage1Job": "tslrec.pipelines.stage1_job",
    "stage1": ("tslrec.pipelines.stage1_job", "run_stage1"),
    "Stage2Job": "tslrec.pipelines.stage2_job",
    "stage2": ("tslrec.pipelines.stage2_job", "run_stage2"),
    "AblateJob": "tslrec.pipelines.ablate_job",
    "ablate": ("tslrec.pipelines.ablate_job", "run_ablation"),
    "LiteJob": "tslrec.pipelines.lite_job",
    "lite": ("tslrec.pipelines.lite_job", "run_lite"),
    "RecommendJob": "tslrec.pipelines.recommend_job",
    "recommend": ("tslrec.pipelines.recommend_job", "recommend_lists"),
    "load_item_table": ("tslrec.formats.item_table", "load_item_embeddings"),
    "load_dataset": "tslrec.data",
    "DataConfig": "tslrec.data",
    "BackboneConfig": "tslrec.backbones.base",
    "TrainConfig": "tslrec.backbones.training",
    "EvalConfig": "tslrec.evaluation.ranking",
    "Stage1Config": "tslrec.stage1_reconstruct.config",
    "LLMConfig": "tslrec.llm.loading",
    "LiteConfig": "tslrec.lite_llm4rec.model",
    "LiteTrainConfig": "tslrec.lite_llm4rec.training",
    "Runtime": "tslrec.pipelines.options",
    "TrainingRuntime": "tslrec.pipelines.options",
    "InputError": "tslrec.core.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tslrec' has no attribute {name!r}")
    where = _EXPORTS[name]
    module, attribute = where if isinstance(where, tuple) else (where, name)
    return getattr(importlib.import_module(module), attribute)
