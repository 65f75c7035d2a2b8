"""The stage 1 model: an LLM reads projected item embeddings inside a text prompt and
predicts the user's distribution over K latent item groups.

    h_u   = pool(LLM([prefix ; item_proj(e_1) .. item_proj(e_n) ; "Response:"]))   (Eq. 1)
    p_hat = softmax(W h_u + b)                                                      (Eq. 2)

`LLMSequenceEncoder` (LLM + projection + prompt + pooling) is shared: stage 1 puts a group
head on it, the instance-level baseline an item head. Stage 2 calls
`ReconstructionModel.encode_items` (the same forward with one item per "virtual user").
"""
from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from .llm_loading import hidden_size, quantized_safe_eval, transformer_body
from .pooling import pool
from .soft_prompt import SoftPromptBuilder


class LLMSequenceEncoder(nn.Module):
    """Item embeddings [B, T, D] + mask [B, T] -> one LLM pass per row -> pooled hidden state [B, H]."""

    def __init__(self, llm: nn.Module, tokenizer, item_dim: int, prefix_text: str, suffix_text: str,
                 pooling: str = "last"):
        super().__init__()
        self.llm = llm  # possibly peft-wrapped; LoRA layers live inside it
        self.hidden = hidden_size(llm)
        self.item_proj = nn.Linear(item_dim, self.hidden)  # maps item embeddings into the LLM's token space
        self.prompt = SoftPromptBuilder(tokenizer, prefix_text, suffix_text)
        self.pooling = pooling
        self.llm_passes = 0  # sequences sent through the LLM (one per row of every forward)
        self.llm_tokens = 0  # real (non-padding) positions processed

    @torch.no_grad()
    def match_token_scale(self, item_embeddings: torch.Tensor) -> None:
        """Rescale item_proj so projected items have the RMS norm of the LLM's token embeddings.

        A fresh Linear maps embeddings of arbitrary scale to vectors the LLM has never seen;
        matching the norm of real tokens gives the LoRA layers a sensible starting point.
        item_embeddings: [N, D] (a sample of real rows, padding excluded).
        """
        tokens = self.llm.get_input_embeddings().weight.float()  # [V, H]
        token_rms = tokens.norm(dim=1).pow(2).mean().sqrt()
        proj = self.item_proj(item_embeddings.to(self.item_proj.weight)).float()  # [N, H]
        proj_rms = proj.norm(dim=1).pow(2).mean().sqrt().clamp(min=1e-8)
        scale = (token_rms / proj_rms).to(self.item_proj.weight.dtype)
        self.item_proj.weight.mul_(scale)
        self.item_proj.bias.mul_(scale)

    def forward(self, item_embs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """item_embs [B, T, D], mask [B, T] -> h [B, H] (float32)."""
        soft = self.item_proj(item_embs.to(self.item_proj.weight.dtype))  # [B, T, H]
        inputs, attn, position_ids = self.prompt(self.llm.get_input_embeddings(), soft, mask)  # [B, L, H], [B, L]
        out = transformer_body(self.llm)(inputs_embeds=inputs, attention_mask=attn, position_ids=position_ids,
                                         use_cache=False)
        hidden = out.last_hidden_state  # [B, L, H]
        self.llm_passes += int(item_embs.shape[0])
        self.llm_tokens += int(attn.sum())
        return pool(hidden, attn, self.pooling).float()  # [B, H]


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
        logits = self.head(h.to(self.head.weight.dtype)).float()  # [B, K]
        return h, torch.softmax(logits, dim=-1)

    @torch.no_grad()
    def encode_items(self, item_embs: torch.Tensor, batch_size: int = 64, autocast_bf16: bool = False,
                     progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Each item as a one-item user (T = 1): item_embs [N, D] -> (emb [N, H], probs [N, K]) on CPU, float32.

        This is stage 2's "feed each item into the LLM": same prompt, same projection, same
        pooling as training. Runs without gradients; bitsandbytes layers stay in train mode.
        """
        device = self.head.weight.device
        embs, probs = [], []
        with quantized_safe_eval(self):
            for start in tqdm(range(0, item_embs.shape[0], batch_size), desc="encode items",
                              disable=not progress, leave=False):
                x = item_embs[start:start + batch_size].to(device).unsqueeze(1)  # [b, 1, D]
                mask = torch.ones(x.shape[0], 1, dtype=torch.long, device=device)  # [b, 1]
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                    h, p = self(x, mask)
                embs.append(h.float().cpu())
                probs.append(p.float().cpu())
        return torch.cat(embs), torch.cat(probs)
