"""The bad-input catalogue: every case gives one line naming what is wrong and where, exit code 2,
and leaves no output that looks complete."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_atomic
from stage2_helpers import gate_train_argv

from tslrec.pipelines.cli import main

GOOD_ROWS = [(u, i, 5, t) for u in range(1, 7) for t, i in enumerate(range(u, u + 6))]


def good_dataset(tmp: Path) -> Path:
    return write_atomic(tmp / "good", GOOD_ROWS)


def train_dir(tmp: Path) -> Path:
    """A real `tslrec train` output on the hand-built dataset (a few epochs)."""
    out = tmp / "stage0"
    assert (
        main(
            [
                "train",
                "--dataset",
                str(good_dataset(tmp)),
                "--backbone",
                "gru4rec",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--out",
                str(out),
                "--export-item-embeddings",
                "--no-progress",
            ]
        )
        == 0
    )
    return out


def _file(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def case_missing_file(tmp):
    return ["data", "describe", str(tmp / "nope.inter")], "nope.inter"


def case_empty_file(tmp):
    return ["data", "describe", str(_file(tmp, "e.inter", ""))], "e.inter"


def case_missing_column(tmp):
    return ["data", "describe", str(_file(tmp, "c.inter", "user_id:token\trating:float\n1\t5\n"))], "item_id"


def case_nan_timestamp(tmp):
    text = "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t5\n1\t3\tnan\n"
    return ["data", "describe", str(_file(tmp, "t.inter", text))], "line 3, field 'timestamp' is 'nan'"


def case_inf_timestamp(tmp):
    text = "user_id:token\titem_id:token\ttimestamp:float\n1\t2\tinf\n1\t3\t4\n"
    return ["data", "describe", str(_file(tmp, "t.inter", text))], "line 2, field 'timestamp' is 'inf'"


def case_bad_timestamp(tmp):
    return [
        "data",
        "describe",
        str(_file(tmp, "t.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\tnoon\n")),
    ], "timestamp"


def case_ragged_row(tmp):
    return ["data", "describe", str(_file(tmp, "r.inter", "user_id:token\titem_id:token\n1\t2\n1\n"))], "line 3"


def case_too_few_items(tmp):
    return ["data", "describe", str(_file(tmp, "f.inter", "user_id:token\titem_id:token\n1\t2\n1\t3\n"))], "at least 3"


def case_unknown_dataset(tmp):
    return ["data", "describe", "ml-10b"], "ml-10b"


def case_unknown_file_type(tmp):
    return ["data", "describe", str(_file(tmp, "x.csv", "a,b\n"))], "x.csv"


def case_s3rec_user_without_items(tmp):
    return ["data", "describe", str(_file(tmp, "s.txt", "1 2 3\n4\n"))], "line 2"


def case_movielens_folder_without_ratings(tmp):
    (tmp / "ml").mkdir()
    return ["data", "describe", str(tmp / "ml")], "ratings.dat"


def case_min_rating_without_rating_column(tmp):
    p = write_atomic(
        tmp / "nr", [(1, 1, 1), (1, 2, 2), (1, 3, 3)], header="user_id:token\titem_id:token\ttimestamp:float"
    )
    return ["data", "describe", str(p), "--min-rating", "4"], "rating"


def case_unknown_backbone(tmp):
    return ["train", "--dataset", str(good_dataset(tmp)), "--backbone", "bert4rec", "--out", str(tmp / "o")], "bert4rec"


def case_max_len_too_short(tmp):
    return ["train", "--dataset", str(good_dataset(tmp)), "--max-len", "1", "--out", str(tmp / "o")], "--max-len"


def case_corrupt_checkpoint(tmp):
    out = tmp / "ck"
    _file(out, "checkpoint.pt", "this is not a checkpoint")
    return [
        "train",
        "--dataset",
        str(good_dataset(tmp)),
        "--epochs",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ], "checkpoint.pt"


def case_config_missing(tmp):
    return ["run", "--config", str(tmp / "none.yaml")], "none.yaml"


def case_config_bad_yaml(tmp):
    return ["run", "--config", str(_file(tmp, "b.yaml", "dataset: [ml-100k\n"))], "b.yaml"


def case_config_unknown_key(tmp):
    return ["run", "--config", str(_file(tmp, "u.yaml", "dataset: ml-100k\nepochs: 3\n"))], "epochs"


def case_config_unknown_stage_option(tmp):
    cfg = _file(tmp, "s.yaml", f"dataset: {good_dataset(tmp)}\nout: {tmp / 'run'}\nstages:\n  stage0:\n    layerz: 3\n")
    return ["run", "--config", str(cfg)], "stages.stage0: unknown key 'layerz'; did you mean layers"


def case_config_unknown_stage(tmp):
    return ["run", "--config", str(_file(tmp, "st.yaml", "dataset: ml-100k\nstages:\n  stage9: {}\n"))], "stage9"


def case_config_bad_override(tmp):
    return ["run", "--config", str(_file(tmp, "o.yaml", "dataset: ml-100k\n")), "--set", "seed"], "--set seed"


def case_select_metric_at_a_cut_off_never_computed(tmp):
    """NDCG@50 passed the name check, then raised KeyError after the first epoch: only K = 5, 10, 20 are computed."""
    argv = ["train", "--dataset", str(good_dataset(tmp)), "--out", str(tmp / "o"), "--select-metric", "NDCG@50"]
    return argv, "K one of 5, 10, 20"


def case_backbone_setting_the_backbone_does_not_read(tmp):
    """`--heads 4` on a GRU4Rec run trained GRU4Rec as if it were not given, and its record did not hold it."""
    argv = ["train", "--dataset", str(good_dataset(tmp)), "--out", str(tmp / "o"), "--backbone", "gru4rec"]
    return [*argv, "--heads", "4"], "--heads 4: read by SASRec only"


def case_grid_setting_no_backbone_of_it_reads(tmp):
    argv = ["ablate", "--dataset", str(good_dataset(tmp)), "--out", str(tmp / "o"), "--backbones", "gru4rec,sasrec"]
    return [*argv, "--caser-window", "5"], "--caser-window 5: read by Caser only"


def case_grid_heads_that_do_not_divide_hidden(tmp):
    """Refused before the grid's first cell, naming SASRec: the check is SASRec's, not every backbone's."""
    argv = ["ablate", "--dataset", str(good_dataset(tmp)), "--out", str(tmp / "o"), "--backbones", "gru4rec,sasrec"]
    return [*argv, "--hidden", "9"], "--heads 2: SASRec's heads must divide hidden=9"


def case_export_missing_manifest(tmp):
    (tmp / "emb").mkdir()
    return gate_train_argv(good_dataset(tmp), tmp / "emb", tmp / "o"), "manifest.json"


def _export(tmp: Path) -> tuple[Path, Path]:
    """A valid export for the hand-built dataset, and that dataset."""
    from tslrec.data import load_dataset
    from tslrec.formats.item_table import save_item_embeddings

    data = good_dataset(tmp)
    ds = load_dataset(str(data))
    folder = save_item_embeddings(tmp / "export", torch.randn(ds.num_items + 1, 8), ds.item_ids, ds.name, ds.hash)
    return folder, data


def case_export_given_to_a_fusion_that_reads_none(tmp):
    """Without --fusion the run was a plain ID run, written under the base folder name, with the table unread."""
    folder, data = _export(tmp)
    argv = gate_train_argv(data, folder, tmp / "o")
    del argv[3:5]  # no --fusion gate: the default, base
    return argv, "--item-embeddings: fusion 'base' does not read it here; use it with --fusion"


def case_export_truncated(tmp):
    folder, data = _export(tmp)
    f = folder / "item_embeddings.safetensors"
    f.write_bytes(f.read_bytes()[:40])
    return gate_train_argv(data, folder, tmp / "o"), "item_embeddings.safetensors"


def case_export_from_another_dataset(tmp):
    folder, _ = _export(tmp)
    other = write_atomic(tmp / "other", [(u, i, 5, t) for u in range(1, 7) for t, i in enumerate(range(u, u + 7))])
    return gate_train_argv(other, folder, tmp / "o"), str(folder)


def case_stage2_unfinished_stage1_folder(tmp):
    (tmp / "s1").mkdir()
    return ["stage2", "--stage1-dir", str(tmp / "s1"), "--out", str(tmp / "s2")], "s1"


def case_stage1_corrupt_item_table(tmp):
    run = train_dir(tmp)
    (run / "item_embeddings.safetensors").write_bytes(b"\x00" * 16)
    return [
        "stage1",
        "--train-dir",
        str(run),
        "--out",
        str(tmp / "s1"),
        "--llm",
        "smollm2",
    ], "item_embeddings.safetensors"


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_bad_input(case, tmp_path, capsys):
    argv, needle = case(tmp_path)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert needle in err, err
    assert "Traceback" not in err
    # nothing that looks complete was written
    assert not list(tmp_path.rglob("metrics.json")) or "stage0" in str(list(tmp_path.rglob("metrics.json"))[0])
    assert not list(tmp_path.rglob("stage_manifest.json"))


def test_every_no_flag_says_what_turning_it_off_does():
    """A `--no-x` flag's help describes what the flag does (it turns x off), not what x does."""
    from tslrec.core.settings import settings_of
    from tslrec.pipelines.cli import commands

    starts = ("do not ", "hide ", "skip ", "turn off ", "without ")
    offending = [
        f"{c.name} {s.flag}: {s.help}"
        for c in commands()
        for s in settings_of(c.defaults)
        if s.kind == "no-bool" and not s.help.lower().startswith(starts)
    ]
    assert offending == []


def test_outputs_get_the_users_umask_not_the_private_mode_of_temporary_files(tmp_path):
    """Written to a private temporary name, then renamed: the final file and folder get what the umask gives."""
    import os

    from tslrec.core.artifacts import atomic_folder, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
        with atomic_folder(tmp_path / "export") as folder:
            write_json(folder / "manifest.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "export").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "export" / "manifest.json").stat().st_mode & 0o777 == 0o644


def test_every_setting_with_choices_is_checked_by_its_config():
    """A setting's allowed values (a Literal annotation, or a registry such as the fusions) are checked where its
    config is made, by the Python API too, with one line naming Class.field and the values; a config file's key is
    checked against the same values (and the flag offers them: `Setting.choices`)."""
    import re

    from tslrec.core.errors import InputError
    from tslrec.core.settings import from_mapping, replace_nested, settings_of
    from tslrec.pipelines.cli import commands

    checked = 0
    for c in commands():
        for s in settings_of(c.defaults):
            if s.choices is None:
                continue
            allowed = re.escape(", ".join(map(str, s.choices)))
            with pytest.raises(InputError, match=rf"^{s.owner}\.{s.field}='bogus': use one of {allowed}$"):
                replace_nested(c.defaults, {s.path: "bogus"})
            with pytest.raises(InputError, match=rf"^c\.yaml: key '{s.key}' is 'bogus'; use one of {allowed}$"):
                from_mapping(c.defaults, {s.key: "bogus"}, "c.yaml")
            checked += 1
    assert checked >= 20
