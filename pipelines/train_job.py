"""`tslrec train`: train and evaluate one backbone on one dataset; write metrics, weights and the item table."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from tslrec.backbones.base import BackboneConfig
from tslrec.backbones.item_embedding import FUSIONS, fusion_class
from tslrec.backbones.registry import BACKBONES, build_backbone, require_read_by, settings_read_by
from tslrec.backbones.training import TrainConfig, TrainResult, run_settings, train
from tslrec.core.artifacts import (
    load_tensors,
    package_versions,
    read_json,
    save_tensors,
    use_deterministic_kernels,
    write_json,
)
from tslrec.core.errors import InputError
from tslrec.core.precision import precision_record, resolved
from tslrec.core.run_settings import RunSettings
from tslrec.core.settings import check_allowed, setting
from tslrec.data import DATASET_HELP, DataConfig, SequenceDataset, load_dataset
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.evaluation.ranking import EvalConfig
from tslrec.formats.item_table import write_export_files

from .history import epoch_line, note_at_cap, write_history
from .options import Command, TrainingRuntime, force_field, record_head, training_runtime
from .side_information import SideInfoConfig, SideInformation, load_side_information, one_item_table, reads_item_table


@dataclass
class BackboneSettings:
    """What a backbone trains with; `tslrec ablate` shares these with every cell of its grid."""

    side: SideInfoConfig = field(default_factory=SideInfoConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: TrainingRuntime = field(default_factory=TrainingRuntime)


@dataclass
class TrainJob(BackboneSettings):
    """Everything `tslrec train` needs: one backbone, one fusion, one seed."""

    dataset: str = setting("", DATASET_HELP, required=True)
    backbone: str = setting("sasrec", "the sequential recommender", choices=BACKBONES)
    fusion: str = setting(
        "base",
        "item representation: base (IDs), ci (IDs + k-means group), gate (TSLRec), or another ablation",
        choices=FUSIONS,
    )
    out: str | None = setting(None, "output folder (default runs/<dataset>-<backbone>[-<fusion>]-s<seed>)")
    export_item_embeddings: bool = setting(
        False,
        (
            "also write item_embeddings.safetensors ([N+1, H], row 0 = padding) for stage 1; a finished run "
            "given this flag later writes it from its saved model without training again"
        ),
    )
    force: bool = force_field()

    def __post_init__(self) -> None:
        check_allowed(self)
        require_read_by(self.model, [BACKBONES[self.backbone].__name__])
        self.runtime = training_runtime(self.runtime)


@dataclass
class TrainOutcome:
    """A finished `tslrec train`: its metrics.json record and where it was written."""

    record: dict
    out: Path


def tensor_sha256(t: torch.Tensor | None) -> str | None:
    """Content hash of a tensor (dtype, shape and values), or None."""
    if t is None:
        return None
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def side_information_fingerprint(side: SideInformation) -> dict:
    """The fusion and the content of the files it reads (not their paths): what a checkpoint is tied to."""
    return {
        "fusion": asdict(side.fusion),
        "llm_table_sha256": tensor_sha256(side.llm_table),
        "clusters_sha256": tensor_sha256(side.clusters),
    }


def run_record(
    job: TrainJob,
    ds: SequenceDataset,
    model_cfg: BackboneConfig,
    variant: str,
    result: TrainResult,
    device: torch.device,
    wall_seconds: float,
) -> dict:
    """The metrics.json / benchmark record of one training run."""
    backbone, train_cfg = job.backbone, job.train
    return {
        **record_head(ds.name, backbone, variant, train_cfg.seed, result.test, result.valid),
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        "seconds_per_epoch": round(result.seconds_per_epoch, 2),
        "seconds_to_best": round(result.seconds_to_best, 1),
        "wall_seconds": round(wall_seconds + result.earlier_seconds, 1),  # a resumed run: every process
        "earlier_processes_seconds": round(result.earlier_seconds, 1),
        "peak_memory_mb": round(result.peak_memory_mb, 1),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        **precision_record(device, train_cfg.precision),
        "eval_precision": job.eval.precision,
        "dataset_info": {k: v for k, v in ds.summary().items() if k != "preprocessing"},
        "config": {
            "data": asdict(job.data),
            "model": settings_read_by(asdict(model_cfg), [BACKBONES[backbone].__name__]),  # what the model read
            "train": asdict(train_cfg),
            "eval": asdict(job.eval),
        },
        "versions": package_versions(),
        "history": result.history,
    }


def side_information_of(job: TrainJob, ds: SequenceDataset) -> SideInformation:
    """The item table and groups `job`'s fusion reads, loaded and checked against `ds`; a file given to a fusion
    that reads none (a forgotten --fusion) is an InputError, not a silent ID-only run."""
    label, item_table = one_item_table(job.side.item_embeddings)
    kind = fusion_class(job.fusion)
    given = {"item_embeddings": item_table, "clusters": job.side.clusters}
    read = {"item_embeddings": reads_item_table(kind, job.side.clusters is not None), "clusters": kind.reads_clusters}
    for name in (n for n in given if given[n] is not None and not read[n]):
        readers = [
            f for f, c in FUSIONS.items() if c.reads_clusters or (name == "item_embeddings" and c.reads_llm_table)
        ]
        raise InputError(
            f"SideInfoConfig.{name}: fusion '{job.fusion}' does not read it here; use it with --fusion "
            f"{' or '.join(readers)}, or leave it out"
        )
    return load_side_information(job.fusion, ds, item_table, job.side.clusters, job.side.finetune_llm_table, label)


def run_facts(job: TrainJob, ds: SequenceDataset, side: SideInformation) -> dict:
    """What a run is tied to besides its model, train and eval configs: the dataset, its preprocessing, the backbone
    and the contents of the side information it read."""
    return {
        "dataset": {"name": ds.name, "hash": ds.hash},
        "DataConfig": asdict(job.data),
        "backbone": job.backbone,
        "side_information": side_information_fingerprint(side),
    }


def tied_settings(job: TrainJob, ds: SequenceDataset) -> RunSettings:
    """The settings a run of `job` would be tied to (resolved: no `auto` precision), as `train_backbone` records
    them, without training: to tell whether a run recorded elsewhere is this one."""
    side = side_information_of(job, ds)
    model_cfg = replace(job.model, num_items=ds.num_items, max_len=job.data.max_len)
    with torch.random.fork_rng():  # the caller's random numbers stay as they were
        model = build_backbone(job.backbone, model_cfg, side.fusion, side.llm_table, side.clusters)
    return run_settings(model, job.train, job.eval, run_facts(job, ds, side))


def train_backbone(job: TrainJob) -> TrainOutcome:
    """Train and evaluate `job`'s backbone; write metrics.json, weights, per-user metrics (and the item table)."""
    start = time.perf_counter()
    ds = load_dataset(job.dataset, job.data)
    side = side_information_of(job, ds)
    variant = "" if side.variant == "base" else f"-{side.variant.replace(':', '-')}"
    out = Path(job.out or f"runs/{ds.name}-{job.backbone}{variant}-s{job.train.seed}")
    out.mkdir(parents=True, exist_ok=True)
    device = job.runtime.start()
    job = resolved(job, device)  # what `auto` precision is on this device: recorded, and a resume must match it
    use_deterministic_kernels(device)
    model_cfg = replace(job.model, num_items=ds.num_items, max_len=job.data.max_len)
    torch.manual_seed(job.train.seed)
    model = build_backbone(job.backbone, model_cfg, side.fusion, side.llm_table, side.clusters)
    splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, job.data.max_len)
    ckpt = out / "checkpoint.pt"
    settings = run_facts(job, ds, side)  # with the train/model/eval configs
    current = run_settings(model, job.train, job.eval, settings)
    finished = _finished_run(out, current, job)
    if finished is not None:
        if job.export_item_embeddings and not (out / "manifest.json").is_file():  # asked for after training
            model.load_state_dict(load_tensors(out / "model.safetensors", "trained model"))
            export_item_table(out, model, ds, job.backbone)
        return finished
    metric = job.train.select_metric
    result = train(
        model,
        splits,
        job.train,
        device,
        job.eval,
        checkpoint=ckpt,
        progress=job.runtime.progress,
        settings=settings,
        force=job.force,
        on_epoch=None if job.runtime.progress else lambda e, best: print(epoch_line(out.name, e, metric, best)),
    )
    write_history(out, result.history, "epoch", job.runtime.log_with)
    save_tensors(out / "model.safetensors", model.state_dict())
    save_tensors(out / "per_user_test.safetensors", result.test.per_user)
    if job.export_item_embeddings:
        export_item_table(out, model, ds, job.backbone)
    record = run_record(job, ds, model_cfg, side.variant, result, device, time.perf_counter() - start)
    record["side_information"] = side.record()
    record["settings"] = current.values  # what a re-run into this folder is compared with
    record["dataset_source"] = str(Path(job.dataset).resolve()) if Path(job.dataset).exists() else job.dataset
    # the cap is --epochs: a cosine cycle that ends sooner is a chosen length, and its last epoch is usually its best
    record["best_at_cap"] = result.best_epoch >= job.train.epochs
    note_at_cap(str(out), result.best_epoch, job.train.epochs, "epoch", "--epochs")
    write_json(out / "metrics.json", record)  # written last: its presence means the run is complete
    ckpt.unlink(missing_ok=True)
    return TrainOutcome(record, out)


def export_item_table(out: Path, model: torch.nn.Module, ds: SequenceDataset, backbone: str) -> None:
    """Write the model's item table [N+1, H] (row 0 = padding) into <out> in the export format (TRAIN_TABLE, the
    id map and manifest.json): stage 1 reads it, and so does `load_item_embeddings`, like any stage-2 export."""
    table = model.item_embedding.table().detach().float()  # [N+1, H]
    source = {"producer": "tslrec train", "model": f"{backbone} (its own item table, no LLM)", "llm": None}
    write_export_files(out, table, ds.item_ids, ds.name, ds.hash, source=source)


def _finished_run(out: Path, current: RunSettings, job: TrainJob) -> TrainOutcome | None:
    """The finished run in `out` if it was trained with these settings (its item table may still be missing: the
    caller exports it from the saved model); InputError naming the first changed setting if it was trained with
    others (unless job.force); None when there is nothing finished to reuse."""
    path = out / "metrics.json"
    outputs = ("metrics.json", "model.safetensors", "per_user_test.safetensors")
    if job.force or not all((out / name).is_file() for name in outputs):
        return None  # a folder missing any of its outputs is trained again
    record = read_json(path, "`tslrec train` metrics")
    current.refuse(path, record.get("settings"), "finished run")
    return TrainOutcome(record, out)


def print_outcome(outcome: TrainOutcome) -> None:
    record, out = outcome.record, outcome.out
    m = record["metrics"]
    print(
        f"{record['model']} on {record['dataset']} ({record['protocol']}), "
        f"best epoch {record['best_epoch']}/{record['epochs']}"
    )
    print(
        "test  "
        + "  ".join(
            f"{k} {m[k]:.4f}" for k in ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@10") if k in m
        )
    )
    print(f"wrote {out}/metrics.json")


COMMAND = Command(
    "train",
    "train and evaluate a backbone on item IDs (stage 0) or with stage-2 LLM embeddings (--fusion)",
    TrainJob(),
    train_backbone,
    print_outcome,
)
