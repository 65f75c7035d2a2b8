"""`tslrec lite`: Lite-LLM4Rec on any dataset with item text: item vectors -> train -> evaluate -> export.

Writes to --out:
    item_vectors/          the item vectors the model used, in the tslrec item-embedding export format
    model/                 config.json, weights.safetensors, lora/ or llm/ (see lite_llm4rec.model_io)
    per_user_test.safetensors   per-user test metric vectors (for paired tests)
    metrics.json           test metrics (full ranking, leave-one-out), validation metrics, the Recommendation LLM's
                           attention (causal | bidirectional), timing, config (last); unless --mask-history, also
                           the test metrics with the user's whole history removed from the candidates (the paper's
                           protocol) as metrics_history_masked
    checkpoint.pt          while training: resumes a killed run with the same settings (core.checkpoint); a run
                           with other settings is refused unless --force; removed once metrics.json is written
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch

from tslrec.core.artifacts import package_versions, save_tensors, use_deterministic_kernels, write_json
from tslrec.core.errors import InputError
from tslrec.core.precision import precision_record, resolved
from tslrec.core.settings import require, setting
from tslrec.data import DATASET_HELP, DataConfig, SequenceDataset, load_dataset
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.evaluation.ranking import EvalConfig
from tslrec.formats.item_table import save_item_embeddings
from tslrec.lite_llm4rec.item_llm import ItemLLMConfig, item_config_used, item_vectors_for_dataset
from tslrec.lite_llm4rec.loading import rec_llm_kind
from tslrec.lite_llm4rec.model import LiteConfig, build_lite_model
from tslrec.lite_llm4rec.model_io import save_lite_model
from tslrec.lite_llm4rec.training import LiteTrainConfig, LiteTrainResult, check_segment_len, evaluate_lite, train_lite
from tslrec.llm.loading import LLMConfig

from .history import note_at_cap, write_history
from .options import Command, TrainingRuntime, force_field, record_head, training_runtime

MAX_LEN = 20  # the paper's sampling segments hold 20 input items, so the model sees at most 20


@dataclass
class LiteJob:
    """Everything `tslrec lite` needs."""

    dataset: str = setting("", f"{DATASET_HELP}; the items need text", required=True)
    out: str | None = setting(None, "output folder (default runs/<dataset>-lite-<strategy>-s<seed>)")
    item_vectors: str | None = setting(
        None,
        (
            "export folder of item vectors: used if present (must match the dataset), else written there "
            "(default: a cache folder keyed by dataset, text and model)"
        ),
    )
    data: DataConfig = field(default_factory=lambda: DataConfig(max_len=MAX_LEN))
    item: ItemLLMConfig = field(default_factory=ItemLLMConfig, metadata={"prefix": "item-"})
    llm: LLMConfig = field(default_factory=LLMConfig)
    lite: LiteConfig = field(default_factory=LiteConfig)
    train: LiteTrainConfig = field(default_factory=LiteTrainConfig)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(batch_size=64))
    runtime: TrainingRuntime = field(default_factory=TrainingRuntime)
    force: bool = force_field()

    def __post_init__(self) -> None:
        self.runtime = training_runtime(self.runtime)
        require(
            self.llm.quantization is None, self.llm, "quantization", "not supported by Lite-LLM4Rec; leave it unset"
        )
        if self.item.trust_remote_code != self.llm.trust_remote_code:  # one switch for both LLMs
            self.item = replace(self.item, trust_remote_code=self.llm.trust_remote_code)


# metrics.json's config groups -> the LiteJob fields they record
CONFIG_GROUPS = {"data": "data", "item_llm": "item", "lite": "lite", "llm": "llm", "train": "train", "eval": "eval"}


CHECKPOINT = "checkpoint.pt"


def older_checkpoints(out: Path, force: bool) -> None:
    """An unfinished run of an older tslrec left checkpoint-<hash>.pt, which records no settings: refused with a
    one-line InputError (deleted with force) rather than resumed or silently left behind."""
    for old in sorted(out.glob("checkpoint-*.pt")):
        if not force:
            raise InputError(
                f"{old}: a checkpoint of an older tslrec, which records no settings, so resuming it could mix two "
                "configurations; to start over and discard it pass --force (force=True from Python), "
                "or write to another --out"
            )
        old.unlink()


class LiteOutcome(NamedTuple):
    """A finished Lite-LLM4Rec run: its metrics.json content and its folder."""

    record: dict
    out: Path


def run_lite(job: LiteJob) -> LiteOutcome:
    """Run the whole job; returns (the metrics.json record, output folder)."""
    start = time.perf_counter()
    rec_llm_kind(job.llm)  # a --llm that is neither a causal LM nor a text encoder stops here, before any work
    check_segment_len(job.train, job.data.max_len)  # before the item vectors and the LLM load
    ds = load_dataset(job.dataset, job.data)
    device = job.runtime.start()
    job = resolved(job, device)  # `auto` precision as it is on this device: recorded, and a resume must match it
    use_deterministic_kernels(device, warn_only=True)  # float cumsum (prefix means) has no deterministic CUDA kernel
    vectors, vector_info = item_vectors_for_dataset(ds, job.item, job.item_vectors, device, job.runtime.progress)
    job = replace(job, item=item_config_used(job.item, vector_info["source"]))  # read vectors: their own model
    out = Path(job.out or f"runs/{ds.name}-lite-{job.train.strategy}-s{job.train.seed}")
    out.mkdir(parents=True, exist_ok=True)
    older_checkpoints(out, job.force)
    checkpoint = out / CHECKPOINT
    model = build_lite_model(vectors, job.lite, job.llm, seed=job.train.seed)
    splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, job.data.max_len)
    result = train_lite(
        model,
        ds.train_sequences(),
        splits,
        job.train,
        job.data.max_len,
        device,
        job.eval,
        checkpoint=checkpoint,
        progress=job.runtime.progress,
        settings={
            "dataset": ds.hash,
            "item_vectors": vector_info["source"],
            "DataConfig": job.data,
            "ItemLLMConfig": job.item,
            "LLMConfig": job.llm,
            "LiteConfig": job.lite,
        },
        force=job.force,
    )
    write_history(out, result.history, "step", job.runtime.log_with)
    note_at_cap(str(out), result.best_step, result.steps, "step", "--epochs or --max-steps")
    save_lite_model(model, out / "model", job.lite, job.llm)
    save_item_embeddings(
        out / "item_vectors",
        model.item_vectors,
        ds.item_ids,
        ds.name,
        ds.hash,
        source={**vector_info["source"], "tuned_by_lite": job.lite.tune_item_vectors},
    )
    save_tensors(out / "per_user_test.safetensors", result.test.per_user)
    record = run_record(job, ds, result, vector_info, device, time.perf_counter() - start, model.rec.attention)
    record["dataset_source"] = str(Path(job.dataset).resolve()) if Path(job.dataset).exists() else job.dataset
    if not (job.eval.mask_history or job.eval.sampled_negatives):  # the paper's protocol too (candidates I \ I_u)
        masked = evaluate_lite(model, splits.test, replace(job.eval, mask_history=True), device)
        record["metrics_history_masked"] = {k: round(v, 6) for k, v in masked.metrics.items()}
        record["protocol_history_masked"] = masked.protocol
    write_json(out / "metrics.json", record)  # written last: its presence means the run is complete
    checkpoint.unlink(missing_ok=True)
    return LiteOutcome(record, out)


def run_record(
    job: LiteJob,
    ds: SequenceDataset,
    result: LiteTrainResult,
    vector_info: dict,
    device: torch.device,
    wall_seconds: float,
    attention: str,
) -> dict:
    """The metrics.json / benchmark record of one run (attention: the Recommendation LLM's, causal | bidirectional)."""
    train_cfg, config = job.train, {group: asdict(getattr(job, name)) for group, name in CONFIG_GROUPS.items()}
    return {
        **record_head(ds.name, "lite-llm4rec", train_cfg.strategy, train_cfg.seed, result.test, result.valid),
        "attention": attention,
        "negatives": train_cfg.negatives,  # the training objective: all items, or the paper's unseen ones
        "best_step": result.best_step,
        "best_at_cap": result.best_step >= result.steps,  # still improving when the budget ended?
        "steps": result.steps,
        "epochs_run": result.epochs_run,
        "train_targets_per_epoch": result.train_targets_per_epoch,
        "seconds_to_best": round(result.seconds_to_best, 1),
        "train_seconds": round(result.train_seconds, 1),
        "positions_per_second": round(result.positions_per_second, 1),
        "wall_seconds": round(wall_seconds + result.earlier_seconds, 1),  # a resumed run: every process
        "earlier_processes_seconds": round(result.earlier_seconds, 1),
        "peak_memory_mb": round(result.peak_memory_mb, 1),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        **precision_record(device, train_cfg.precision),
        "eval_precision": config["eval"]["precision"],
        "dataset_info": {k: v for k, v in ds.summary().items() if k != "preprocessing"},
        "item_vectors": vector_info,
        "config": config,
        "versions": package_versions(),
        "history": result.history,
    }


def print_outcome(outcome: LiteOutcome) -> None:
    record, out = outcome
    m = record["metrics"]
    print(
        f"lite-llm4rec ({record['variant']}) on {record['dataset']} ({record['protocol']}), "
        f"best step {record['best_step']}/{record['steps']}"
    )
    print("test  " + "  ".join(f"{k} {m[k]:.4f}" for k in ("Recall@10", "Recall@20", "NDCG@10", "NDCG@20") if k in m))
    print(f"wrote {out}/metrics.json")


COMMAND = Command(
    "lite",
    "Lite-LLM4Rec: Item-LLM vectors -> Recommendation LLM -> item projection head",
    LiteJob(),
    run_lite,
    print_outcome,
)
