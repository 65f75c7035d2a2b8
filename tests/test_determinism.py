"""Same seed, same numbers: stage 1 twice on a tiny random Llama; the CUDA determinism switch."""

from __future__ import annotations

import os

import torch
from stage1_helpers import clustered_items, quick_stage1_cfg, tiny_llama_dir, tiny_llm_cfg, user_sequences  # noqa: F401

from tslrec.core.artifacts import load_tensors, read_json, use_deterministic_kernels
from tslrec.stage1_reconstruct.training import train_stage1

TABLE, TRUTH = clustered_items(n_items=60, dim=8, k=4, seed=0)
SEQS = user_sequences(TRUTH, n_users=24, k=4, seed=0)


def saved_tensors(folder) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("heads.safetensors", "groups.safetensors", "adapter/adapter_model.safetensors"):
        out.update({f"{name}:{k}": v for k, v in load_tensors(folder / name).items()})
    return out


def test_stage1_twice_with_one_seed_gives_identical_results(tiny_llm_cfg, tmp_path):
    # bf16 autocast, LoRA dropout, k-means, the user split and a shuffled data order: every random draw seeded
    cfg = quick_stage1_cfg(epochs=1, batch_size=8, precision="bf16", lora_dropout=0.2, seed=3)
    runs = [
        train_stage1(TABLE, SEQS, tmp_path / f"run{i}", cfg, tiny_llm_cfg, device="cpu", progress=False)
        for i in range(2)
    ]
    assert runs[0]["metrics"] == runs[1]["metrics"] and runs[0]["steps"] == runs[1]["steps"] > 0
    assert read_json(tmp_path / "run0" / "log.json") == read_json(tmp_path / "run1" / "log.json")
    a, b = saved_tensors(tmp_path / "run0"), saved_tensors(tmp_path / "run1")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0]["timing"]["torch_threads"] == torch.get_num_threads()  # recorded: CPU numbers depend on it


def test_deterministic_kernels_on_cuda_only(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    use_deterministic_kernels(torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled()
    try:
        use_deterministic_kernels(torch.device("cuda"))  # sets flags only: no GPU is touched
        assert (
            torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
        )
        assert torch.backends.cudnn.benchmark is False
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own setting is kept
        use_deterministic_kernels(torch.device("cuda"), warn_only=True)
        assert (
            os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8" and torch.is_deterministic_algorithms_warn_only_enabled()
        )
    finally:
        torch.use_deterministic_algorithms(False)
