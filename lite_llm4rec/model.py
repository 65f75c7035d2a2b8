"""Lite-LLM4Rec: item vectors -> Recommendation LLM -> item projection head.

    x_t   = A e_{s_t}                                     adapter: item dim D -> LLM hidden H
    h_u   = mean_t RecLLM([x_1 .. x_n])[t]                (Eq. 4, one position per item)
    y_hat = W h_u                                         (Eq. 5, logits over all N items)
    loss  = cross-entropy(y_hat, next item)               (Eq. 6)

The item vectors come from the Item LLM (item_llm.py) and are fixed unless
`tune_item_vectors`. The Recommendation LLM is loaded by stage 1's `load_llm` and fed
through stage 1's `SoftPromptBuilder` (inputs_embeds, left-packed, with the tokenizer's BOS,
or an encoder's [CLS], in front when it has one; attended to but not pooled). No text
prompt: one position per item. It is either
- a causal LM (SmolLM2, any decoder): position t attends to items 1..t ("causal"), or, with
  `LiteConfig.attention="bidirectional"`, to every item (transformers' `config.is_causal=False`);
- a text encoder (T5's encoder stack, a BERT-style encoder such as MiniLM): every item
  attends to every item ("bidirectional").
`RecommendationLLM.attention` says which. Pooling is the same either way: the masked mean
over the user's item positions.

For causal attention the mean over positions 1..t depends on items 1..t only, so one pass
over a sequence gives the pooled state of every prefix (`prefix_states`); training on every
prefix ("all") then costs one pass per window instead of one per prefix.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tslrec.core.errors import InputError
from tslrec.core.settings import check_allowed, require, setting
from tslrec.llm.loading import LLMConfig, hidden_size, load_llm, transformer_body
from tslrec.llm.lora import add_lora
from tslrec.llm.pooling import masked_mean_pool
from tslrec.llm.soft_prompt import SoftPromptBuilder, match_token_scale

from .loading import rec_llm_kind


@dataclass
class LiteConfig:
    """Recommendation LLM and head settings (the LLM itself is named by an LLMConfig)."""

    finetune: Literal["lora", "full"] = setting("lora", "lora (peft adapters) | full (every LLM weight)")
    lora_r: int = setting(8, "LoRA rank", at_least=1)
    lora_alpha: int = setting(16, "LoRA scaling numerator (alpha / r = 2)")
    lora_dropout: float = setting(0.05, "dropout on the LoRA input")
    lora_target_modules: list[str] | None = setting(
        None,
        (
            "comma-separated module names to adapt "
            "(default: peft's for the model type: Llama q_proj,v_proj; T5 q,v; BERT query,value)"
        ),
    )
    add_bos: bool = setting(
        True,
        (
            "do not put the tokenizer's BOS (an encoder's [CLS]) before the items (by default it is there, as "
            "pretrained models expect, and never pooled)"
        ),
        flag="--no-bos",
    )
    attention: Literal["auto", "bidirectional"] = setting(
        "auto",
        (
            "auto: the model's own (causal for a decoder LLM, bidirectional for an encoder) | "
            "bidirectional: a decoder LLM also attends to later items"
        ),
    )
    tune_item_vectors: bool = setting(False, "also train the Item-LLM vectors with the recommendation loss")

    def __post_init__(self) -> None:
        check_allowed(self)
        require(0.0 <= self.lora_dropout < 1.0, self, "lora_dropout", "must be in [0, 1)")


def is_causal(body: nn.Module) -> bool:
    """True when the transformer's self-attention is causal (decoder LLMs), False for encoders (BERT, T5)
    and for a decoder switched to bidirectional attention (`make_bidirectional`)."""
    if getattr(getattr(body, "config", None), "is_causal", True) is False:
        return False
    return any(getattr(m, "is_causal", False) is True for m in body.modules())


def make_bidirectional(body: nn.Module) -> None:
    """Let a decoder's positions attend to later positions too (padding stays masked).

    transformers' `create_causal_mask` (which decoders call to build their mask) builds a
    bidirectional one when the model config says `is_causal=False`; a model whose code does not
    build its mask there is refused rather than silently left causal.
    """
    module = sys.modules.get(type(body).__module__)
    if not hasattr(module, "create_causal_mask"):
        raise InputError(
            f"LiteConfig.attention=bidirectional: {type(body).__name__} does not build its attention mask with "
            "transformers' create_causal_mask, so it cannot be made bidirectional; use attention=auto"
        )
    body.config.is_causal = False


def start_prefix(tokenizer, causal: bool, add_bos: bool) -> tuple[str, bool]:
    """(prefix_text, add_bos) for SoftPromptBuilder: a decoder's BOS, or an encoder's [CLS] when it has one."""
    cls = getattr(tokenizer, "cls_token", None)
    if add_bos and not causal and cls is not None:
        return cls, False  # BERT-style encoders saw [CLS] first in pretraining (T5 has no such token)
    return "", add_bos


class RecommendationLLM(nn.Module):
    """Item vectors [B, T, D] + mask [B, T] -> adapter -> LLM over inputs_embeds -> pooled h_u [B, H].

    attention: "auto" keeps the model's own attention; "bidirectional" also opens a decoder's
    causal mask (an encoder is bidirectional either way).
    """

    def __init__(self, llm: nn.Module, tokenizer, item_dim: int, add_bos: bool = True, attention: str = "auto"):
        super().__init__()
        self.llm = llm  # possibly peft-wrapped
        self.tokenizer = tokenizer  # kept to save a fully fine-tuned model as a loadable folder
        self.hidden = hidden_size(llm)
        self.adapter = nn.Linear(item_dim, self.hidden)  # A: item vector -> one LLM input position
        body = transformer_body(llm)
        if attention == "bidirectional" and is_causal(body):
            make_bidirectional(body)
        self.causal = is_causal(body)
        prefix_text, bos = start_prefix(tokenizer, self.causal, add_bos)
        self.prompt = SoftPromptBuilder(tokenizer, prefix_text, "", add_bos=bos, require_suffix=False)
        self.num_prefix = int(self.prompt.prefix_ids.numel())  # P: 1 with a BOS / [CLS] token, else 0
        params = inspect.signature(body.forward).parameters
        self._takes_position_ids = "position_ids" in params  # T5 does not (relative positions)
        self._takes_use_cache = "use_cache" in params  # decoders; most encoders have no cache
        self._position_offset = _position_offset(body)

    @property
    def attention(self) -> str:
        """How the items attend: "causal" (item t sees items 1..t) or "bidirectional" (each sees every item)."""
        return "causal" if self.causal else "bidirectional"

    def match_token_scale(self, item_vectors: torch.Tensor) -> None:
        """Rescale the adapter to the LLM's token-embedding norm (item_vectors: [n, D] sample)."""
        match_token_scale(self.adapter, self.llm, item_vectors)

    def states(self, vectors: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden [B, P+T, H] float32, item_mask [B, P+T] bool): rows left-packed, P prefix positions first."""
        soft = self.adapter(vectors.to(self.adapter.weight.dtype))  # [B, T, H]
        inputs, attn, position_ids = self.prompt(self.llm.get_input_embeddings(), soft, mask)  # [B, P+T, H], [B, P+T]
        extra = {"position_ids": position_ids + self._position_offset} if self._takes_position_ids else {}
        if self._takes_use_cache:
            extra["use_cache"] = False
        out = transformer_body(self.llm)(inputs_embeds=inputs, attention_mask=attn, **extra)  # [B, P+T, H] states
        item_mask = attn.bool() & (position_ids >= self.num_prefix)  # real item positions (BOS excluded)
        return out.last_hidden_state.float(), item_mask

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """vectors [B, T, D], mask [B, T] (any padding side) -> h_u [B, H]: mean over item positions (Eq. 4)."""
        hidden, item_mask = self.states(vectors, mask)
        return masked_mean_pool(hidden, item_mask)  # [B, H]

    def prefix_states(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Causal LLMs only.

        Left-padded input -> [B, T, H]: position t = mean of item states 1..t (h_u of that prefix).
        """
        if not self.causal:
            raise ValueError(
                "prefix_states needs causal attention: with bidirectional attention states see later items"
            )
        if bool((mask[:, 1:].long() < mask[:, :-1].long()).any()):
            raise ValueError("prefix_states expects left-padded rows (padding first)")
        hidden, item_mask = self.states(vectors, mask)
        w = item_mask.unsqueeze(-1).float()  # [B, P+T, 1]
        running = (hidden * w).cumsum(dim=1) / w.cumsum(dim=1).clamp(min=1.0)  # [B, P+T, H]
        return running[:, self.num_prefix :]  # [B, T, H], aligned with the input columns


def _position_offset(body: nn.Module) -> int:
    """First position id of a real token: padding_idx + 1 for RoBERTa-style embeddings, else 0."""
    embeddings = getattr(body, "embeddings", None)
    if hasattr(type(embeddings), "create_position_ids_from_inputs_embeds"):
        return int(embeddings.padding_idx) + 1  # RoBERTa, XLM-R: positions start after the padding index
    return 0


class LiteLLM4Rec(nn.Module):
    """Item vectors + Recommendation LLM + item projection head. Same contract as the backbones:
    forward(seq [B, L], lengths) -> h_u [B, H]; score(h_u) -> [B, N+1] (column 0 = padding, -inf)."""

    def __init__(self, rec_llm: RecommendationLLM, item_vectors: torch.Tensor, tune_item_vectors: bool = False):
        super().__init__()
        self.rec = rec_llm
        self.item_vectors = nn.Parameter(
            item_vectors.detach().float().clone(), requires_grad=tune_item_vectors
        )  # [N+1, D]
        self.head = nn.Linear(rec_llm.hidden, item_vectors.shape[0] - 1, bias=False)  # W of Eq. 5: [N, H]
        nn.init.zeros_(
            self.head.weight
        )  # start at the uniform prediction (loss ln N): LLM states have large outlier dims

    @property
    def num_items(self) -> int:
        return self.head.out_features

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """seq [B, L] item ids, 0 = padding (either side) -> h_u [B, H]. `lengths` is implied by the padding."""
        return self.rec(self.item_vectors[seq], seq > 0)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """h [.., H] -> logits over items 1..N [.., N] (float32)."""
        return self.head(h.to(self.head.weight.dtype)).float()

    def score(self, h: torch.Tensor) -> torch.Tensor:
        """h_u [B, H] -> [B, N+1], column 0 (padding) = -inf."""
        logits = self.logits(h)  # [B, N]
        return torch.cat([torch.full_like(logits[:, :1], float("-inf")), logits], dim=1)

    def loss(self, ids: torch.Tensor, targets: torch.Tensor, negatives: str = "all") -> tuple[torch.Tensor, int]:
        """Cross-entropy (Eq. 6) -> (mean loss, number of targets).

        ids, targets: [B, T] left-padded; targets[b, t] = next item after the prefix ending at t, 0 = none.
        Causal attention: every position with a target is a prefix (one pass). Bidirectional: only the last column.
        negatives: all = the softmax runs over every item; unseen = the paper's §3.4, over the items the user has
        not interacted with: the items of the target's own input prefix are left out (the target stays in).
        """
        mask = ids > 0
        if self.rec.causal:
            states = self.rec.prefix_states(self.item_vectors[ids], mask)  # [B, T, H]
            has_target = targets > 0
            h, y = states[has_target], targets[has_target]  # [n, H], [n]
            upto = torch.arange(ids.shape[1], device=ids.device)
            prefixes = ids[:, None, :] * (upto[None, :] <= upto[:, None])  # [B, T, T]: row t = the items up to t
            seen = prefixes[has_target]  # [n, T], 0 = none
        else:
            if bool((targets[:, :-1] > 0).any()):
                raise ValueError("a bidirectional Recommendation LLM takes one target per row, in the last column")
            h, y, seen = self.rec(self.item_vectors[ids], mask), targets[:, -1], ids  # seen [B, T]
        logits = self.logits(h)  # [n, N]
        if negatives == "unseen":
            logits = torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)  # [n, N+1]: column 0 = padding
            kept = logits.gather(1, y[:, None])  # [n, 1]: the target's logit
            logits = logits.scatter(1, seen, float("-inf")).scatter(1, y[:, None], kept)[:, 1:]  # [n, N]
        return F.cross_entropy(logits, y - 1), int(y.numel())


def build_lite_model(item_vectors: torch.Tensor, cfg: LiteConfig, llm_cfg: LLMConfig, seed: int = 0) -> LiteLLM4Rec:
    """Load the Recommendation LLM with stage 1's loader, add LoRA (or unfreeze it), a fresh adapter and head."""
    llm, tokenizer = load_llm(llm_cfg, kind=rec_llm_kind(llm_cfg))
    torch.manual_seed(seed)
    if cfg.finetune == "lora":
        llm = add_lora(llm, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    else:
        for p in llm.parameters():
            p.requires_grad_(True)
    rec = RecommendationLLM(llm, tokenizer, item_vectors.shape[1], cfg.add_bos, cfg.attention)
    real = item_vectors[1:]
    rec.match_token_scale(real[torch.randperm(real.shape[0])[:4096]])
    return LiteLLM4Rec(rec, item_vectors, cfg.tune_item_vectors)
