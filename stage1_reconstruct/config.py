"""Stage 1 hyper-parameters, with the reason for each default."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from tslrec.core.precision import Precision, precision_field
from tslrec.core.settings import check_allowed, require, setting, upgrade_recorded
from tslrec.data.splits import Batching  # the backbones' batchings, the same two ways

# transformers' schedulers that need nothing but the warm-up and total steps (the others need a metric, a minimum
# rate or decay steps, and would stop at the first step)
LRSchedule = Literal[
    "cosine", "linear", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
]

DEFAULT_PREFIX = "Given the user's purchase history, predict the user's distribution among {k} purchase preferences."
DEFAULT_SUFFIX = "Response:"
KmeansAlgorithm = Literal["auto", "kmeans", "minibatch"]
Prompts = Literal["windows", "history"]
PROMPTS = get_args(Prompts)
HeadNorm = Literal["none", "rms"]
HEAD_NORMS = get_args(HeadNorm)


@dataclass
class Stage1Config:
    """Information reconstruction (user-level SFT) settings."""

    # targets
    k: int = setting(32, "number of latent item groups (k-means clusters of the stage-0 item table)")
    kmeans_algorithm: KmeansAlgorithm = setting(
        "auto", "auto | kmeans | minibatch (auto = minibatch above 50k items)", flag="--kmeans"
    )
    kmeans_normalize: bool = setting(False, "L2-normalise item embeddings before k-means (cosine groups)")
    # prompt
    max_items: int = setting(
        50, "N: at most N items in a prompt; the target counts exactly the items the prompt shows", at_least=1
    )
    prompts: Prompts = setting(
        "windows",
        (
            "training prompts: windows = a random run of 1..max_items consecutive training items per user "
            "and epoch (one-item prompts included, as stage 2 asks); history = the last max_items (the paper)"
        ),
    )
    batching: Batching = setting(
        "random",
        (
            "training batches: random = the shuffled users cut into batches; length = users whose prompts are "
            "of similar length share a batch (less padding, faster; worse at equal steps in "
            "bench/results/stage1-batching-ml-100k.json)"
        ),
        before="random",
    )
    item_text: bool = setting(
        False,
        (
            "beyond the paper: each item in the prompt is its title's tokens, then its soft token (stage 1 "
            "and stage 2); needs a dataset with item text"
        ),
    )
    item_text_tokens: int = setting(
        16, "with --item-text: at most this many title tokens per item (the rest is cut)", at_least=1
    )
    prefix_text: str = setting(DEFAULT_PREFIX, "text before the items; '{k}' is replaced by K")
    suffix_text: str = setting(DEFAULT_SUFFIX, "text after the items; its last token is the pooled position")
    pooling: Literal["last", "mean"] = setting(
        "last", "last (hidden state of 'Response:''s last token) | mean (masked mean of all positions)"
    )
    head_norm: HeadNorm = setting(
        "rms",
        (
            "the head's input: rms = the pooled hidden state divided by its root mean square, so --head-lr means "
            "the same for LLMs whose hidden states differ in scale (Qwen2.5-0.5B diverges without it: "
            "bench/results/stage1-llm-ml-100k.json); none = as is (the paper)"
        ),
        before="none",
    )
    pack_tokens: int = setting(
        512,
        (
            "prompts continue from the shared prefix packed into rows of about this many positions, each "
            "attending to the prefix and itself only: the same function as padded rows, 1.5x faster to train "
            "(bench/results/stage1-packing-ml-100k.json); 0 = one padded row per prompt"
        ),
        before=0,
    )
    # LoRA
    lora: bool = setting(
        True,
        (
            "do not tune the LLM: only the projection and head are trained (the untuned-LLM ablation; no separate "
            "baseline run)"
        ),
        flag="--no-lora",
    )
    lora_r: int = setting(8, "LoRA rank (E4SRec / TALLRec-style small rank)", at_least=1)
    lora_alpha: int = setting(16, "LoRA scaling numerator (alpha / r = 2)")
    lora_dropout: float = setting(0.05, "dropout on the LoRA input")
    lora_target_modules: list[str] = setting(
        help="comma-separated module names to adapt (Llama attention q, v)", factory=lambda: ["q_proj", "v_proj"]
    )
    # optimisation
    lr: float = setting(5e-4, "AdamW lr for LoRA weights", positive=True)
    head_lr: float = setting(2e-3, "AdamW lr for the projection and the head (trained from scratch)", positive=True)
    weight_decay: float = setting(0.0, "AdamW weight decay")
    epochs: int = setting(4, "passes over the training users (one LLM pass per user per epoch)", at_least=1)
    max_steps: int | None = setting(None, "cap on optimizer steps (None = epochs decide)", at_least=1)
    max_minutes: float | None = setting(
        None, "budget of training minutes (validation excluded); then validate once more and stop", positive=True
    )
    all_users_epochs: float = setting(
        0.0,
        (
            "after early stopping, continue from the best weights for this many epochs (may be fractional) over "
            "every user, held-out ones included, so that stage 2 reads an LLM that saw every user; the reported "
            "held-out MSEs are measured before it (0 = off; max_steps and max_minutes bound the early-stopped "
            "training only)"
        ),
        before=0.0,
    )
    batch_size: int = setting(16, "users per micro-batch", at_least=1)
    grad_accum: int = setting(1, "micro-batches per optimizer step", at_least=1)
    eval_batch_size: int = setting(64, "users per batch for validation / inference", at_least=1)
    lr_schedule: LRSchedule = setting(
        "cosine",
        (
            "transformers' scheduler over the training steps, after a linear warm-up of --warmup-ratio ("
            "`constant` has none)"
        ),
    )
    warmup_ratio: float = setting(0.05, "fraction of total steps used for linear warm-up")
    grad_clip: float = setting(1.0, "max gradient norm (0 = off)")
    loss_reduction: Literal["sum", "mean"] = setting(
        "sum", "sum: squared error summed over K, mean over users (paper's Eq. 3); mean: also / K"
    )
    precision: Precision = precision_field("the LLM's forward and backward", "--no-bf16", "float32")
    # schedule of checks
    checkpoint_every: int = setting(25, "optimizer steps between resumable checkpoints", at_least=1)
    eval_every: int | None = setting(None, "optimizer steps between validations (None = end of each epoch)", at_least=1)
    val_fraction: float = setting(0.1, "fraction of users held out for validation MSE (early stopping, model choice)")
    test_fraction: float = setting(0.1, "fraction of users held out for the reported MSE (0 = report validation MSE)")
    patience: int = setting(2, "validations without improvement before early stopping", at_least=1)
    max_users: int | None = setting(None, "use a seeded random subset of users (quick runs)", at_least=4)
    seed: int = setting(0, "seeds k-means, the user split, data order and initialisation")
    # baselines
    untuned_baseline: Literal["none", "head", "head+proj"] = setting(
        "head", "none | head (frozen LLM features, head fitted) | head+proj (full loop, no LoRA)"
    )

    def __post_init__(self) -> None:
        """One-line InputError naming the field for an impossible setting."""
        if not self.lora:
            self.untuned_baseline = "none"  # without LoRA the run itself is the untuned-LLM baseline
        check_allowed(self)
        require(self.k >= 2, self, "k", "need at least 2 groups")
        require(self.pack_tokens >= 0, self, "pack_tokens", "use 0 (no packing) or a positive number of positions")
        require(0.0 <= self.lora_dropout < 1.0, self, "lora_dropout", "must be in [0, 1)")
        require(
            math.isfinite(self.all_users_epochs) and self.all_users_epochs >= 0,
            self,
            "all_users_epochs",
            "must be 0 (off) or a positive number of epochs",
        )
        require(0.0 <= self.warmup_ratio < 1.0, self, "warmup_ratio", "must be in [0, 1)")
        require(0.0 < self.val_fraction < 1.0, self, "val_fraction", "must be in (0, 1)")
        require(
            0.0 <= self.test_fraction < 1.0 - self.val_fraction,
            self,
            "test_fraction",
            "must be in [0, 1 - val_fraction)",
        )

    def prefix(self) -> str:
        """Prefix text with K filled in."""
        return self.prefix_text.replace("{k}", str(self.k)).replace("{K}", str(self.k))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stage1Config:
        """The settings a config.json records; a field it lacks reads as its `before` value if it declares one
        (what the run did before the field existed), else as its default."""
        before = {f.name: f.metadata["before"] for f in fields(cls) if "before" in f.metadata}
        known = {f.name for f in fields(cls)}
        d = upgrade_recorded(cls(), d)
        return cls(**{**before, **{k: v for k, v in d.items() if k in known}})
