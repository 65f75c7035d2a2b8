"""The generative baseline Lite-LLM4Rec is measured against (inference cost only).

The same LLM reads the user's history written as text and is fine-tuned to write the next
item's identifier (its internal id in digits) token by token; at inference, beam search
(`transformers` generate, 20 beams) returns the top-20 identifiers. This is the decoding
scheme of generative LLM recommenders that Lite-LLM4Rec replaces with one forward pass and a
projection head. The history is written either as item titles or, as in P5 / POD, as the
items' ids (`item_ids_as_text`: the same digits the model writes as its answer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PROMPT = "A user watched, oldest first: {history}. The id of the next item they watch is"


@dataclass
class GenerativeConfig:
    """Prompt and decoding settings of the generative baseline."""

    max_history: int = 20  # most recent items written into the prompt
    num_beams: int = 20  # beam width of beam search
    top_k: int = 20  # identifiers returned per user (<= num_beams)
    item_text_chars: int = 80  # each item's text is cut to this many characters


def history_prompt(item_text: list[str], seq: list[int], cfg: GenerativeConfig) -> str:
    """The user's last `max_history` items as text, oldest first.

    item_text[i]: item i as written into the prompt (its title, or `item_ids_as_text`'s id).
    """
    titles = [item_text[i][: cfg.item_text_chars] for i in seq[-cfg.max_history :] if i > 0]
    return PROMPT.format(history="; ".join(titles))


def identifier(item: int) -> str:
    """The item's identifier as the model writes it: a space and its internal id."""
    return f" {item}"


def item_ids_as_text(num_items: int) -> list[str]:
    """Each item written as its id, the digits `identifier` makes the model write: [i] -> "i" ([0], padding -> "")."""
    return [""] + [identifier(i).strip() for i in range(1, num_items + 1)]


def prompt_lengths(tokenizer, prompts: list[str]) -> list[int]:
    """Tokens per prompt (special tokens included)."""
    return [len(ids) for ids in tokenizer(prompts)["input_ids"]]


def finetune_steps(
    llm: nn.Module,
    tokenizer,
    prompts: list[str],
    targets: list[int],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    bf16: bool = True,
) -> list[float]:
    """A few AdamW steps of next-identifier SFT (loss on the identifier tokens only). Returns the losses."""
    device = next(llm.parameters()).device
    eos = tokenizer.eos_token or ""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in llm.parameters() if p.requires_grad], lr=lr)
    llm.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(prompts), (batch_size,), generator=gen).tolist()
        rows, labels = [], []
        for i in idx:
            p = tokenizer(prompts[i])["input_ids"]
            t = tokenizer(identifier(targets[i]) + eos, add_special_tokens=False)["input_ids"]
            rows.append(p + t)
            labels.append([-100] * len(p) + t)
        width = max(len(r) for r in rows)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)  # [B, W], right-padded
        lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = llm(input_ids=ids, attention_mask=mask, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def generate_top_k(
    llm: nn.Module, tokenizer, prompts: list[str], num_items: int, cfg: GenerativeConfig, bf16: bool = True
) -> list[list[int]]:
    """Beam search -> per prompt up to `top_k` distinct valid item ids, best first (invalid strings are dropped)."""
    device = next(llm.parameters()).device
    tokenizer.padding_side = "left"  # decoder-only generation continues from the last real token
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    max_new = len(tokenizer(identifier(num_items), add_special_tokens=False)["input_ids"]) + 1  # digits + EOS
    llm.eval()
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
        out = llm.generate(
            **batch,
            num_beams=cfg.num_beams,
            num_return_sequences=cfg.top_k,
            max_new_tokens=max_new,
            do_sample=False,
            early_stopping=True,
            pad_token_id=tokenizer.pad_token_id,
        )
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    ranked = []
    for u in range(len(prompts)):
        items: list[int] = []
        for text in texts[u * cfg.top_k : (u + 1) * cfg.top_k]:
            token = text.strip().split(" ")[0] if text.strip() else ""
            if token.isdigit() and 1 <= int(token) <= num_items and int(token) not in items:
                items.append(int(token))
        ranked.append(items)
    return ranked
