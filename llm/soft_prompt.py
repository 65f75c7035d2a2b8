"""Pack text tokens and soft vectors into one left-padded `inputs_embeds` batch.

Layout of one row (Eq. 1 of the TSLRec paper):

    [pad ... pad] [prefix text tokens] [soft vector 1 .. soft vector n] [suffix text tokens]

With item text (stage 1's `--item-text`, beyond the paper) each item is its title tokens, then its
soft vector:

    [pad ... pad] [prefix] [title 1 tokens, soft vector 1] .. [title n tokens, soft vector n] [suffix]

Each row keeps only its valid soft vectors (mask == 1) and title tokens in their original order, and
the whole packed prompt is left-padded, so the LAST position of every row is the last suffix
token ("Response:"). That makes last-token pooling a plain `hidden[:, -1]` and keeps the
padding out of every real token's causal context. `position_ids` count real tokens from 0.
Shared by stage 1 and Lite-LLM4Rec.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tslrec.core.artifacts import torch_threads


class SoftPromptBuilder(nn.Module):
    """Holds the tokenised prefix/suffix and packs them around a block of soft vectors."""

    def __init__(
        self, tokenizer, prefix_text: str, suffix_text: str, add_bos: bool = True, require_suffix: bool = True
    ):
        super().__init__()
        prefix_ids = tokenizer(prefix_text, add_special_tokens=False)["input_ids"]
        bos = tokenizer.bos_token_id
        if add_bos and bos is not None and (not prefix_ids or prefix_ids[0] != bos):
            prefix_ids = [bos] + prefix_ids
        suffix_ids = tokenizer(suffix_text, add_special_tokens=False)["input_ids"]
        if require_suffix and not suffix_ids:  # Lite-LLM4Rec mean-pools items and passes require_suffix=False
            raise ValueError("suffix_text must tokenise to at least one token: its last token is the pooled position")
        self.prefix_text = prefix_text  # kept for configs/logs
        self.suffix_text = suffix_text
        self.register_buffer("prefix_ids", torch.tensor(prefix_ids, dtype=torch.long), persistent=False)  # [P]
        self.register_buffer("suffix_ids", torch.tensor(suffix_ids, dtype=torch.long), persistent=False)  # [S]

    @property
    def num_text_tokens(self) -> int:
        """P + S: text positions added to every prompt."""
        return int(self.prefix_ids.numel() + self.suffix_ids.numel())

    def item_block(
        self,
        embed: nn.Module,
        soft: torch.Tensor,
        soft_mask: torch.Tensor,
        text_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The item part of the prompt, unpacked: (vectors [B, M, H], mask [B, M]).

        soft [B, T, H], soft_mask [B, T]. Without text M = T (the soft vectors). With text_ids [B, T, C] and
        text_mask [B, T, C] (1 = a real title token) every item is its C title slots then its soft vector,
        M = T * (C + 1); a padded item's title slots are padding too.
        """
        weight_dtype = embed.weight.dtype
        if text_ids is None:
            return soft.to(weight_dtype), soft_mask.to(device=soft.device, dtype=torch.long)
        B, T, H = soft.shape
        C = text_ids.shape[2]
        words = embed(text_ids).to(weight_dtype)  # [B, T, C, H]
        block = torch.cat([words, soft.to(weight_dtype).unsqueeze(2)], dim=2).reshape(B, T * (C + 1), H)
        item_real = soft_mask.to(device=soft.device, dtype=torch.long).unsqueeze(2)  # [B, T, 1]
        words_real = text_mask.to(device=soft.device, dtype=torch.long) * item_real  # [B, T, C]
        mask = torch.cat([words_real, item_real], dim=2).reshape(B, T * (C + 1))  # [B, M]
        return block, mask

    def tail(
        self,
        embed: nn.Module,
        soft: torch.Tensor,
        soft_mask: torch.Tensor,
        text_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt after the prefix, right-padded: (inputs_embeds [B, M', H], mask [B, M']), each row its real
        item positions (see `item_block`) then the S suffix tokens, M' the longest row's; for rows that continue
        from the prefix's key/value cache at positions P onwards."""
        B, _, H = soft.shape
        items, items_mask = self.item_block(embed, soft, soft_mask, text_ids, text_mask)  # [B, M, H], [B, M]
        suffix = embed(self.suffix_ids).to(items.dtype)  # [S, H]
        full = torch.cat([items, suffix.unsqueeze(0).expand(B, -1, H)], dim=1)  # [B, M + S, H]
        ones_s = torch.ones(B, suffix.shape[0], dtype=torch.long, device=soft.device)
        mask = torch.cat([items_mask, ones_s], dim=1)  # [B, M + S]
        order = torch.argsort(1 - mask, dim=1, stable=True)  # real positions first, in order
        mask = torch.gather(mask, 1, order)  # [B, M + S]
        inputs = torch.gather(full, 1, order.unsqueeze(-1).expand(-1, -1, H))  # [B, M + S, H]
        keep = int(mask.sum(dim=1).max())  # columns that are padding in every row are dropped
        inputs, mask = inputs[:, :keep], mask[:, :keep]
        return inputs * mask.unsqueeze(-1).to(inputs.dtype), mask  # padding vectors zeroed

    def forward(
        self,
        embed: nn.Module,
        soft: torch.Tensor,
        soft_mask: torch.Tensor,
        text_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Build (inputs_embeds [B, L, H], attention_mask [B, L], position_ids [B, L]), L = P + T + S.

        embed: the LLM's input embedding layer; soft: [B, T, H]; soft_mask: [B, T] (1 = real vector).
        Rows with no valid soft vector are allowed (text only). With item text (text_ids [B, T, C],
        text_mask [B, T, C]; see `item_block`) each item's title tokens come right before its soft vector,
        and L is the longest row's real length (columns that are padding in every row are dropped).
        """
        B, T, H = soft.shape
        device = soft.device
        weight_dtype = embed.weight.dtype
        prefix = embed(self.prefix_ids).to(weight_dtype)  # [P, H]
        suffix = embed(self.suffix_ids).to(weight_dtype)  # [S, H]
        P, S = prefix.shape[0], suffix.shape[0]
        items, items_mask = self.item_block(embed, soft, soft_mask, text_ids, text_mask)  # [B, M, H], [B, M]
        full = torch.cat(
            [prefix.unsqueeze(0).expand(B, P, H), items, suffix.unsqueeze(0).expand(B, S, H)], dim=1
        )  # [B, L, H]
        ones_p = torch.ones(B, P, dtype=torch.long, device=device)
        ones_s = torch.ones(B, S, dtype=torch.long, device=device)
        mask = torch.cat([ones_p, items_mask, ones_s], dim=1)  # [B, L]
        # Stable sort on the mask moves padding (0) to the front and keeps real tokens in order.
        order = torch.argsort(mask, dim=1, stable=True)  # [B, L]
        mask = torch.gather(mask, 1, order)  # [B, L]
        inputs = torch.gather(full, 1, order.unsqueeze(-1).expand(B, full.shape[1], H))  # [B, L, H]
        inputs = inputs * mask.unsqueeze(-1).to(inputs.dtype)  # zero the padding vectors
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)  # [B, L]
        if text_ids is not None:  # title slots leave many all-padding columns: keep the longest row's length
            keep = int(mask.sum(dim=1).max())
            inputs, mask, position_ids = inputs[:, -keep:], mask[:, -keep:], position_ids[:, -keep:]
        return inputs, mask, position_ids


@dataclass
class ItemTokens:
    """Every item's title, tokenised once: gather rows by item id to put titles into prompts."""

    ids: torch.Tensor  # [N+1, C] long: item i's first lengths[i] title tokens, then 0; row 0 = padding (no text)
    lengths: torch.Tensor  # [N+1] long: title tokens kept (at most `cap`); 0 for row 0 and empty titles
    untruncated: torch.Tensor  # [N+1] long: title tokens before the cap
    cap: int  # most title tokens kept per item

    @property
    def num_items(self) -> int:
        return int(self.ids.shape[0] - 1)


def tokenize_item_texts(tokenizer, texts: list[str], cap: int) -> ItemTokens:
    """texts[i] = item i's title ([0] = padding, never shown) -> its tokens without special tokens, cut to `cap`."""
    if cap < 1:
        raise ValueError(f"cap={cap}: need at least 1 title token per item")
    tokenized = tokenizer(list(texts[1:]), add_special_tokens=False)["input_ids"] if len(texts) > 1 else []
    rows = [[]] + [list(t) for t in tokenized]
    untruncated = torch.tensor([len(r) for r in rows], dtype=torch.long)  # [N+1]
    lengths = untruncated.clamp(max=cap)  # [N+1]
    ids = torch.zeros(len(rows), max(int(lengths.max()), 1), dtype=torch.long)  # [N+1, C]
    for i, r in enumerate(rows):
        if r:
            ids[i, : int(lengths[i])] = torch.as_tensor(r[:cap], dtype=torch.long)
    return ItemTokens(ids, lengths, untruncated, cap)


def left_pad_ids(sequences: list, max_items: int, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Last `max_items` ids of each sequence, left-padded: (ids [B, T], mask [B, T]), T = max length kept."""
    kept = [list(s[-max_items:]) if max_items > 0 else [] for s in sequences]
    T = max([len(k) for k in kept] + [1])
    ids = torch.full((len(kept), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(kept), T), dtype=torch.long)
    for row, k in enumerate(kept):
        if k:
            ids[row, T - len(k) :] = torch.as_tensor(k, dtype=torch.long)
            mask[row, T - len(k) :] = 1
    return ids, mask


@torch.no_grad()
def match_token_scale(proj: nn.Linear, llm: nn.Module, sample: torch.Tensor) -> None:
    """Rescale `proj` so projected items have the RMS norm of the LLM's token embeddings.

    A fresh Linear maps embeddings of arbitrary scale to vectors the LLM has never seen; matching the
    norm of real tokens gives LoRA a sensible start. sample: [n, D] real item rows (no padding). The
    norms run on one thread: a sum over the whole vocabulary would otherwise change in its last bits
    with the thread count, and so would every later step of training.
    """
    with torch_threads(1):
        tokens = llm.get_input_embeddings().weight.float()  # [V, H]
        token_rms = tokens.norm(dim=1).pow(2).mean().sqrt()
        projected = proj(sample.to(proj.weight)).float()  # [n, H]
        scale = token_rms / projected.norm(dim=1).pow(2).mean().sqrt().clamp(min=1e-8)
        proj.weight.mul_(scale.to(proj.weight.dtype))
        proj.bias.mul_(scale.to(proj.bias.dtype))
