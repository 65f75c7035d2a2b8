"""Stage 1 inputs: check the item table against the sequences, build targets, split users, batch them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from tslrec.core.errors import InputError
from tslrec.data.splits import BATCHING, length_bucketed_batches
from tslrec.llm.soft_prompt import ItemTokens, left_pad_ids

from .config import PROMPTS, Stage1Config
from .grouping import ItemGroups, kmeans_item_groups, user_group_targets


@dataclass
class Stage1Data:
    """Everything the training loop needs, on CPU."""

    item_embeddings: torch.Tensor  # float32 [N+1, D]; row 0 = padding
    train_sequences: list[np.ndarray]  # per user: TRAINING item ids only (1..N), chronological
    groups: ItemGroups  # k-means result
    targets: np.ndarray  # float32 [U, K]: group distribution of the items each user's full prompt shows
    train_users: np.ndarray  # int64: users trained on
    val_users: np.ndarray  # int64: held-out users for validation MSE (early stopping)
    test_users: np.ndarray  # int64: held-out users for the reported MSE (empty if test_fraction = 0)
    dropped_users: int  # users with no training item (no prompt, no target)


def check_inputs(item_embeddings: np.ndarray, train_sequences: list[np.ndarray], source: str) -> np.ndarray:
    """Float32 [N+1, D] table after checking shape, finiteness and that every id has a row."""
    emb = np.asarray(item_embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] < 3:
        raise InputError(f"{source}: 'embeddings' must be [N+1, D] with row 0 = padding, got {tuple(emb.shape)}")
    if not np.isfinite(emb).all():
        bad = int((~np.isfinite(emb)).any(axis=1).sum())
        raise InputError(f"{source}: field 'embeddings' holds NaN/inf in {bad} rows; re-train the backbone")
    max_id = max((int(np.max(s)) for s in train_sequences if len(s)), default=0)
    min_id = min((int(np.min(s)) for s in train_sequences if len(s)), default=1)
    if max_id >= emb.shape[0] or min_id < 1:
        raise InputError(
            f"{source}: sequences use item ids {min_id}..{max_id} but the table has rows "
            f"1..{emb.shape[0] - 1}; the embeddings were exported for another dataset or preprocessing"
        )
    return emb


def split_users(sequences: list[np.ndarray], cfg: Stage1Config, source: str) -> tuple[np.ndarray, int, int]:
    """The users stage 1 uses (those with training items, seeded order, at most max_users), and how many of the first
    are validation and then test users; the rest train."""
    rng = np.random.default_rng(cfg.seed)
    usable = rng.permutation(np.array([u for u, s in enumerate(sequences) if len(s) > 0], dtype=np.int64))
    if cfg.max_users is not None:
        usable = usable[: cfg.max_users]
    if len(usable) < 4:
        raise InputError(f"{source}: only {len(usable)} users with training items; stage 1 needs at least 4")
    n_val = min(max(1, int(round(cfg.val_fraction * len(usable)))), len(usable) - 2)
    n_test = min(int(round(cfg.test_fraction * len(usable))), len(usable) - n_val - 2)
    if cfg.test_fraction > 0:
        n_test = max(n_test, 1)
    return usable, n_val, n_test


def prepare_stage1_data(
    item_embeddings: np.ndarray, train_sequences: list[np.ndarray], cfg: Stage1Config, source: str = "item embeddings"
) -> Stage1Data:
    """k-means groups, targets from training items only, and a seeded user split.

    A user's target is the group distribution of exactly the items the prompt shows: the last
    `max_items` training items (the whole training history when it is shorter).
    """
    emb = check_inputs(item_embeddings, train_sequences, source)
    groups = kmeans_item_groups(
        emb, cfg.k, seed=cfg.seed, algorithm=cfg.kmeans_algorithm, normalize=cfg.kmeans_normalize, source=source
    )
    sequences = [np.asarray(s, dtype=np.int64) for s in train_sequences]
    targets = user_group_targets([q[-cfg.max_items :] for q in sequences], groups.item_group, cfg.k)
    usable, n_val, n_test = split_users(sequences, cfg, source)
    return Stage1Data(
        item_embeddings=torch.from_numpy(emb),
        train_sequences=sequences,
        groups=groups,
        targets=targets,
        train_users=np.sort(usable[n_val + n_test :]),
        val_users=np.sort(usable[:n_val]),
        test_users=np.sort(usable[n_val : n_val + n_test]),
        dropped_users=len(sequences) - int(sum(len(s) > 0 for s in sequences)),
    )


class UserBatches:
    """Collate user indices into (ids [B, T], mask [B, T], targets [B, K]).

    mode 'history': each user's last `max_items` training items and `data.targets` (validation, test, the
    paper's form of training). mode 'windows': for each user a random window of 1..max_items consecutive
    training items, drawn from (seed, epoch, user) so a resumed epoch draws the same windows, and the
    group distribution of exactly those items as the target.
    """

    def __init__(
        self,
        data: Stage1Data,
        max_items: int,
        mode: str = "history",
        seed: int = 0,
        epoch: int = 0,
        positions_per_item: np.ndarray | None = None,
    ):
        if mode not in PROMPTS:
            raise ValueError(f"Stage1Config.prompts: unknown mode '{mode}'; use one of {', '.join(PROMPTS)}")
        self.data, self.max_items, self.mode = data, max_items, mode
        self.seed, self.epoch = seed, epoch
        self.positions_per_item = positions_per_item  # [N+1] with item text (title + soft token); None = 1 each

    def shown(self, user: int) -> np.ndarray:
        """The training items `user`'s prompt shows in this epoch."""
        if self.mode == "windows":
            return self.window(user)
        return self.data.train_sequences[user][-self.max_items :] if self.max_items > 0 else np.zeros(0, np.int64)

    def prompt_length(self, user: int) -> int:
        """Item positions (tokens, with item text) of `user`'s prompt in this epoch: what its row costs."""
        shown = self.shown(user)
        return len(shown) if self.positions_per_item is None else int(self.positions_per_item[shown].sum())

    def window(self, user: int) -> np.ndarray:
        """This epoch's random window of `user`'s training items (1..max_items of them, consecutive)."""
        seq = self.data.train_sequences[user]
        rng = np.random.default_rng([self.seed, self.epoch, user])
        n = int(rng.integers(1, min(self.max_items, len(seq)) + 1))
        start = int(rng.integers(0, len(seq) - n + 1))
        return seq[start : start + n]

    def __call__(self, users: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.mode == "history":
            ids, mask = left_pad_ids([self.data.train_sequences[u] for u in users], self.max_items)  # [B, T]
            targets = torch.from_numpy(self.data.targets[np.asarray(users, dtype=np.int64)])  # [B, K]
            return ids, mask, targets
        shown = [self.window(u) for u in users]
        ids, mask = left_pad_ids(shown, self.max_items)  # [B, T]
        k = self.data.targets.shape[1]
        group = self.data.groups.item_group
        targets = np.stack([np.bincount(group[w], minlength=k)[:k] / len(w) for w in shown]).astype(np.float32)
        return ids, mask, torch.from_numpy(targets)  # targets [B, K]


def epoch_order(users: np.ndarray, seed: int, epoch: int) -> list[int]:
    """Deterministic shuffle of the training users for one epoch (the same after a resume)."""
    return [int(u) for u in np.random.default_rng([seed, epoch]).permutation(users)]


def epoch_batches(
    users: np.ndarray, batch_size: int, seed: int, epoch: int, batching: str, prompts: UserBatches
) -> list[list[int]]:
    """One epoch's micro-batches of training users, every user once, the same after a resume.

    batching 'random': the shuffled order (epoch_order) cut into batches. 'length': users whose prompts
    (prompts.prompt_length) are of similar length go together, as the backbones batch their windows
    (length_bucketed_batches), so rows are padded less. In both, every batch but the last holds batch_size users,
    so every user weighs the same in the loss wherever a short last batch does not fall.
    """
    order = epoch_order(users, seed, epoch)
    if batching == "random":
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if batching != "length":
        raise ValueError(f"Stage1Config.batching: unknown '{batching}'; use one of {', '.join(BATCHING)}")
    lengths = torch.tensor([prompts.prompt_length(u) for u in order])  # [U]
    generator = torch.Generator().manual_seed(int(np.random.default_rng([seed, epoch, 1]).integers(2**62)))
    batches = [[order[i] for i in rows.tolist()] for rows in length_bucketed_batches(lengths, batch_size, generator)]
    return sorted(batches, key=lambda b: len(b) < batch_size)  # the short batch, if any, last (stable sort)


def pieces_for_processes(batches: list[list[int]], batch_size: int, processes: int) -> list[list[int]]:
    """Each batch of up to batch_size * processes users cut into `processes` pieces of batch_size, in order (empty
    pieces dropped). accelerate deals a loader's batches out to the processes in turn, so process p trains on piece p
    of every batch, and a step takes the same users whatever the process count."""
    pieces = (b[i * batch_size : (i + 1) * batch_size] for b in batches for i in range(processes))
    return [piece for piece in pieces if piece]


def item_texts_sha256(texts: list[str]) -> str:
    """sha256 of the item texts shown in prompts (recorded in config.json; stage 2 checks its dataset against it)."""
    return hashlib.sha256("\x1f".join(texts).encode()).hexdigest()


def check_item_texts(texts: list[str] | None, num_items: int, cfg: Stage1Config) -> None:
    """With `cfg.item_text`, one text per item id 0..N, not all empty; InputError naming Stage1Config.item_text."""
    if not cfg.item_text:
        return
    if texts is None:
        raise InputError("Stage1Config.item_text=True: the dataset has no item text; drop it or use one with titles")
    if len(texts) != num_items + 1:
        raise InputError(
            f"Stage1Config.item_text=True: {len(texts)} item texts for {num_items} items (+1 padding row); "
            "pass the texts of the dataset the item table was trained on"
        )
    if not any(t.strip() for t in texts[1:]):
        raise InputError("Stage1Config.item_text=True: every item text is empty; fill the titles or drop it")


def prompt_token_cost(data: Stage1Data, max_items: int, titles: ItemTokens, text_tokens: int) -> dict[str, float]:
    """What item text costs in prompt length: tokens per user with and without the titles, over every user's
    last `max_items` training items (the validation/test prompt), and the titles' own tokens per item.

    text_tokens: the prompt's prefix and suffix tokens (the same for every user).
    """
    users = np.concatenate([data.train_users, data.val_users, data.test_users])  # [U]
    kept = titles.lengths.numpy()  # [N+1]
    shown = [data.train_sequences[u][-max_items:] for u in users]
    without = np.array([text_tokens + len(s) for s in shown], dtype=np.int64)  # [U]
    with_text = without + np.array([kept[s].sum() for s in shown], dtype=np.int64)  # [U]
    per_item, uncut = kept[1:], titles.untruncated.numpy()[1:]  # [N]
    return {
        "users": int(len(users)),
        "per_user_mean": float(with_text.mean()),
        "per_user_max": int(with_text.max()),
        "per_user_mean_without_text": float(without.mean()),
        "per_user_max_without_text": int(without.max()),
        "title_tokens_per_item_mean": float(per_item.mean()),
        "title_tokens_per_item_mean_uncut": float(uncut.mean()),
        "title_tokens_cap": titles.cap,
        "titles_cut": int((uncut > per_item).sum()),
        "items": int(len(per_item)),
    }
