"""bench/records.py: benchmarks running side by side add to one record file without losing each other's records."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from bench import records
from tslrec.core.errors import InputError

RECORD = {"dataset": "d", "model": "m", "variant": "v", "seed": 1, "device": "cpu", "metrics": {}, "timings": {}}


def _add_many(results: str, model: str, n: int) -> None:
    records.RESULTS = Path(results)
    for seed in range(n):
        records.add("shared", {**RECORD, "model": model, "seed": seed})


def test_concurrent_adds_keep_every_record(tmp_path, monkeypatch):
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_add_many, args=(str(tmp_path), model, 40)) for model in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
        assert w.exitcode == 0
    monkeypatch.setattr(records, "RESULTS", tmp_path)
    kept = records.load("shared")
    assert sorted((r["model"], r["seed"]) for r in kept) == [(m, s) for m in ("a", "b") for s in range(40)]


def test_add_replaces_the_same_key(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "RESULTS", tmp_path)
    records.add("r", {**RECORD, "metrics": {"HR@10": 0.1}})
    records.add("r", {**RECORD, "metrics": {"HR@10": 0.2}})
    assert [r["metrics"]["HR@10"] for r in records.load("r")] == [0.2]


def test_a_cell_trained_on_another_table_is_recorded_apart_and_keeps_its_code_commit(tmp_path, monkeypatch):
    """A campaign's rebuilt stages may hash differently: the same cell on another table gets a variant of its own,
    never averaged with the first; a record that names its code's commit keeps it."""
    from bench import ablation

    monkeypatch.setattr(records, "RESULTS", tmp_path)
    cell = {**RECORD, "dataset": "beauty", "model": "sasrec", "variant": "gate:tuned", "seed": 42}
    records.add("grid", {**cell, "item_table_sha256": "a" * 64, "clusters_sha256": None, "commit": "abc1234"})
    assert records.load("grid")[0]["commit"] == "abc1234"
    same = ablation.kept_apart("grid", {**cell, "item_table_sha256": "a" * 64, "clusters_sha256": None})
    other = ablation.kept_apart("grid", {**cell, "item_table_sha256": "b" * 64, "clusters_sha256": None})
    assert same["variant"] == "gate:tuned" and other["variant"] == "gate:tuned@bbbbbbbb"


def test_a_record_without_a_field_is_refused_when_written_and_when_read(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "RESULTS", tmp_path)
    with pytest.raises(InputError, match="field 'timings' is missing"):
        records.add("r", {k: v for k, v in RECORD.items() if k != "timings"})
    (tmp_path / "r.json").write_text('[{"dataset": "d", "model": "m", "variant": "v", "seed": "42"}]')
    with pytest.raises(InputError, match=r"r.json record 0: field 'seed' is str"):
        records.load("r")


def test_every_committed_record_has_the_record_fields():
    names = [p.stem for p in records.RESULTS.glob("*.json")]
    assert names and all(records.load(name) for name in names)


def test_a_restarted_backbone_benchmark_keeps_the_record_of_a_run_it_already_holds(tmp_path, monkeypatch):
    """bench/backbones.py reuses a finished run; its record keeps the commit and timings of the process that trained
    it instead of the restarted process's (which measured nothing of that training)."""
    from bench import backbones

    monkeypatch.setattr(records, "RESULTS", tmp_path / "results")
    data = tmp_path / "toy.txt"
    data.write_text("".join(f"{u} " + " ".join(str((u + t) % 9 + 1) for t in range(6)) + "\n" for u in range(1, 30)))
    argv = ["backbones", "--dataset", str(data), "--kcore", "0", "--max-len", "8", "--hidden", "8", "--epochs", "1"]
    argv += ["--backbones", "gru4rec", "--name", "toy", "--out", str(tmp_path / "runs"), "--no-progress"]
    for commit in ("aaaaaaa", "bbbbbbb"):
        monkeypatch.setattr(records, "COMMIT_AT_START", commit)
        monkeypatch.setattr("sys.argv", argv)
        backbones.main()
    [record] = records.load("toy")
    assert record["commit"] == "aaaaaaa"


def test_an_ablation_takes_its_reference_rows_only_from_grid_cells_trained_the_same_way(tmp_path, monkeypatch):
    """The input-item bias on Beauty trains only the bias rows; its base rows are the campaign's base cells, which
    must differ from it in nothing but the bias (a setting the cells predate reads as its default)."""
    from bench import report

    monkeypatch.setattr(records, "RESULTS", tmp_path)
    config = {
        "data": {"max_len": 50},
        "model": {"input_item_bias": True},
        "train": {"lr": 1e-3, "lr_schedule": "constant"},
        "eval": {},
    }
    run = {**RECORD, "model": "sasrec", "variant": "input-item-bias", "config": config}
    cell = {**run, "variant": "base", "timings": {"seconds_per_epoch": 60.0}}
    cell["config"] = {**config, "model": {"input_item_bias": False}, "train": {"lr": 1e-3}, "eval": {}}
    records.add("grid", cell)
    bias = ("input_item_bias",)
    assert [r["variant"] for r in report._grid_reference([run], "grid", "base", bias)] == ["base"]
    records.add("grid", {**cell, "config": {**cell["config"], "train": {"lr": 5e-3}}})
    with pytest.raises(ValueError, match="differ from input-item-bias in {'lr'}"):
        report._grid_reference([run], "grid", "base", bias)
    # a schedule candidate may differ from the base cells in its schedule, and they become its `default` rows
    candidate = {**run, "variant": "cosine", "config": {**cell["config"], "train": {"lr": 5e-3, "lr_cycle": 20}}}
    rows = report._grid_reference([candidate], "grid", "base", report.SCHEDULE, label="default")
    assert [r["variant"] for r in rows] == ["default"]


def test_a_convergence_screen_beside_a_campaign_reads_its_default_rows_from_the_base_cells(tmp_path, monkeypatch):
    """convergence-beauty trains only the candidate schedules; its `default` rows, and the test against them, are
    the campaign's base cells (ablation-beauty), for every seed; a run paused mid-epoch counts its median epoch."""
    from bench import report

    monkeypatch.setattr(records, "RESULTS", tmp_path)
    config = {"data": {"max_len": 50}, "model": {}, "train": {"lr": 1e-3}, "eval": {}}
    common = {"device": "cpu", "cpu_capability": "AVX2", "precision": "float32", "epochs": 40, "best_epoch": 30}
    for seed, ndcg in ((42, 0.040), (43, 0.041), (44, 0.042)):
        m = {"NDCG@10": ndcg}
        cell = {**RECORD, **common, "model": "sasrec", "variant": "base", "seed": seed, "config": config}
        cell |= {"metrics": m, "valid_metrics": m, "timings": {"seconds_per_epoch": 60.0, "wall_seconds": 2400.0}}
        records.add("ablation-beauty", cell)
        fast = {"lr": 5e-3, "lr_schedule": "cosine", "warmup_epochs": 2, "lr_cycle": 20}
        run = {**cell, "variant": "cosine-lr5e-3-w2-c20", "config": {**config, "train": fast}, "epochs": 20}
        paused = [{"train_seconds": 6000.0 if epoch == 5 else 60.0} for epoch in range(20)]  # stopped in epoch 6
        run |= {"wall_seconds": 7140.0, "seconds_per_epoch": 357.0, "history": paused}
        records.add("convergence-beauty", run)
    table = report.convergence_table("convergence-beauty")
    # training minutes: the epochs at the median epoch time, so the paused epoch does not count
    assert "| sasrec | default | 3 | 30.0 | 40.0 | 40.0 | AVX2 | 0.0410 ± 0.0010 | – |" in table
    assert "| sasrec | cosine-lr5e-3-w2-c20 | 3 | 30.0 | 20.0 | 20.0 | AVX2 | 0.0410 ± 0.0010 |" in table
    assert "3 of the 3 runs with per-epoch times had an epoch over 4× their median" in table
    assert "The `default` rows are the `base` cells of `ablation-beauty.json`" in table


def test_a_grid_reference_ignores_a_setting_the_backbone_does_not_read(tmp_path, monkeypatch):
    """Newer records leave out what a backbone does not read (FMLP-Rec has no attention heads): a grid cell that
    recorded `num_heads` is still the reference of a run that did not, and a setting it reads still binds."""
    from bench import report

    monkeypatch.setattr(records, "RESULTS", tmp_path)
    model = {"hidden": 64, "num_heads": 2, "attn_dropout": None}
    cell = {**RECORD, "model": "fmlprec", "variant": "base", "seed": 42, "timings": {"seconds_per_epoch": 1.0}}
    records.add("ablation-beauty", {**cell, "config": {"data": {}, "model": model, "train": {}, "eval": {}}})
    run = {**cell, "variant": "x", "config": {"data": {}, "model": {"hidden": 64}, "train": {}, "eval": {}}}
    assert [r["variant"] for r in report._grid_reference([run], "ablation-beauty", "base", ())] == ["base"]
    run["config"]["model"]["hidden"] = 32
    with pytest.raises(ValueError, match="hidden"):
        report._grid_reference([run], "ablation-beauty", "base", ())


def test_a_stage1_frontier_record_names_the_code_that_trained_it_and_what_it_changed(tmp_path, monkeypatch):
    """bench/stage1_prompts.py records finished runs later, from another commit: the record names the commit in the
    run's metrics.json, and (runs of a frontier differ in any settings) every setting off its default."""
    from bench import stage1_prompts
    from tslrec.core.artifacts import write_json

    monkeypatch.setattr(stage1_prompts, "stage1_training_speed", lambda s1, cfg: {})
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage2").mkdir()
    mse = {"mse": 2.0, "mse_mean_embedding": 1.0, "mse_ratio_to_mean_embedding": 2.0, "mse_global_mean": 3.0}
    timing = {"train_seconds": 60.0, "wall_seconds": 70.0, "train_tokens": 100, "torch_threads": 2}
    metrics = {"metrics": mse, "timing": timing, "steps": 5, "versions": {"tslrec_commit": "abc1234"}}
    write_json(tmp_path / "stage1" / "metrics.json", metrics)
    write_json(tmp_path / "stage1" / "config.json", {"stage1": {"lr": 2e-3, "seed": 42}, "llm": {}})
    agreement = {"C1": 0.3, "C2": 0.2, "chance_top1": 0.03}
    source = {"llm": "smollm2", "category_agreement": agreement, "extraction": {"seconds": 1.0}}
    write_json(tmp_path / "stage2" / "manifest.json", {"source": source})
    rec = stage1_prompts.record("ml-100k", "budget", "lr2e-3", tmp_path)
    assert rec["commit"] == "abc1234" and rec["settings_changed"]["stage1.lr"] == 2e-3
    assert "stage1.seed" not in rec["settings_changed"]


def test_the_readme_keeps_an_older_grids_row_until_the_newer_grid_has_its_llm_gate(tmp_path, monkeypatch):
    """A campaign's base cells finish hours before its gate cells: the older grid's row, which holds the answer,
    stands until the newer grid has that backbone's gate over the LLM table at 3 seeds (a verdict)."""
    from bench import report

    monkeypatch.setattr(records, "RESULTS", tmp_path)
    for variant, ndcg in (("base", 0.03), ("gate", 0.04)):
        records.add("ablation-x-h100", {**RECORD, "model": "caser", "variant": variant, "metrics": {"NDCG@10": ndcg}})
    records.add("ablation-x", {**RECORD, "model": "caser", "variant": "base", "metrics": {"NDCG@10": 0.025}})
    grids = ["ablation-x", "ablation-x-h100"]

    def datasets() -> list[str]:
        return [line.split(" | ")[0] for line in report.readme_table(grids).splitlines() if line.startswith("| x")]

    assert datasets() == ["| x-h100"]  # the newer base-only row waits (it is in docs/results.md)
    gate = {**RECORD, "model": "caser", "variant": "gate:tuned", "metrics": {"NDCG@10": 0.035}}
    records.add("ablation-x", gate)
    assert datasets() == ["| x-h100"]  # one seed of the gate: no verdict yet, the older row's stands
    for seed in (43, 44):
        records.add("ablation-x", {**gate, "seed": seed})
    assert datasets() == ["| x"]


def test_a_grid_row_says_whether_its_cells_share_one_setting():
    """The README's rows could average cells trained under other settings (a campaign over several commits) without
    saying so. A setting a record predates reads as its value then; the seed and the fusion differ by design."""
    from bench import report

    def cell(seed: int, fusion: str, train: dict, **model) -> dict:
        settings = {
            "model": "GRU4Rec",
            "backbone": "gru4rec",
            "TrainConfig": {"lr": 1e-3, "seed": seed, **train},
            "EvalConfig": {"ks": [5, 10, 20]},
            "DataConfig": {"max_len": 50},
            "BackboneConfig": {"hidden": 64, **model},
            "side_information": {"fusion": {"kind": fusion}},
        }
        return {**RECORD, "seed": seed, "settings": settings}

    older = cell(42, "base", {})  # recorded before lr_schedule existed
    runs = [older, cell(43, "gate", {"lr_schedule": "constant"}), cell(44, "ci", {}, num_heads=4)]  # heads: SASRec's
    assert report._settings_differ(runs) == []
    assert report._settings_differ([*runs, cell(45, "base", {"lr": 5e-3})]) == ["TrainConfig.lr"]
    assert report._settings_differ([*runs, cell(45, "base", {"lr_schedule": "cosine"})]) == ["TrainConfig.lr_schedule"]
    assert report._settings_differ([*runs, {**RECORD, "seed": 46}]) is None


def test_a_stage2_record_names_the_stage0_table_its_stage1_read(tmp_path):
    """A campaign whose run folder was lost rebuilds stage 0; nothing recorded the table the lost stage 1 read, so
    whether the rebuild came out the same could not be told."""
    from bench.ablation import add_stage1
    from tslrec.core.artifacts import write_json

    write_json(tmp_path / "metrics.json", {"metrics": {"mse": 0.5}, "steps": 3})
    write_json(tmp_path / "config.json", {"item_table_sha256": "ab" * 32})
    record: dict = {}
    add_stage1(record, tmp_path)
    assert record["stage1"]["item_table_sha256"] == "ab" * 32 and record["stage1"]["metrics"]["mse"] == 0.5


def test_the_tuned_and_untuned_exports_of_a_grid_are_two_records(tmp_path, monkeypatch):
    """A grid over `tuned` and `untuned` tables recorded one stage-2 record: the second replaced the first (same
    dataset, model, variant, seed and device)."""
    from bench.ablation import stage2_record
    from tslrec.core.artifacts import write_json

    monkeypatch.setattr(records, "RESULTS", tmp_path)
    timing = {"seconds": 1.0, "items": 10, "seconds_per_1000_items": 100.0, "batch_size": 4, "device": "cpu"}
    for label in ("tuned", "untuned"):
        write_json(tmp_path / label / "manifest.json", {"source": {"llm": "smollm2", "extraction": timing}})
        records.add("ablation-x", {**stage2_record(tmp_path / label, "x", label), "commit": "abc1234"})
    assert sorted(r["source"] for r in records.load("ablation-x")) == ["tuned", "untuned"]


def test_a_grid_whose_backbones_train_at_their_own_settings_says_each():
    """With --backbone-train the grid's setting line named only the first cell's learning rate and schedule."""
    from bench import report

    def cell(model: str, **train) -> dict:
        train = {"lr": 1e-3, "batch_size": 256, "windows": "fixed", "epochs": 200, "patience": 10, **train}
        data, config = {"kcore": 0, "max_len": 50}, {"model": {"hidden": 64}, "train": train, "eval": {}}
        return {"model": model, "config": {**config, "data": data}, "precision": "float32"}

    same = [cell("sasrec"), cell("gru4rec")]
    assert ";" not in report._grid_settings(same) and "lr 0.001," in report._grid_settings(same)
    cosine = {"lr": 5e-3, "lr_schedule": "cosine", "lr_cycle": 35, "warmup_epochs": 2}
    text = report._grid_settings([cell("sasrec"), cell("gru4rec", **cosine)])
    assert text.startswith("gru4rec: kcore 0, max_len 50, hidden 64, lr 0.005, cosine over 35 epochs after 2 of warm")
    assert "; sasrec: kcore 0, max_len 50, hidden 64, lr 0.001, batch" in text
