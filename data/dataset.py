"""The preprocessed dataset every job reads: one chronological item sequence per user."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .raw import item_title


@dataclass
class SequenceDataset:
    """Users' chronological item sequences with ids remapped to 1..N (0 is padding)."""

    name: str  # dataset name or the path it was read from
    sequences: list[np.ndarray]  # per user, internal item ids (int64, 1..N), oldest first
    user_ids: list[str]  # original user id per sequence
    item_ids: list[str]  # original item id per internal id; item_ids[0] == "[PAD]"
    item_text: list[str] | None = None  # text per internal id ([0] == ""), None if the source has none
    dropped_users: int = 0  # users dropped for having fewer than 3 items after filtering
    preprocessing: dict = field(default_factory=dict)  # the DataConfig used, for manifests

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_items(self) -> int:
        """N: the number of real items (ids 1..N)."""
        return len(self.item_ids) - 1

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @property
    def hash(self) -> str:
        """sha256 over the processed sequences and the id maps; changes iff the data changes."""
        if not hasattr(self, "_hash"):
            h = hashlib.sha256()
            h.update("\x1f".join(self.item_ids).encode())
            h.update("\x1f".join(self.user_ids).encode())
            lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
            h.update(lengths.tobytes())
            h.update(np.concatenate(self.sequences).astype(np.int64).tobytes())
            self._hash = h.hexdigest()
        return self._hash

    def item_titles(self) -> list[str] | None:
        """Title per internal id ([0] == ""): the item text without its genres, e.g. 'Toy Story (1995)' (MovieLens
        keeps the release year in the title); None if the source has no item text."""
        if self.item_text is None:
            return None
        return [item_title(t) for t in self.item_text]

    def train_sequences(self) -> list[np.ndarray]:
        """Leave-one-out training part: all but the last two items of each user."""
        return [s[:-2] for s in self.sequences]

    def summary(self) -> dict:
        """Counts for `tslrec data describe` and for manifests."""
        return {
            "name": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "mean_sequence_length": round(self.num_interactions / max(self.num_users, 1), 2),
            "dropped_users_under_3_items": self.dropped_users,
            "has_item_text": self.item_text is not None,
            "hash": self.hash,
            "preprocessing": self.preprocessing,
        }
