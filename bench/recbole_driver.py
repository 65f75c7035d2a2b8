"""RecBole 1.2.1 SASRec, timed epoch by epoch; runs inside the RecBole venv, started by bench/time_to_quality.py.

    bench/.recbole-venv/bin/python bench/recbole_driver.py SPEC.json RESULT.json
SPEC.json (written by time_to_quality.py): variant ("recbole-as-shipped" | "recbole-anomaly-off"), data_path
(the folder holding ml-1m/ml-1m.inter), dataset, config (RecBole settings over its defaults), target,
max_seconds, threads. The driver builds RecBole's Config, dataset, model and Trainer itself (not
`run_recbole`) so that it can time every epoch and stop as soon as validation NDCG@10 reaches the target.
RESULT.json is rewritten after every epoch (so a killed run still leaves its history) and once at the end,
with the test metrics of the model that stopped (at the target) or of the best validation epoch.
RecBole's own checkpoints are never written or read: the best weights stay in memory, so no `torch.load`
(whose `weights_only=True` default in torch >= 2.6 refuses RecBole's pickled checkpoints) is involved.
This file imports only RecBole and the standard library, never tslrec.
"""

from __future__ import annotations

import copy
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec  # importing this package imports sine.py
from recbole.trainer import Trainer
from recbole.utils import init_seed

ANOMALY_ON_IMPORT = torch.is_anomaly_enabled()  # True: recbole/model/sequential_recommender/sine.py switched it on
METRIC_NAMES = {"hit@10": "HR@10", "ndcg@10": "NDCG@10"}


def apply_variant(variant: str) -> None:
    """recbole-as-shipped leaves autograd anomaly detection as RecBole's import left it; anomaly-off disables it."""
    if variant == "recbole-anomaly-off":
        torch.autograd.set_detect_anomaly(False)
    elif variant != "recbole-as-shipped":
        raise SystemExit(f"unknown variant {variant!r}: use recbole-as-shipped or recbole-anomaly-off")


def renamed(result: dict[str, float]) -> dict[str, float]:
    """RecBole's metric keys (hit@10, ndcg@10) as ours (HR@10, NDCG@10)."""
    return {METRIC_NAMES.get(k, k): round(float(v), 6) for k, v in result.items()}


def plain_config(config: Config) -> dict[str, Any]:
    """RecBole's final config as JSON types (torch devices, enums and the like as strings)."""
    return json.loads(json.dumps(dict(config.final_config_dict), default=str))


def write_result(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)


class EpochLoop:
    """Train/validate epoch by epoch like `Trainer.fit`, but timed, stopping at the target or the time cap."""

    def __init__(self, trainer: Trainer, spec: dict[str, Any], out: Path, result: dict[str, Any]) -> None:
        self.trainer = trainer
        self.spec = spec
        self.out = out
        self.result = result
        self.best_score = float("-inf")
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.best_valid: dict[str, float] = {}
        self.last_valid: dict[str, float] = {}
        self.bad_epochs = 0
        self.elapsed = 0.0

    def run(self, train_data: Any, valid_data: Any) -> str:
        """Epochs until the target, early stopping, the epoch budget or max_seconds; returns why it stopped."""
        self.trainer.eval_collector.data_collect(train_data)
        for epoch in range(self.trainer.epochs):
            score, valid = self.epoch(epoch, train_data, valid_data)
            if score >= self.spec["target"]:
                return "target"
            if self.improved(score, valid):
                self.bad_epochs = 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs > self.trainer.stopping_step:  # RecBole's early_stopping rule
                    return "early_stopping"
            if self.spec.get("max_seconds") and self.elapsed >= self.spec["max_seconds"]:
                return "max_seconds"
        return "epochs"

    def epoch(self, epoch: int, train_data: Any, valid_data: Any) -> tuple[float, dict[str, float]]:
        t0 = time.perf_counter()
        loss = self.trainer._train_epoch(train_data, epoch, show_progress=False)
        t1 = time.perf_counter()
        score, valid = self.trainer._valid_epoch(valid_data, show_progress=False)
        t2 = time.perf_counter()
        self.elapsed += t2 - t0
        entry = {
            "epoch": epoch + 1,
            "loss": float(sum(loss) if isinstance(loss, tuple) else loss),
            "valid_NDCG@10": float(score),
            "valid_HR@10": float(valid.get("hit@10", float("nan"))),
            "train_seconds": t1 - t0,
            "valid_seconds": t2 - t1,
            "elapsed_seconds": self.elapsed,
        }
        self.result["history"].append(entry)
        write_result(self.out, self.result)
        print(
            f"[{self.spec['variant']}] epoch {epoch + 1}: loss {entry['loss']:.4f}  valid NDCG@10 {score:.4f}  "
            f"train {t1 - t0:.1f}s  valid {t2 - t1:.1f}s  elapsed {self.elapsed:.1f}s",
            flush=True,
        )
        self.last_valid = renamed(valid)
        return float(score), self.last_valid

    def improved(self, score: float, valid: dict[str, float]) -> bool:
        if score < self.best_score:
            return False
        self.best_score, self.best_valid = score, valid
        self.best_weights = copy.deepcopy(self.trainer.model.state_dict())
        return True


def build(spec: dict[str, Any]) -> tuple[Config, Trainer, tuple[Any, Any, Any], dict[str, int]]:
    """RecBole's config, trainer, the train/valid/test loaders (as `run_recbole` builds them) and data counts."""
    config = Config(model="SASRec", dataset=spec["dataset"], config_dict=spec["config"])
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data.dataset).to(config["device"])
    counts = {
        "users": dataset.user_num - 1,  # RecBole counts its [PAD] token
        "items": dataset.item_num - 1,
        "interactions": dataset.inter_num,
        "train_examples": len(train_data.dataset),  # one per training position (RecBole's data augmentation)
    }
    return config, Trainer(config, model), (train_data, valid_data, test_data), counts


def main() -> None:
    spec_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    sys.argv = sys.argv[:1]  # RecBole's Config parses the command line too
    warnings.filterwarnings("ignore", category=FutureWarning)  # pandas and torch.cuda.amp deprecations in RecBole
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(int(spec["threads"]))
    apply_variant(spec["variant"])
    t0 = time.perf_counter()
    config, trainer, (train_data, valid_data, test_data), counts = build(spec)
    result: dict[str, Any] = {
        "variant": spec["variant"],
        "anomaly_detection_after_import": ANOMALY_ON_IMPORT,
        "anomaly_detection_in_training": torch.is_anomaly_enabled(),
        "setup_seconds": time.perf_counter() - t0,
        "threads": torch.get_num_threads(),
        "dataset_info": counts,
        "config": plain_config(config),
        "versions": {"torch": torch.__version__},
        "history": [],
        "status": "running",
    }
    write_result(out, result)
    loop = EpochLoop(trainer, spec, out, result)
    stop = loop.run(train_data, valid_data)
    stopped_at_target = stop == "target"
    if not stopped_at_target and loop.best_weights is not None:
        trainer.model.load_state_dict(loop.best_weights)  # the best validation epoch, kept in memory
    t_test = time.perf_counter()
    test = renamed(trainer.evaluate(test_data, load_best_model=False, show_progress=False))
    result.update(
        status="finished",
        stop_reason=stop,
        stopped_at_target=stopped_at_target,
        test_metrics=test,
        valid_metrics=loop.last_valid if stopped_at_target else loop.best_valid,
        test_seconds=time.perf_counter() - t_test,
    )
    write_result(out, result)
    print(f"[{spec['variant']}] stopped ({stop}); test {test}", flush=True)


if __name__ == "__main__":
    main()
