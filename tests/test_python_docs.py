"""docs/python.md: its examples run, in order, in an empty folder. The same code, on a small dataset with titles and
tiny models of the same kinds instead of ML-100K, SmolLM2 and MiniLM, so the suite stays fast; the real models are
exercised in test_real_llm.py."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from lite_helpers import lite_llama_dir, tiny_bert_dir, write_text_dataset  # noqa: F401

DOC = Path(__file__).resolve().parent.parent / "docs" / "python.md"


def test_python_docs_examples_run(tmp_path, monkeypatch, capsys, lite_llama_dir, tiny_bert_dir):
    data = write_text_dataset(tmp_path / "data", n_items=30, n_users=40)
    swaps = {
        '"ml-100k"': f'"{data}"',
        '"smollm2"': f'"{lite_llama_dir}"',
        '"minilm"': f'"{tiny_bert_dir}"',
        "k=32": "k=4",
        '"1,2"': '"u1,u2"',
    }
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TSLREC_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    namespace: dict = {}
    try:
        for block in blocks:
            for old, new in swaps.items():
                block = block.replace(old, new)
            exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert re.search(r"runs/ml-100k/stage2 \(31, \d+\)", printed) and "runs/ml-100k/stage0 (31, 64)" in printed
    assert (tmp_path / "runs/ml-100k/lite/metrics.json").is_file() and "u1 [" in printed
