"""Item LLM (paper Eq. 1-3): each item's text -> token states -> masked mean -> one vector per item.

    tokens_i = Tokenize(text_i)                 (Eq. 1)
    H_i      = ItemLLM(tokens_i)   [T_i, D]     (Eq. 2)
    e_i      = mean_t H_i[t]       [D]          (Eq. 3, padding excluded)

The vectors are computed once per (dataset, item text, model, max_tokens) and cached in
the tslrec item-embedding export format (`formats.item_table`), rows indexed by
internal item id, row 0 = padding (zeros). Any encoder or decoder works: "minilm" (default,
all-MiniLM-L6-v2), "smollm2", a local model folder, a .gguf file or a hub id.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tslrec.core.errors import InputError
from tslrec.core.modules import eval_mode
from tslrec.core.settings import check_allowed, setting
from tslrec.core.wheel_cache import cache_dir
from tslrec.data import SequenceDataset
from tslrec.formats.item_table import load_item_embeddings, save_item_embeddings
from tslrec.llm.loading import Dtype, LLMConfig, load_llm, transformer_body
from tslrec.llm.pooling import masked_mean_pool

from .loading import model_kind


@dataclass
class ItemLLMConfig:
    """How item text becomes item vectors."""

    name_or_path: str = setting(
        "minilm", "built-in name (minilm, smollm2), local folder, .gguf file or hub id", flag="--llm"
    )
    max_tokens: int = setting(64, "item text is truncated to this many tokens", at_least=1)
    batch_size: int = setting(64, "items encoded per forward pass", at_least=1)
    dtype: Dtype = setting("float32", "weight dtype of the Item LLM")
    trust_remote_code: bool = setting(
        False, "run model code shipped with a hub model; only if you trust its author", cli=False
    )

    def __post_init__(self) -> None:
        check_allowed(self)


@torch.no_grad()
def encode_texts(
    texts: list[str], llm: torch.nn.Module, tokenizer, max_tokens: int, batch_size: int, progress: bool = False
) -> torch.Tensor:
    """Masked mean of the last hidden states of each text: list of n strings -> [n, D] float32 on CPU."""
    body = transformer_body(llm)  # skips a causal LM's vocabulary head; a T5 model's encoder stack
    device = next(body.parameters()).device
    tokenizer.padding_side = "right"  # causal models: real tokens never see padding, positions start at 0
    out = []
    with eval_mode(body):
        for start in tqdm(range(0, len(texts), batch_size), desc="item LLM", disable=not progress, leave=False):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_tokens,
                return_tensors="pt",
            )
            ids = batch["input_ids"].to(device)  # [b, T]
            mask = batch["attention_mask"].to(device)  # [b, T]
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state  # [b, T, D]
            out.append(masked_mean_pool(hidden.float(), mask).cpu())  # [b, D]
    return torch.cat(out) if out else torch.zeros(0, 0)


def text_fingerprint(texts: list[str], cfg: ItemLLMConfig) -> str:
    """sha256 over the item texts and the settings that shape the vectors (cache key and check)."""
    h = hashlib.sha256()
    h.update("\x1f".join(texts).encode())
    h.update(f"\x1e{cfg.name_or_path}\x1e{cfg.max_tokens}\x1e{cfg.dtype}".encode())
    return h.hexdigest()


def default_cache_folder(dataset_name: str, dataset_hash: str, cfg: ItemLLMConfig) -> Path:
    """<cache>/lite-item-vectors/<dataset>-<hash12>-<model>-t<max_tokens>."""
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(cfg.name_or_path).name or cfg.name_or_path)[-40:]
    tag = hashlib.sha256(cfg.name_or_path.encode()).hexdigest()[:6]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset_name)[-40:]
    return cache_dir() / "lite-item-vectors" / f"{name}-{dataset_hash[:12]}-{model}-{tag}-t{cfg.max_tokens}"


def compute_item_vectors(
    item_text: list[str], cfg: ItemLLMConfig, device: torch.device | str = "cpu", progress: bool = True
) -> torch.Tensor:
    """item_text[i] for internal id i ([0] = padding) -> [N+1, D] float32, row 0 zeros."""
    llm, tokenizer = load_llm(
        LLMConfig(name_or_path=cfg.name_or_path, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code),
        kind=model_kind(cfg.name_or_path),
    )
    llm.to(device)
    vectors = encode_texts(item_text[1:], llm, tokenizer, cfg.max_tokens, cfg.batch_size, progress)  # [N, D]
    return torch.cat([torch.zeros(1, vectors.shape[1]), vectors])  # [N+1, D]


def item_vectors_for_dataset(
    ds: SequenceDataset,
    cfg: ItemLLMConfig,
    folder: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[torch.Tensor, dict]:
    """Item vectors [N+1, D] for a `SequenceDataset`, read from the cache or computed once and cached there.

    folder None: the default cache folder for this dataset, text and model (recomputed if stale).
    folder given and present: it must be an export that belongs to this dataset (else InputError);
    folder given and absent: the vectors are computed and written there.
    Returns (vectors, facts: folder, whether it was computed now, and the manifest's source).
    """
    explicit = folder is not None
    folder = Path(folder) if explicit else default_cache_folder(ds.name, ds.hash, cfg)
    if explicit and folder.exists():
        found = load_item_embeddings(folder, num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids)
        stored = found.manifest.get("source", {}).get("text_sha256")
        if stored is not None and ds.item_text is not None:
            expected = text_fingerprint(ds.item_text, ItemLLMConfig(**{**asdict(cfg), **_llm_fields(found.manifest)}))
            if stored != expected:
                raise InputError(
                    f"{folder}: field 'source.text_sha256' does not match this dataset's item text; "
                    "the vectors were computed from other text; delete the folder or drop --item-vectors"
                )
        return found.embeddings, {"folder": str(folder), "computed": False, "source": found.manifest.get("source", {})}
    if ds.item_text is None:
        raise InputError(
            f"dataset '{ds.name}': no item text; Lite-LLM4Rec encodes item text, so put a .item file "
            "with an 'item_id:token' and a 'title:token_seq' column beside the .inter or .txt (or pass --item-vectors)"
        )
    if not any(t.strip() for t in ds.item_text[1:]):
        raise InputError(f"dataset '{ds.name}': every item text is empty; fill the title column of the .item file")
    fingerprint = text_fingerprint(ds.item_text, cfg)
    if folder.exists() and not explicit:
        cached = _read_cache(folder, ds, fingerprint)
        if cached is not None:
            return cached, {"folder": str(folder), "computed": False, "source": _source(cfg, fingerprint)}
    vectors = compute_item_vectors(ds.item_text, cfg, device, progress)
    save_item_embeddings(folder, vectors, ds.item_ids, ds.name, ds.hash, source=_source(cfg, fingerprint))
    return vectors, {"folder": str(folder), "computed": True, "source": _source(cfg, fingerprint)}


def _read_cache(folder: Path, ds: SequenceDataset, fingerprint: str) -> torch.Tensor | None:
    """The default cache's vectors if complete and current, else None (they are then recomputed)."""
    try:
        found = load_item_embeddings(folder, num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids)
    except InputError:
        return None
    return found.embeddings if found.manifest.get("source", {}).get("text_sha256") == fingerprint else None


def _source(cfg: ItemLLMConfig, fingerprint: str) -> dict:
    return {
        "method": "lite-llm4rec item LLM",
        "item_llm": cfg.name_or_path,
        "pooling": "mean",
        "max_tokens": cfg.max_tokens,
        "dtype": cfg.dtype,
        "text_sha256": fingerprint,
    }


def item_config_used(cfg: ItemLLMConfig, source: dict) -> ItemLLMConfig:
    """`cfg` with the Item LLM fields of the vectors' `source` (an export's manifest source): vectors read from a
    folder were made by the model it names, whatever the flags say, and that is what a run records."""
    return replace(cfg, **_llm_fields({"source": source}))


def _llm_fields(manifest: dict) -> dict:
    """The ItemLLMConfig fields a cached export was computed with (to recompute its fingerprint)."""
    src = manifest.get("source", {})
    out = {}
    if "item_llm" in src:
        out["name_or_path"] = src["item_llm"]
    if "max_tokens" in src:
        out["max_tokens"] = int(src["max_tokens"])
    if "dtype" in src:
        out["dtype"] = src["dtype"]
    return out
