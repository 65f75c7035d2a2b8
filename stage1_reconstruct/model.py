"""The stage 1 model: an LLM reads projected item embeddings inside a text prompt and
predicts the user's distribution over K latent item groups.

    h_u   = pool(LLM([prefix ; item_proj(e_1) .. item_proj(e_n) ; "Response:"]))   (Eq. 1)
    p_hat = softmax(W h_u + b)                                                      (Eq. 2)

`LLMSequenceEncoder` (LLM + projection + prompt + pooling) is shared: stage 1 puts a group
head on it, the instance-level baseline an item head. Stage 2 calls
`ReconstructionModel.encode_items` (the same forward with one item per "virtual user").
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from tslrec.llm.loading import hidden_size, quantized_safe_eval, transformer_body
from tslrec.llm.pooling import pool
from tslrec.llm.soft_prompt import SoftPromptBuilder, match_token_scale


class LLMSequenceEncoder(nn.Module):
    """Item embeddings [B, T, D] + mask [B, T] -> one LLM pass per row -> pooled hidden state [B, H]."""

    def __init__(
        self, llm: nn.Module, tokenizer, item_dim: int, prefix_text: str, suffix_text: str, pooling: str = "last"
    ):
        super().__init__()
        self.llm = llm  # possibly peft-wrapped; LoRA layers live inside it
        self.hidden = hidden_size(llm)
        self.item_proj = nn.Linear(item_dim, self.hidden)  # maps item embeddings into the LLM's token space
        self.prompt = SoftPromptBuilder(tokenizer, prefix_text, suffix_text)
        self.pooling = pooling
        self.llm_passes = 0  # sequences sent through the LLM (one per row of every forward)
        self.llm_tokens = 0  # real (non-padding) positions processed

    def match_token_scale(self, item_embeddings: torch.Tensor) -> None:
        """Rescale item_proj to the LLM's token-embedding norm (item_embeddings: [n, D] real rows)."""
        match_token_scale(self.item_proj, self.llm, item_embeddings)

    def forward(self, item_embs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """item_embs [B, T, D], mask [B, T] -> h [B, H] (float32)."""
        soft = self.item_proj(item_embs.to(self.item_proj.weight.dtype))  # [B, T, H]
        inputs, attn, position_ids = self.prompt(self.llm.get_input_embeddings(), soft, mask)  # [B, L, H], [B, L]
        out = transformer_body(self.llm)(
            inputs_embeds=inputs, attention_mask=attn, position_ids=position_ids, use_cache=False
        )
        hidden = out.last_hidden_state  # [B, L, H]
        self.llm_passes += int(item_embs.shape[0])
        self.llm_tokens += int(attn.sum())
        return pool(hidden, attn, self.pooling).float()  # [B, H]

    @torch.no_grad()
    def prefix_state(self) -> tuple[Any, torch.Tensor] | None:
        """Run the prompt prefix once: (its key/value cache, hidden states [1, P, H]).

        A row without padding starts with exactly these P positions, so it can continue from the
        cache instead of recomputing them. None when there is no prefix or the model returns no cache.
        """
        prefix_ids = self.prompt.prefix_ids  # [P]
        if prefix_ids.numel() == 0:
            return None
        embed = self.llm.get_input_embeddings()
        prefix = embed(prefix_ids).to(embed.weight.dtype).unsqueeze(0)  # [1, P, H]
        P = prefix.shape[1]
        from transformers import DynamicCache

        body = transformer_body(self.llm)
        name = _cache_argument(body)
        out = body(
            inputs_embeds=prefix,
            attention_mask=torch.ones(1, P, dtype=torch.long, device=prefix.device),
            position_ids=torch.arange(P, device=prefix.device)[None],
            use_cache=True,
            **{name: DynamicCache()},
        )
        cache = getattr(out, name, None)
        if not hasattr(cache, "batch_repeat_interleave"):  # no cache (e.g. checkpointing): full prompts
            return None
        self.llm_tokens += P
        return cache, out.last_hidden_state

    @torch.no_grad()
    def forward_after_prefix(self, item_embs: torch.Tensor, state: tuple[Any, torch.Tensor]) -> torch.Tensor:
        """Like `forward` for rows with every item real (no padding), continuing from `prefix_state()`.

        item_embs [B, T, D] -> h [B, H] (float32). Only the T items and the S suffix tokens go through the LLM.
        """
        cache, prefix_hidden = state  # cache of P positions (batch 1), prefix_hidden [1, P, H]
        B, T, _ = item_embs.shape
        embed = self.llm.get_input_embeddings()
        soft = self.item_proj(item_embs.to(self.item_proj.weight.dtype)).to(embed.weight.dtype)  # [B, T, H]
        suffix = embed(self.prompt.suffix_ids).to(embed.weight.dtype)  # [S, H]
        tail = torch.cat([soft, suffix.unsqueeze(0).expand(B, -1, -1)], dim=1)  # [B, T + S, H]
        P = prefix_hidden.shape[1]
        L = P + tail.shape[1]
        rows_cache = copy.deepcopy(cache)  # the forward appends to the cache it is given
        rows_cache.batch_repeat_interleave(B)
        device = tail.device
        body = transformer_body(self.llm)
        out = body(
            inputs_embeds=tail,
            attention_mask=torch.ones(B, L, dtype=torch.long, device=device),
            position_ids=torch.arange(P, L, device=device).expand(B, -1),
            use_cache=True,
            **{_cache_argument(body): rows_cache},
        )
        hidden = torch.cat(
            [prefix_hidden.to(out.last_hidden_state.dtype).expand(B, -1, -1), out.last_hidden_state], dim=1
        )  # [B, L, H]
        self.llm_passes += B
        self.llm_tokens += B * tail.shape[1]
        return pool(hidden, torch.ones(B, L, dtype=torch.long, device=device), self.pooling).float()  # [B, H]


def _cache_argument(body: nn.Module) -> str:
    """Name of the key/value-cache argument (and output field) of `body.forward`.

    transformers 5 renamed `past_key_values` to `cache` and warns (FutureWarning) on the old
    name; older releases and remote-code models only know `past_key_values`.
    """
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


class ReconstructionModel(nn.Module):
    """LLMSequenceEncoder + softmax head over K groups."""

    def __init__(self, encoder: LLMSequenceEncoder, k: int):
        super().__init__()
        self.encoder = encoder
        self.k = k
        self.head = nn.Linear(encoder.hidden, k)  # W, b of Eq. 2

    def forward(self, item_embs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """item_embs [B, T, D], mask [B, T] -> (h_u [B, H], probs [B, K]), both float32."""
        h = self.encoder(item_embs, mask)  # [B, H]
        return h, self.group_probs(h)

    def group_probs(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, H] -> softmax(W h + b) [B, K], float32 (Eq. 2)."""
        return torch.softmax(self.head(h.to(self.head.weight.dtype)).float(), dim=-1)

    @torch.no_grad()
    def encode_items(
        self,
        item_embs: torch.Tensor,
        batch_size: int = 64,
        autocast_bf16: bool = False,
        progress: bool = True,
        cache_prefix: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each item as a one-item user (T = 1): item_embs [N, D] -> (emb [N, H], probs [N, K]) on CPU, float32.

        This is stage 2's "feed each item into the LLM": same prompt, same projection, same
        pooling as training. Runs without gradients; bitsandbytes layers stay in train mode.
        With `cache_prefix` the prompt prefix, the same for every item, is run once and its
        key/value cache reused, so each item costs 1 + S positions instead of P + 1 + S.
        """
        device = self.head.weight.device
        embs, probs = [], []
        with (
            quantized_safe_eval(self),
            torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_bf16),
        ):
            state = self.encoder.prefix_state() if cache_prefix else None
            for start in tqdm(
                range(0, item_embs.shape[0], batch_size), desc="encode items", disable=not progress, leave=False
            ):
                x = item_embs[start : start + batch_size].to(device).unsqueeze(1)  # [b, 1, D]
                if state is not None:
                    h = self.encoder.forward_after_prefix(x, state)  # [b, H]
                    p = self.group_probs(h)  # [b, K]
                else:
                    h, p = self(x, torch.ones(x.shape[0], 1, dtype=torch.long, device=device))
                embs.append(h.float().cpu())
                probs.append(p.float().cpu())
        return torch.cat(embs), torch.cat(probs)
