"""Stage 1 hyper-parameters, with the reason for each default."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tslrec.core.errors import InputError

DEFAULT_PREFIX = "Given the user's purchase history, predict the user's distribution among {k} purchase preferences."
DEFAULT_SUFFIX = "Response:"


@dataclass
class Stage1Config:
    """Information reconstruction (user-level SFT) settings."""

    # targets
    k: int = 32  # number of latent item groups (k-means clusters); see grouping.py for the choice
    kmeans_algorithm: str = "auto"  # auto | kmeans | minibatch (auto = minibatch above 50k items)
    kmeans_normalize: bool = False  # L2-normalise item embeddings before k-means (cosine groups)
    # prompt
    max_items: int = 50  # N: the last N training items of a user go into the prompt (targets use all of them)
    prefix_text: str = DEFAULT_PREFIX  # text before the items; "{k}" is replaced by K
    suffix_text: str = DEFAULT_SUFFIX  # text after the items; its last token is the pooled position
    pooling: str = "last"  # last (hidden state of "Response:"'s last token) | mean (masked mean of all positions)
    # LoRA
    lora: bool = True  # False = untuned-LLM baseline: only projection + head are trained
    lora_r: int = 8  # LoRA rank (E4SRec / TALLRec-style small rank)
    lora_alpha: int = 16  # LoRA scaling numerator (alpha / r = 2)
    lora_dropout: float = 0.05  # dropout on the LoRA input
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # Llama attention q, v
    # optimisation
    lr: float = 5e-4  # AdamW lr for LoRA weights
    head_lr: float = 2e-3  # AdamW lr for the projection and the head (trained from scratch)
    weight_decay: float = 0.0  # AdamW weight decay
    epochs: int = 4  # passes over the training users (one LLM pass per user per epoch)
    max_steps: int | None = None  # cap on optimizer steps (None = epochs decide)
    batch_size: int = 16  # users per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    eval_batch_size: int = 64  # users per batch for validation / inference
    lr_schedule: str = "cosine"  # any transformers scheduler name: cosine | linear | constant_with_warmup ...
    warmup_ratio: float = 0.05  # fraction of total steps used for linear warm-up
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    loss_reduction: str = "sum"  # sum: squared error summed over K, mean over users (paper's Eq. 3); mean: also / K
    bf16: bool = True  # torch.autocast(bfloat16) for LLM forward/backward (~1.5x on CPUs with AMX/AVX512-BF16)
    # schedule of checks
    checkpoint_every: int = 25  # optimizer steps between resumable checkpoints
    eval_every: int | None = None  # optimizer steps between validations (None = end of each epoch)
    val_fraction: float = 0.1  # fraction of users held out for validation MSE (early stopping, model choice)
    test_fraction: float = 0.1  # fraction of users held out for the reported MSE (0 = report validation MSE)
    patience: int = 2  # validations without improvement before early stopping
    max_users: int | None = None  # use a seeded random subset of users (quick runs)
    seed: int = 0  # seeds k-means, the user split, data order and initialisation
    # baselines
    untuned_baseline: str = "head"  # none | head (frozen LLM features, head fitted) | head+proj (full loop, no LoRA)

    def validate(self) -> "Stage1Config":
        """Raise a one-line InputError for an impossible setting."""
        checks = [
            (self.k >= 2, f"--k {self.k}: need at least 2 groups"),
            (self.max_items >= 1, f"--max-items {self.max_items}: need at least 1"),
            (self.pooling in ("last", "mean"), f"pooling '{self.pooling}': use last or mean"),
            (self.lora_r >= 1, f"lora_r {self.lora_r}: need at least 1"),
            (0.0 <= self.lora_dropout < 1.0, f"lora_dropout {self.lora_dropout}: must be in [0, 1)"),
            (self.lr > 0 and self.head_lr > 0, "--lr and head_lr must be positive"),
            (self.epochs >= 1, f"--epochs {self.epochs}: need at least 1"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps {self.max_steps}: need at least 1"),
            (self.batch_size >= 1 and self.eval_batch_size >= 1, "--batch-size must be at least 1"),
            (self.grad_accum >= 1, f"--grad-accum {self.grad_accum}: need at least 1"),
            (0.0 <= self.warmup_ratio < 1.0, f"warmup_ratio {self.warmup_ratio}: must be in [0, 1)"),
            (self.loss_reduction in ("sum", "mean"), f"loss_reduction '{self.loss_reduction}': use sum or mean"),
            (self.checkpoint_every >= 1, f"--checkpoint-every {self.checkpoint_every}: need at least 1"),
            (self.eval_every is None or self.eval_every >= 1, f"--eval-every {self.eval_every}: need at least 1"),
            (0.0 < self.val_fraction < 1.0, f"--val-fraction {self.val_fraction}: must be in (0, 1)"),
            (0.0 <= self.test_fraction < 1.0 - self.val_fraction,
             f"--test-fraction {self.test_fraction}: must be in [0, 1 - val_fraction)"),
            (self.patience >= 1, f"--patience {self.patience}: need at least 1"),
            (self.max_users is None or self.max_users >= 4, f"--max-users {self.max_users}: need at least 4"),
            (self.untuned_baseline in ("none", "head", "head+proj"),
             f"--untuned-baseline '{self.untuned_baseline}': use none, head or head+proj"),
            (self.kmeans_algorithm in ("auto", "kmeans", "minibatch"),
             f"--kmeans '{self.kmeans_algorithm}': use auto, kmeans or minibatch"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        from transformers import SchedulerType

        try:
            SchedulerType(self.lr_schedule)
        except ValueError:
            raise InputError(f"--lr-schedule '{self.lr_schedule}': not a transformers scheduler; "
                             "use cosine, linear, constant_with_warmup or another SchedulerType name") from None
        return self

    def prefix(self) -> str:
        """Prefix text with K filled in."""
        return self.prefix_text.replace("{k}", str(self.k)).replace("{K}", str(self.k))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stage1Config":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})
