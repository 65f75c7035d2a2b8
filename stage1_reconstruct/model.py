"""The stage 1 model: an LLM reads projected item embeddings inside a text prompt and
predicts the user's distribution over K latent item groups.

    h_u   = pool(LLM([prefix ; item_proj(e_1) .. item_proj(e_n) ; "Response:"]))   (Eq. 1)
    p_hat = softmax(W h_u + b)                                                      (Eq. 2)

With item text (`Stage1Config.item_text`, beyond the paper; `use_item_text`) item i is its title
tokens followed by item_proj(e_i); the forward then needs the item ids to look the titles up.

`LLMSequenceEncoder` (LLM + projection + prompt + pooling) is shared: stage 1 puts a group
head on it, the instance-level baseline an item head. Stage 2 calls
`ReconstructionModel.encode_items` (the same forward with one item per "virtual user").
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tslrec.core.precision import autocast, resolve_precision
from tslrec.llm.loading import hidden_size, quantized_safe_eval, transformer_body
from tslrec.llm.packing import pack_tails, packed_attention_mask
from tslrec.llm.pooling import pool
from tslrec.llm.soft_prompt import ItemTokens, SoftPromptBuilder, match_token_scale

from .config import HEAD_NORMS, Stage1Config


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
        self.pack_tokens = 0  # > 0: prompts after the shared prefix go packed into rows of this many positions
        self.llm_passes = 0  # sequences sent through the LLM (one per row of every forward)
        self.llm_tokens = 0  # real (non-padding) positions processed
        self.register_buffer("item_text_ids", None, persistent=False)  # [N+1, C] title tokens, with item text
        self.register_buffer("item_text_len", None, persistent=False)  # [N+1] title tokens kept per item

    @classmethod
    def from_config(
        cls, llm: nn.Module, tokenizer, item_dim: int, cfg: Stage1Config, prefix_text: str | None = None
    ) -> LLMSequenceEncoder:
        """The encoder `cfg` describes (its prompt texts, pooling and packing); prefix_text replaces cfg's prefix."""
        encoder = cls(llm, tokenizer, item_dim, prefix_text or cfg.prefix(), cfg.suffix_text, cfg.pooling)
        encoder.pack_tokens = cfg.pack_tokens
        return encoder

    def why_not_packed(self) -> str | None:
        """Why prompts cannot go packed after a shared prefix with this LLM and prompt (None: they can)."""
        if not self.prompt.prefix_ids.numel():
            return "the prompt has no prefix text to share"
        if _checkpointing(self.llm):
            return "activation checkpointing keeps no key/value cache, so every prompt runs whole and padded"
        if not _sdpa(self.llm):
            return "the LLM's attention is not sdpa, which packing's mask needs; prompts share the prefix, padded"
        return None

    def use_item_text(self, titles: ItemTokens) -> None:
        """Show each item's title tokens right before its soft token (every forward then needs item ids)."""
        device = self.item_proj.weight.device
        self.item_text_ids = titles.ids.to(device)  # [N+1, C]
        self.item_text_len = titles.lengths.to(device)  # [N+1]

    @property
    def has_item_text(self) -> bool:
        return self.item_text_ids is not None

    def positions_per_item(self) -> np.ndarray | None:
        """[N+1] prompt positions each item takes with item text (its title tokens and its soft token); None
        without item text, where every item takes one."""
        return None if self.item_text_len is None else 1 + self.item_text_len.cpu().numpy()

    def title_tokens(
        self, item_ids: torch.Tensor | None, mask: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(title token ids [B, T, C], title mask [B, T, C]) of the items item_ids [B, T] (mask [B, T]: 1 = real);
        (None, None) without item text. C is the longest title in the batch."""
        if not self.has_item_text:
            return None, None
        if item_ids is None:
            raise ValueError("Stage1Config.item_text: this model shows item titles, so pass item_ids [B, T]")
        lengths = self.item_text_len[item_ids] * mask.to(self.item_text_len.dtype)  # [B, T]
        C = int(lengths.max()) if lengths.numel() else 0
        ids = self.item_text_ids[item_ids][..., :C]  # [B, T, C]
        words = torch.arange(C, device=ids.device).view(1, 1, C) < lengths.unsqueeze(-1)  # [B, T, C]
        return ids, words.long()

    def build_prompt(
        self, item_embs: torch.Tensor, mask: torch.Tensor, item_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """item_embs [B, T, D], mask [B, T] (item_ids [B, T] with item text) -> the packed prompt
        (inputs_embeds [B, L, H], attention_mask [B, L], position_ids [B, L]) of `SoftPromptBuilder`."""
        soft = self.item_proj(item_embs.to(self.item_proj.weight.dtype))  # [B, T, H]
        text_ids, text_mask = self.title_tokens(item_ids, mask)  # [B, T, C] each, or None
        return self.prompt(self.llm.get_input_embeddings(), soft, mask, text_ids, text_mask)

    def match_token_scale(self, item_embeddings: torch.Tensor) -> None:
        """Rescale item_proj to the LLM's token-embedding norm (item_embeddings: [n, D] real rows)."""
        match_token_scale(self.item_proj, self.llm, item_embeddings)

    def forward(
        self, item_embs: torch.Tensor, mask: torch.Tensor, item_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """item_embs [B, T, D], mask [B, T] -> h [B, H] (float32). item_ids [B, T]: needed with item text only.

        The prompt prefix is the same in every row: it goes through the LLM once per call, and every row continues
        from its keys and values, gradients included (`shared_prefix_forward`). That is the function of
        `full_forward`, which runs each row's whole prompt, at fewer positions; `full_forward` is used where no
        key/value cache is kept (activation checkpointing) or there is no prefix."""
        if self.prompt.prefix_ids.numel() and not _checkpointing(self.llm):
            h = self.shared_prefix_forward(item_embs, mask, item_ids)
            if h is not None:
                return h
        return self.full_forward(item_embs, mask, item_ids)

    def full_forward(
        self, item_embs: torch.Tensor, mask: torch.Tensor, item_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Like `forward`, with each row's whole prompt (prefix included) through the LLM."""
        inputs, attn, position_ids = self.build_prompt(item_embs, mask, item_ids)  # [B, L, H], [B, L], [B, L]
        out = transformer_body(self.llm)(
            inputs_embeds=inputs, attention_mask=attn, position_ids=position_ids, use_cache=False
        )
        hidden = out.last_hidden_state  # [B, L, H]
        self.llm_passes += int(item_embs.shape[0])
        self.llm_tokens += int(attn.sum())
        return pool(hidden, attn, self.pooling).float()  # [B, H]

    def shared_prefix_forward(
        self, item_embs: torch.Tensor, mask: torch.Tensor, item_ids: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Like `forward`: the prefix once ([1, P]), then every row's items and suffix ([B, M + S], right-padded)
        attending to the prefix's keys and values, repeated over the rows. None if the model keeps no cache."""
        state = self._run_prefix()
        if state is None:
            return None
        cache, prefix_hidden = state  # cache of P positions (batch 1), prefix_hidden [1, P, H]
        B, P = item_embs.shape[0], prefix_hidden.shape[1]
        soft = self.item_proj(item_embs.to(self.item_proj.weight.dtype))  # [B, T, H]
        text_ids, text_mask = self.title_tokens(item_ids, mask)  # [B, T, C] each, or None
        tail, tail_mask = self.prompt.tail(self.llm.get_input_embeddings(), soft, mask, text_ids, text_mask)
        attn = torch.cat([torch.ones(B, P, dtype=torch.long, device=tail.device), tail_mask], dim=1)  # [B, P + M + S]
        body = transformer_body(self.llm)
        if self.pack_tokens > 0 and _sdpa(self.llm):
            tail_hidden = self._packed_tails(body, cache, tail, tail_mask, P)  # [B, M + S, H]
        else:
            cache.batch_repeat_interleave(B)  # differentiable: each row's gradient flows back into the one prefix pass
            tail_hidden = body(
                inputs_embeds=tail,
                attention_mask=attn,
                position_ids=P + (tail_mask.cumsum(dim=1) - 1).clamp(min=0),  # [B, M + S]
                use_cache=True,
                **{_cache_argument(body): cache},
            ).last_hidden_state
        hidden = torch.cat(
            [prefix_hidden.to(tail_hidden.dtype).expand(B, -1, -1), tail_hidden], dim=1
        )  # [B, P + M + S, H]
        self.llm_passes += B
        self.llm_tokens += int(tail_mask.sum())
        return pool(hidden, attn, self.pooling).float()  # [B, H]

    def _packed_tails(
        self, body: nn.Module, cache: Any, tail: torch.Tensor, tail_mask: torch.Tensor, P: int
    ) -> torch.Tensor:
        """The tails tail [B, M', H] (right-padded, tail_mask [B, M']) through the LLM packed into rows of about
        `pack_tokens` positions after the prefix's cache, returned unpacked: hidden states [B, M', H], zero at
        padding. Each tail sees the prefix and itself only (`packed_attention_mask`), so it gets the hidden states
        of its own padded row."""
        B, M, H = tail.shape
        real = tail_mask.bool()  # [B, M']: real positions come first in every row
        packed = pack_tails(tail_mask.sum(dim=1).cpu(), self.pack_tokens)
        device = tail.device
        source = packed.source.to(device)  # [R, Lr]
        flat = torch.cat([tail[real], tail.new_zeros(1, H)])  # [N + 1, H]: the real tokens in order, then a zero
        inputs = flat[source]  # [R, Lr, H] (-1 reads the zero row)
        cache.batch_repeat_interleave(packed.rows)  # differentiable: every row's gradient flows back into the prefix
        out = body(
            inputs_embeds=inputs,
            attention_mask=packed_attention_mask(packed, P).to(device),  # [R, 1, Lr, P + Lr]
            position_ids=P + packed.position.to(device),  # [R, Lr]
            use_cache=True,
            **{_cache_argument(body): cache},
        ).last_hidden_state  # [R, Lr, H]
        keep = source >= 0  # [R, Lr]
        flat_out = out.new_zeros(int(real.sum()), H).index_put((source[keep],), out[keep])  # [N, H]
        return out.new_zeros(B, M, H).index_put((real,), flat_out)  # [B, M', H]

    @torch.no_grad()
    def prefix_state(self) -> tuple[Any, torch.Tensor] | None:
        """Run the prompt prefix once, without gradients: (its key/value cache, hidden states [1, P, H]).

        A row without padding starts with exactly these P positions, so it can continue from the
        cache instead of recomputing them. None when there is no prefix or the model returns no cache.
        """
        return self._run_prefix()

    def _run_prefix(self) -> tuple[Any, torch.Tensor] | None:
        """The prefix through the LLM (with gradients where enabled): (key/value cache, hidden states [1, P, H]),
        or None without a prefix or a cache."""
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
    def forward_after_prefix(
        self, item_embs: torch.Tensor, state: tuple[Any, torch.Tensor], item_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Like `forward` for rows with every item real (no padding), continuing from `prefix_state()`.

        item_embs [B, T, D] -> h [B, H] (float32). Only the T items and the S suffix tokens go through the LLM.
        With item text (item_ids [B, T]) the items' title tokens go too, and every row must hold the same
        number of them (`ReconstructionModel.encode_items` batches items of one title length), so no row is padded.
        """
        cache, prefix_hidden = state  # cache of P positions (batch 1), prefix_hidden [1, P, H]
        B, T, _ = item_embs.shape
        embed = self.llm.get_input_embeddings()
        soft = self.item_proj(item_embs.to(self.item_proj.weight.dtype)).to(embed.weight.dtype)  # [B, T, H]
        if self.has_item_text:
            soft = self._titled_items(embed, soft, item_ids)  # [B, T + title tokens, H]
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

    def _titled_items(self, embed: nn.Module, soft: torch.Tensor, item_ids: torch.Tensor | None) -> torch.Tensor:
        """soft [B, T, H] of unpadded rows -> [B, M, H]: each item's title tokens, then its soft vector, in order.
        Every row must have the same number M of real positions."""
        B, T, H = soft.shape
        ones = torch.ones(B, T, dtype=torch.long, device=soft.device)
        text_ids, text_mask = self.title_tokens(item_ids, ones)  # [B, T, C] each
        block, real = self.prompt.item_block(embed, soft, ones, text_ids, text_mask)  # [B, T * (C + 1), H], [B, .]
        counts = real.sum(dim=1)  # [B]
        if not bool((counts == counts[0]).all()):
            raise ValueError("forward_after_prefix: rows with item text must hold equally many title tokens")
        order = torch.argsort(real, dim=1, stable=True)  # real positions last, in order
        block = torch.gather(block, 1, order.unsqueeze(-1).expand(-1, -1, H))  # [B, T * (C + 1), H]
        return block[:, block.shape[1] - int(counts[0]) :]  # [B, M, H]


def _cache_argument(body: nn.Module) -> str:
    """Name of the key/value-cache argument (and output field) of `body.forward`.

    transformers 5 renamed `past_key_values` to `cache` and warns (FutureWarning) on the old
    name; older releases and remote-code models only know `past_key_values`.
    """
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def _sdpa(llm: nn.Module) -> bool:
    """Whether `llm` runs scaled-dot-product attention, which takes the boolean 4-D mask that packing needs."""
    return getattr(getattr(llm, "config", None), "_attn_implementation", None) == "sdpa"


def _checkpointing(llm: nn.Module) -> bool:
    """Whether activation checkpointing is on in `llm` (it keeps no key/value cache while training)."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in llm.modules())


class ReconstructionModel(nn.Module):
    """LLMSequenceEncoder + softmax head over K groups. head_norm 'rms' divides the head's input by its root mean
    square (Stage1Config.head_norm), so the head sees the same scale whatever the LLM."""

    def __init__(self, encoder: LLMSequenceEncoder, k: int, head_norm: str = "none"):
        super().__init__()
        if head_norm not in HEAD_NORMS:
            raise ValueError(f"Stage1Config.head_norm: unknown '{head_norm}'; use one of {', '.join(HEAD_NORMS)}")
        self.encoder = encoder
        self.k = k
        self.head_norm = head_norm
        self.head = nn.Linear(encoder.hidden, k)  # W, b of Eq. 2

    def forward(
        self, item_embs: torch.Tensor, mask: torch.Tensor, item_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """item_embs [B, T, D], mask [B, T] -> (h_u [B, H], probs [B, K]), both float32.
        item_ids [B, T]: the items' ids, needed when the encoder shows item titles (ignored otherwise)."""
        h = self.encoder(item_embs, mask, item_ids)  # [B, H]
        return h, self.group_probs(h)

    def group_probs(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, H] -> softmax(W h + b) [B, K], float32 (Eq. 2); with head_norm 'rms', h / rms(h) instead of h."""
        if self.head_norm == "rms":
            h = h.float() * torch.rsqrt(h.float().pow(2).mean(dim=-1, keepdim=True) + 1e-6)  # [B, H]
        return torch.softmax(self.head(h.to(self.head.weight.dtype)).float(), dim=-1)

    @torch.no_grad()
    def encode_items(
        self,
        item_embs: torch.Tensor,
        batch_size: int = 64,
        precision: str = "float32",
        progress: bool = True,
        cache_prefix: bool = True,
        item_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each item as a one-item user (T = 1): item_embs [N, D] -> (emb [N, H], probs [N, K]) on CPU, float32.

        This is stage 2's "feed each item into the LLM": same prompt, same projection, same
        pooling as training. Runs without gradients; bitsandbytes layers stay in train mode.
        With `cache_prefix` the prompt prefix, the same for every item, is run once and its
        key/value cache reused, so each item costs 1 + S positions instead of P + 1 + S.
        item_ids [N]: the items' ids, needed when the encoder shows item titles; then, with the cache,
        items are batched by title length (a row is never padded) and returned in their given order.
        """
        device = self.head.weight.device
        n = item_embs.shape[0]
        embs = torch.zeros(n, self.encoder.hidden)  # [N, H]
        probs = torch.zeros(n, self.k)  # [N, K]
        with quantized_safe_eval(self), autocast(device, resolve_precision(precision, device)):
            state = self.encoder.prefix_state() if cache_prefix else None
            batches = self._item_batches(n, batch_size, item_ids, by_title=state is not None)
            for rows in tqdm(batches, desc="encode items", disable=not progress, leave=False):
                x = item_embs[rows].to(device).unsqueeze(1)  # [b, 1, D]
                ids = None if item_ids is None else item_ids[rows].to(device).unsqueeze(1)  # [b, 1]
                if state is not None:
                    h = self.encoder.forward_after_prefix(x, state, ids)  # [b, H]
                    p = self.group_probs(h)  # [b, K]
                else:  # every item's whole prompt: `forward` would share the prefix within the batch
                    h = self.encoder.full_forward(x, torch.ones(x.shape[0], 1, dtype=torch.long, device=device), ids)
                    p = self.group_probs(h)  # [b, K]
                embs[rows] = h.float().cpu()
                probs[rows] = p.float().cpu()
        return embs, probs

    def _item_batches(
        self, n: int, batch_size: int, item_ids: torch.Tensor | None, by_title: bool
    ) -> list[slice] | list[torch.Tensor]:
        """Rows of each batch of `encode_items`: consecutive slices (views, as before item text existed), or
        (`by_title` with item text) index tensors grouping items by title length, so every row of a batch has as
        many title tokens."""
        if not (by_title and self.encoder.has_item_text):
            return [slice(start, start + batch_size) for start in range(0, n, batch_size)]
        if item_ids is None:
            raise ValueError("Stage1Config.item_text: this model shows item titles, so pass item_ids [N]")
        lengths = self.encoder.item_text_len.cpu()[item_ids.cpu()]  # [N]
        order = torch.arange(n)
        return [rows for value in lengths.unique() for rows in order[lengths == value].split(batch_size)]
